"""Every file of pydicom's bundled test corpus through read, de-identify and write."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.dataset import Dataset

from deid.dicom import profile_table
from deid.dicom.profile import deidentify
from deid.dicom.reader import read_dicom, read_for_profile
from deid.dicom.writer import output_relpath, write_dicom
from deid.errors import DeidError
from deid.keys import DeidKey
from deid.settings import Limits, ProfileSettings

KEY = DeidKey(b"corpus-key-0123456789abcdef")
# Pixel redaction "configured" so that SC/OT/US files are de-identified rather than refused.
SETTINGS = ProfileSettings(pixel_redaction=True)
PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _corpus() -> list[str]:
    # get_testdata_files lists only files present locally: those in urls.json need a download.
    return sorted(path for path in get_testdata_files() if os.path.isfile(path))


CORPUS = _corpus()


def _identifying(ds: Dataset) -> set[tuple[int, str]]:
    """(tag, value) of non-empty attributes the Basic Profile removes, empties or dummies, at any depth."""
    found: set[tuple[int, str]] = set()
    for elem in ds.iterall():
        if elem.VR == "SQ" or elem.tag.is_private:
            continue
        row = profile_table.BY_TAG.get(int(elem.tag))
        if row is None or not set(row.basic.split("/")) & {"X", "Z", "D"} or "U*" in row.basic:
            continue
        value = elem.value
        if value is None or value == "" or value == b"":
            continue
        found.add((int(elem.tag), str(value)))
    return found


def test_corpus_is_present() -> None:
    assert len(CORPUS) >= 50


@pytest.mark.parametrize("path", CORPUS, ids=[Path(p).name for p in CORPUS])
def test_corpus_file(path: str) -> None:
    data = Path(path).read_bytes()
    try:
        original = read_dicom(data, Limits())
        result = deidentify(original, SETTINGS, KEY)
    except DeidError as exc:
        assert str(exc), "a refusal must say why"
        assert exc.error_kind != "unexpected_error"
        return
    out_bytes = write_dicom(result.dataset)
    # The pipeline's reader drops private elements unparsed: same output, same counts.
    fast_ds, stripped = read_for_profile(data, Limits(), SETTINGS)
    fast = deidentify(fast_ds, SETTINGS, KEY, stripped)
    assert write_dicom(fast.dataset) == out_bytes
    assert fast.actions == result.actions
    again = pydicom.dcmread(io.BytesIO(out_bytes))
    assert output_relpath(again).startswith("dicom/2.25.")
    survivors = _identifying(original) & _identifying(again)
    assert not survivors, [f"({t >> 16:04X},{t & 0xFFFF:04X})" for t, _ in survivors]
    assert not [elem for elem in again.iterall() if elem.tag.is_private]
    assert again.PatientIdentityRemoved == "YES"
    for keyword in PIXEL_TAGS:
        if keyword in original:
            assert again[keyword].value == original[keyword].value
    assert again.file_meta.TransferSyntaxUID == original.file_meta.get(
        "TransferSyntaxUID", again.file_meta.TransferSyntaxUID
    )
    # The output passes the engine's own strict reader.
    read_dicom(out_bytes, Limits())


def test_known_files_are_deidentified() -> None:
    """Files that must not be refused: a refusal here is a regression, not a reason."""
    names = ("CT_small.dcm", "MR_small.dcm", "test-SR.dcm", "rtplan.dcm", "examples_ybr_color.dcm",
             "SC_rgb_rle_2frame.dcm", "image_dfl.dcm", "examples_overlay.dcm", "waveform_ecg.dcm")
    by_name = {Path(p).name: p for p in CORPUS}
    for name in names:
        if name not in by_name:
            continue
        result = deidentify(read_dicom(Path(by_name[name]).read_bytes(), Limits()), SETTINGS, KEY)
        write_dicom(result.dataset)


def test_known_damaged_files_are_refused() -> None:
    by_name = {Path(p).name: p for p in CORPUS}
    for name in ("MR_truncated.dcm", "rtplan_truncated.dcm"):
        if name in by_name:
            with pytest.raises(DeidError, match="malformed|truncated"):
                read_dicom(Path(by_name[name]).read_bytes(), Limits())
