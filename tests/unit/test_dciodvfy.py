"""De-identified outputs stay valid instances: dciodvfy finds no error the input did not have."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from pydicom.data import get_testdata_files
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from deid.dicom.profile import deidentify
from deid.dicom.reader import read_dicom
from deid.dicom.writer import write_dicom
from deid.errors import DeidError
from deid.keys import DeidKey
from deid.settings import Limits, ProfileSettings
from tests.support import dicom_factory as f

pytestmark = [
    pytest.mark.needs_tool,
    pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) is not on PATH"),
]

KEY = DeidKey(b"dciodvfy-key-0123456789abcdef")
SAMPLE = (
    "CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "test-SR.dcm", "reportsi.dcm", "rtplan.dcm",
    "rtstruct.dcm", "rtdose.dcm", "examples_overlay.dcm", "examples_ybr_color.dcm", "examples_rgb_color.dcm",
    "SC_rgb_rle_2frame.dcm", "waveform_ecg.dcm", "liver_1frame.dcm", "JPEG2000.dcm",
)
# image_dfl.dcm (deflated) is left out: dciodvfy cannot read any deflated file pydicom writes, even an
# unchanged re-save, so its errors say nothing about the profile.
SETTINGS = {
    "basic": ProfileSettings(pixel_redaction=True),
    "options": ProfileSettings(
        pixel_redaction=True, retain_long_modified_dates=True, clean_descriptors=True, clean_graphics=True,
        retain_patient_chars=True, retain_device_id=True,
    ),
}


def _errors(path: Path) -> set[str]:
    """dciodvfy's error lines with values, UIDs and item indices normalised away."""
    result = subprocess.run(["dciodvfy", "-new", str(path)], capture_output=True, text=True, timeout=120)
    out: set[str] = set()
    for line in (result.stdout + result.stderr).splitlines():
        if not line.startswith("Error -"):
            continue
        line = re.sub(r"<[^<>]*>(?=\s*$)", "<>", line)
        line = re.sub(r"=\s*<[^<>]*>", "=<>", line)
        line = re.sub(r"\[\d+\]", "[]", line)
        line = re.sub(r"\d+(\.\d+){2,}", "UID", line)
        out.add(line)
    return out


def _check(tmp_path: Path, name: str, data: bytes, settings: ProfileSettings) -> None:
    try:
        result = deidentify(read_dicom(data, Limits()), settings, KEY)
    except DeidError:
        pytest.skip(f"{name} is refused by the engine (covered by the corpus test)")
    source = tmp_path / "in.dcm"
    target = tmp_path / "out.dcm"
    source.write_bytes(data)
    target.write_bytes(write_dicom(result.dataset))
    new = _errors(target) - _errors(source)
    assert not new, f"{name}: errors dciodvfy finds only in the output: {sorted(new)}"


CORPUS = {Path(p).name: p for p in get_testdata_files() if os.path.isfile(p)}


@pytest.mark.parametrize("mode", sorted(SETTINGS))
@pytest.mark.parametrize("name", [n for n in SAMPLE if n in CORPUS] or ["none"])
def test_corpus_outputs_add_no_iod_errors(tmp_path: Path, name: str, mode: str) -> None:
    if name == "none":
        pytest.skip("pydicom's test files are not available")
    _check(tmp_path, name, Path(CORPUS[name]).read_bytes(), SETTINGS[mode])


def _presentation_state() -> Dataset:
    ds = f.instance()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.11.1"
    return ds


def _issue12_classes() -> Dataset:
    """A CT carrying the attribute classes of issue 12: the ethics committee pair (Type 1C name), an
    X/Z/U* reference, a D code sequence, D binary values and standard attributes the table omits."""
    ds = f.instance(2, 1)
    ds.ClinicalTrialSponsorName = "ZQX PHARMA"
    ds.ClinicalTrialProtocolID = "ZQX-PROTO-1"
    ds.ClinicalTrialProtocolName = "ZQX trial"
    ds.ClinicalTrialSiteID = "SITE9"
    ds.ClinicalTrialSiteName = "ZQX SITE"
    ds.ClinicalTrialSubjectID = "SUBJ77"
    ds.ClinicalTrialProtocolEthicsCommitteeName = "ZQX Ethics Board"
    ds.ClinicalTrialProtocolEthicsCommitteeApprovalNumber = "IRB-2024-991"
    ref = Dataset()
    ref.ReferencedSOPClassUID = ds.SOPClassUID
    ref.ReferencedSOPInstanceUID = f.instance_uid(1, 2)
    ds.ReferencedImageSequence = Sequence([ref])
    code = Dataset()
    code.CodeValue = "ZQX4455EMP"
    code.CodingSchemeDesignator = "ZQXCORP"
    code.CodeMeaning = "Quintessa Zarblewick"
    operator = Dataset()
    operator.PersonIdentificationCodeSequence = Sequence([code])
    ds.OperatorIdentificationSequence = Sequence([operator])
    ds.WindowCenterWidthExplanation = "LUNG DOE"
    ds.ContentDescription = "Follow-up for Mrs Quintessa Zarblewick 2023-11-04"
    return ds


@pytest.mark.parametrize("mode", sorted(SETTINGS))
@pytest.mark.parametrize(
    "build",
    [lambda: f.instance(1, 1), lambda: f.instance(2, 2), lambda: f.ultrasound("NO"), _issue12_classes],
    ids=["ct-series1", "ct-series2-references", "us", "ct-issue12-classes"],
)
def test_synthetic_outputs_add_no_iod_errors(tmp_path: Path, build: object, mode: str) -> None:
    assert callable(build)
    ds = build()
    _check(tmp_path, "synthetic", f.to_bytes(ds), SETTINGS[mode])


def test_error_normalisation_hides_values() -> None:
    line = "Error - </X(0008,1155)> - Illegal root for UID = <9.8.7.6>"
    path = Path("/nonexistent")
    assert "9.8.7.6" not in re.sub(r"=\s*<[^<>]*>", "=<>", line)
    assert not path.exists()
