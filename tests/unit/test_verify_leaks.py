"""The pure leak scanner: harvesting, matching rules, false-positive rules, no values in hits."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from deid.settings import ProfileSettings
from deid.verify.harvest import harvest_dicom, harvest_path, harvest_text, harvest_tiff_metadata
from deid.verify.scan import quarantine_relpath, scan_bytes, scan_output, summarize
from deid.verify.tiffwalk import iter_text_tags
from deid.verify.values import LeakHit, PhiValue, is_meaningful
from tests.support.phi_fixtures import (
    PATIENT_ID,
    PATIENT_NAME,
    SLIDE_BARCODE,
    SLIDE_FILENAME,
    STUDY_DATE,
    phi_dataset,
    phi_dicom_bytes,
    write_phi_svs,
)

PHI_DIRECT = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "StudyDate",
    "AccessionNumber",
    "InstitutionName",
    "ReferringPhysicianName",
    "OperatorsName",
    "StationName",
    "ImageComments",
)


def _scrubbed(ds: Dataset) -> bytes:
    """What a de-identifier might write: PHI removed, new UIDs, its own 'YES' and method text."""
    for keyword in (*PHI_DIRECT, "SeriesDate", "OtherPatientIDsSequence"):
        if keyword in ds:
            delattr(ds, keyword)
    del ds[0x00111001]
    ds.PatientName = "KQ7ZP2M4XW9HTRVA"
    ds.PatientID = "KQ7ZP2M4XW9HTRVB"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "Basic Application Confidentiality Profile"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "2.25." + "20230911" + "1952031712345"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _kinds(hits: list[LeakHit]) -> set[str]:
    return {kind for h in hits for kind in h.value_kind.split("/")}


def test_harvest_dicom_covers_names_ids_dates_sequences_private_and_uids() -> None:
    values = harvest_dicom(phi_dataset())
    kinds = {v.kind for v in values}
    assert {"PatientName", "PatientID", "PatientBirthDate", "StudyDate", "AccessionNumber"} <= kinds
    assert {"SOPInstanceUID", "StudyInstanceUID", "private"} <= kinds
    texts = {v.text for v in values}
    assert PATIENT_NAME in texts and "ZQXNAME" in texts and "ZQXNAME ALPHA" in texts
    assert "MRN-ZQX-OLD-77" in texts  # nested OtherPatientIDsSequence
    assert "2023-09-11" in texts and "09/11/2023" in texts  # other date spellings
    assert "ZQX VENDOR" not in texts  # private creator strings name a vendor
    assert "F" not in texts and "CT" not in texts  # short values never count


def test_harvest_respects_profile_options_and_keep() -> None:
    ds = phi_dataset()
    default = {v.kind for v in harvest_dicom(ds)}
    assert "StudyDate" in default and "SOPInstanceUID" in default and "StationName" in default
    retained = {
        v.kind
        for v in harvest_dicom(
            ds,
            ProfileSettings(
                retain_long_full_dates=True, retain_uids=True, retain_device_id=True, keep=("AccessionNumber",)
            ),
        )
    }
    assert "StudyDate" not in retained and "SOPInstanceUID" not in retained
    assert "StationName" not in retained and "AccessionNumber" not in retained
    assert "PatientName" in retained
    shifted = {v.kind for v in harvest_dicom(ds, ProfileSettings(retain_long_modified_dates=True))}
    assert "StudyDate" in shifted  # shifted dates must not equal the originals


def test_original_dicom_leaks_everywhere_and_scrubbed_copy_is_clean() -> None:
    data = phi_dicom_bytes()
    values = harvest_dicom(pydicom.dcmread(io.BytesIO(data)))
    hits = scan_output(data, "dicom/1/2/3.dcm", values)
    assert {"PatientName", "PatientID", "StudyDate", "private", "SOPInstanceUID"} <= _kinds(hits)
    assert any(h.location.startswith("dicom(0010,1002)[0]>") for h in hits)  # found at depth
    assert any(h.location.startswith("dicom:meta") for h in hits)  # found in the file meta
    clean = _scrubbed(pydicom.dcmread(io.BytesIO(data)))
    assert scan_output(clean, "dicom/2.25.1/2.25.2/2.25.3.dcm", values) == []


def test_hits_never_carry_the_value() -> None:
    data = phi_dicom_bytes()
    values = harvest_dicom(pydicom.dcmread(io.BytesIO(data))) | harvest_path("/in/ZQXNAME_ALPHA.dcm", "/in")
    hits = scan_output(data, "dicom/ZQXNAME_ALPHA.dcm", values)
    text = " ".join(h.describe() for h in hits) + repr(hits) + summarize(hits) + repr(sorted(values, key=repr))
    assert "ZQX" not in text.upper() and "4242" not in text and STUDY_DATE not in text
    assert any(h.location == "relpath" for h in hits)


@pytest.mark.parametrize("encoding", ["ascii", "utf-8", "utf-16-le", "utf-16-be", "latin-1"])
@pytest.mark.parametrize("spelling", [PATIENT_NAME, PATIENT_NAME.lower(), "Zqxname Alpha"])
def test_raw_bytes_found_in_every_encoding_and_case(encoding: str, spelling: str) -> None:
    values = [PhiValue(PATIENT_NAME, "PatientName"), *harvest_dicom(phi_dataset())]
    blob = os.urandom(5000) + f"..{spelling}..".encode(encoding) + os.urandom(5000)
    assert "PatientName" in _kinds(scan_bytes(blob, values))


def test_short_values_need_token_boundaries_and_digits_need_digit_boundaries() -> None:
    values = [PhiValue("ALPHA", "PatientName"), PhiValue("20230911", "StudyDate")]
    assert _kinds(scan_bytes(b"name: ALPHA^X", values)) == {"PatientName"}
    assert scan_bytes(b"ALPHABET soup", values) == []
    assert scan_bytes(b"2.25.12023091134", values) == []  # inside a random UID: not a date
    assert _kinds(scan_bytes(b"date 20230911 ok", values)) == {"StudyDate"}


def test_generic_and_short_values_are_not_meaningful() -> None:
    generic = ("YES", "NO", "M", "F", "ANONYMOUS", "1234", "0000", "XXXX", "1.2.840.10008.5.1.4.1.1.2", "  ")
    for text in (*generic, "19000101"):
        assert not is_meaningful(text), text
    for text in ("ZQXNAME", "MRN-ZQX-4242", "20230911", "123456"):
        assert is_meaningful(text), text


def test_deidentifier_vocabulary_does_not_collide() -> None:
    ds = phi_dataset()
    ds.PatientIdentityRemoved = "YES"
    ds.BurnedInAnnotation = "NO"
    ds.PatientName = "ANONYMOUS"
    values = harvest_dicom(ds)
    assert all(v.text.upper() not in {"YES", "NO", "ANONYMOUS"} for v in values)


def test_harvest_path_keeps_meaningful_tokens_only() -> None:
    values = {v.text for v in harvest_path("/data/input/studies/DOE_JANE_MRN123456/img_0001.dcm", "/data/input")}
    assert {"DOE_JANE_MRN123456", "JANE", "MRN123456", "img_0001"} <= values
    assert not values & {"DOE", "dcm", "studies", "input", "data", "img", "0001"}
    lowercase = {v.text for v in harvest_path("/in/ZQX1_truncated_notes.dcm", "/in")}
    assert "ZQX1_truncated_notes" in lowercase and not lowercase & {"truncated", "notes"}
    assert {v.text for v in harvest_path("gs://b/x/ZQXNAME_ALPHA_2.dcm")} >= {"ZQXNAME", "ALPHA", "ZQXNAME_ALPHA_2"}


def test_harvest_text_of_ocr_output() -> None:
    values = {v.text for v in harvest_text("S-24-ZQX001\nZQXNAME, ALPHA\n 03/17/1952")}
    assert {"S-24-ZQX001", "ZQXNAME", "ALPHA", "03/17/1952"} <= values


def test_tiff_metadata_harvest_and_appended_description_leak(tmp_path: Path) -> None:
    slide = write_phi_svs(tmp_path / "in.svs")
    values = harvest_tiff_metadata(slide)
    texts = {v.text for v in values}
    assert {SLIDE_FILENAME, SLIDE_BARCODE, "2023-09-11"} <= texts
    assert not any("AppMag" in v.kind or "MPP" in v.kind for v in values)
    hits = scan_output(slide, "wsi/KQ7ZP2M4XW9HTRVA.svs", values)
    assert any(h.location.startswith("tiff:ifd0:ImageDescription") for h in hits)
    # A clean TIFF, then a PHI string appended to its description.
    import numpy as np
    import tifffile

    clean = tmp_path / "clean.tiff"
    tifffile.imwrite(clean, np.zeros((64, 64, 3), np.uint8), description="Aperio Image Library|AppMag = 20")
    assert scan_output(clean, "wsi/KQ7ZP2M4XW9HTRVA.tiff", values) == []
    dirty = tmp_path / "dirty.tiff"
    tifffile.imwrite(dirty, np.zeros((64, 64, 3), np.uint8), description=f"Aperio|AppMag = 20|x = {SLIDE_BARCODE}")
    assert "tiff:ImageDescription:Barcode" in _kinds(scan_output(dirty, "wsi/x.tiff", values))


def test_tiff_walker_visits_subifds_and_xmp(tmp_path: Path) -> None:
    import numpy as np
    import tifffile

    path = tmp_path / "sub.tiff"
    with tifffile.TiffWriter(path) as tif:
        tif.write(np.zeros((64, 64), np.uint8), subifds=1, extratags=[(700, 1, None, b"<x>ZQXNAME ALPHA</x>", True)])
        tif.write(np.zeros((32, 32), np.uint8), description=f"level {PATIENT_ID}")
    items = list(iter_text_tags(path))
    assert any(i.tag == 700 for i in items)
    assert any(i.tag == 270 and PATIENT_ID.encode() in i.data for i in items)
    hits = scan_output(path, "wsi/x.tiff", [PhiValue(PATIENT_ID, "PatientID"), PhiValue("ZQXNAME", "PatientName")])
    assert {"PatientID", "PatientName"} <= _kinds(hits)
    assert any("XMP" in h.location for h in hits)


def test_unparseable_dicom_output_is_unverifiable() -> None:
    hits = scan_output(b"\x00" * 128 + b"DICM" + b"\xff" * 50, "dicom/a/b/c.dcm", [PhiValue("ZQXNAME", "PatientName")])
    assert _kinds(hits) == {"unverifiable"}


def test_quarantine_relpath_never_reuses_the_name() -> None:
    path = quarantine_relpath("ab" * 32, "wsi/ZQXNAME_ALPHA.svs")
    assert path == f"quarantine/{'ab' * 32}/0.svs"
    assert quarantine_relpath("cd" * 32, "dicom/x/y/z", 2) == f"quarantine/{'cd' * 32}/2.bin"


def test_large_zero_and_random_data_scan_quickly() -> None:
    import time

    values = harvest_dicom(phi_dataset())
    start = time.monotonic()
    assert scan_output(bytes(32 * 1024 * 1024), "wsi/x.tiff", values) == []
    assert scan_output(os.urandom(32 * 1024 * 1024), "wsi/x.tiff", values) == []
    assert time.monotonic() - start < 20


def test_one_word_lowercase_names_are_descriptive_but_names_with_capitals_are_not() -> None:
    from deid.verify.harvest import harvest_path

    plain = {v.text for v in harvest_path("/in/misc/truncated.dcm", "/in")}
    assert "truncated" not in plain and "misc" not in plain
    assert "truncated.dcm" in plain  # the whole name, extension and all, still counts
    named = {v.text for v in harvest_path("/in/slides/DOE_JANE_slide.svs", "/in")}
    assert {"DOE_JANE_slide", "JANE"} <= named  # (3-letter tokens are too short to search for)


def _short_value_dataset(charset: str | None, name: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = "2.25.77"
    if charset:
        ds.SpecificCharacterSet = charset.split("\\") if "\\" in charset else charset
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "2.25.77"
    ds.PatientID = "QX7Z1"  # too short for the raw byte rule: only the structured scan finds it
    ds.Rows = 2
    item = Dataset()
    item.PatientName = name
    ds.OtherPatientIDsSequence = [item]
    return ds


@pytest.mark.parametrize(
    "syntax", [pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.ImplicitVRLittleEndian, pydicom.uid.ExplicitVRBigEndian]
)
@pytest.mark.parametrize(
    ("charset", "name"),
    [(None, "Qzor^Vex"), ("ISO_IR 192", "Åqzør^Vëx"), ("\\ISO 2022 IR 87", "Yamada^Tarou=山田太郎^花")],
    ids=["default", "utf8", "iso2022"],
)
def test_structured_scan_finds_short_values_in_every_encoding(syntax: str, charset: str | None, name: str) -> None:
    ds = _short_value_dataset(charset, name)
    ds.file_meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    family = name.split("=")[-1].split("^")[0]
    hits = scan_output(buffer.getvalue(), "dicom/x.dcm", [PhiValue("QX7Z1", "PatientID"), PhiValue(family, "name")])
    locations = {(h.value_kind, h.location) for h in hits}
    assert ("PatientID", "dicom(0010,0020)") in locations
    assert ("name", "dicom(0010,1002)[0]>(0010,0010)") in locations
