"""scan_encoded_dicom (the recipe's leak check, which does not parse what it just wrote) finds exactly
the hits of scan_output on the written bytes, over the leak fixtures and pydicom's test files."""

from __future__ import annotations

import io
import warnings

import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from deid.dicom.writer import write_dicom
from deid.verify.harvest import harvest_dicom, harvest_path
from deid.verify.scan import scan_output
from deid.verify.scan_encoded import _written_pieces, scan_encoded_dicom
from deid.verify.values import LeakHit, PhiValue
from tests.support.phi_fixtures import ALL_PHI, phi_dataset

RELPATH = "dicom/2.25.1/2.25.2/2.25.3.dcm"


def _same_hits(ds: Dataset, values: object, relpath: str = RELPATH) -> list[LeakHit]:
    """Write `ds` as the recipe does, scan both ways, and require the same hits."""
    payload = write_dicom(ds)
    expected = scan_output(payload, relpath, values)  # type: ignore[arg-type]
    found = scan_encoded_dicom(ds, payload, relpath, values)  # type: ignore[arg-type]

    def key(hit: LeakHit) -> tuple[str, str, str, bool]:
        return hit.output, hit.value_kind, hit.location, hit.name_leaks

    assert sorted(map(key, found)) == sorted(map(key, expected))
    return found


def _fixture_values(ds: Dataset) -> list[object]:
    """Everything the fixture's leak tests search for: the harvest, the raw PHI strings, a short
    value only the structured search can find, and the file name."""
    return [
        *harvest_dicom(ds),
        *(PhiValue(text, "phi") for text in ALL_PHI),
        PhiValue("ALPHA", "PatientName"),
        *harvest_path("/in/ZQXNAME_ALPHA_1.dcm", "/in"),
    ]


@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian]
)
def test_the_leak_fixture_gives_the_same_hits_in_every_transfer_syntax(syntax: str) -> None:
    ds = phi_dataset()
    ds.file_meta.TransferSyntaxUID = syntax
    hits = _same_hits(ds, _fixture_values(ds))
    assert {"PatientName", "PatientID", "phi"} <= {k for h in hits for k in h.value_kind.split("/")}
    assert any(h.location.startswith("dicom(0010,1002)[0]>") for h in hits)  # at depth
    assert any(h.location.startswith("dicom:meta") for h in hits)  # in the file meta
    if syntax != ImplicitVRLittleEndian:  # implicit VR: the private element sends it to the re-parse
        assert _written_pieces(ds, RELPATH) is not None


def test_the_fixture_named_after_the_patient_and_a_clean_copy() -> None:
    ds = phi_dataset()
    hits = _same_hits(ds, _fixture_values(ds), "dicom/ZQXNAME_ALPHA/2.25.2/2.25.3.dcm")
    assert any(h.location == "relpath" and h.name_leaks for h in hits)
    values = _fixture_values(ds)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "StudyDate", "SeriesDate", "AccessionNumber",
                    "InstitutionName", "ReferringPhysicianName", "OperatorsName", "StationName", "ImageComments",
                    "OtherPatientIDsSequence"):
        delattr(ds, keyword)
    del ds[0x00111001]
    ds.PatientName = "KQ7ZP2M4XW9HTRVA"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "2.25.3"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "2.25.1", "2.25.2"
    assert _same_hits(ds, values) == []


def test_the_recipe_takes_the_fast_path_for_an_ordinary_instance() -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for _ in ds.iterall():
        pass
    _same_hits(ds, _fixture_values(ds))
    assert _written_pieces(ds, RELPATH) is not None


def _short_value_dataset(charset: str | None, name: str, syntax: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = "2.25.77"
    ds.file_meta.TransferSyntaxUID = syntax
    if charset:
        ds.SpecificCharacterSet = charset.split("\\") if "\\" in charset else charset
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "2.25.77"
    ds.PatientID = "QX7Z1"
    ds.InstitutionName = name.split("=")[0].replace("^", " ")
    ds.Rows = 2
    item = Dataset()
    item.PatientName = name
    item.PatientComments = f"seen by {name}"
    ds.OtherPatientIDsSequence = [item]
    return ds


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian])
@pytest.mark.parametrize(
    ("charset", "name"),
    [
        (None, "Qzor^Vex"),
        ("ISO_IR 100", "Müller^Zoë"),
        ("ISO_IR 192", "Åqzør^Vëx"),
        ("\\ISO 2022 IR 87", "Yamada^Tarou=山田太郎^花"),
        ("ISO_IR 144", "Иванов^Пётр"),
    ],
    ids=["default", "latin1", "utf8", "iso2022", "cyrillic"],
)
def test_every_character_set_gives_the_same_hits(syntax: str, charset: str | None, name: str) -> None:
    ds = _short_value_dataset(charset, name, syntax)
    family = name.split("=")[-1].split("^")[0]
    values = [PhiValue("QX7Z1", "PatientID"), PhiValue(family, "name"), PhiValue(name, "full")]
    hits = _same_hits(ds, values)
    assert ("PatientID", "dicom(0010,0020)") in {(h.value_kind, h.location) for h in hits}
    assert any(h.location == "dicom(0010,1002)[0]>(0010,0010)" for h in hits)


def _long_lo(ds: Dataset) -> None:
    ds.StudyDescription = "y" * 70_000 + " ZQXNAME"  # over 64 KiB in a 2-byte length VR: written as UN


def _long_ut(ds: Dataset) -> None:
    ds.add_new(0x00400280, "ST", "z" * 1000 + " MRN-ZQX-4242")
    ds.add_new(0x00081080, "LO", ["ZQXDOCTOR", "x" * 10, "ALPHA"])
    ds.add_new(0x0018A003, "UT", "u" * 70_000 + " ZQXNAME^ALPHA")  # UT has a 4-byte length


def _un(ds: Dataset) -> None:
    ds.add_new(0x00111002, "UN", b"ZQXNAME^ALPHA in a UN value")


def _latin1(ds: Dataset) -> None:
    ds.StationName = "Zoë ZQX-STATION-9"  # not ASCII, and encoded by the default character set


def _unencodable(ds: Dataset) -> None:
    ds.StationName = "山 ZQX-STATION-9"  # not in the default character set: the writer replaces it


def _not_ascii_code(ds: Dataset) -> None:
    ds.add_new(0x00181030, "LO", "ZQX protocol")
    ds.add_new(0x00080100, "SH", "ZQXCODE")
    ds.BodyPartExamined = "ZQXÉ"  # a CS value is written in the default encoding, whatever the set


def _odd_bytes(ds: Dataset) -> None:
    ds.add_new(0x00420011, "OB", b"ZQXNAME ALPHA in an odd-length OB value")


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(
    ("change", "mirrored"),
    [
        (_long_lo, False),
        (_long_ut, True),
        (_un, False),
        (_latin1, True),
        (_unencodable, False),
        (_not_ascii_code, False),
        (_odd_bytes, True),
    ],
    ids=["long-LO", "long-UT", "UN", "latin-1", "unencodable", "not-ASCII-CS", "odd-OB"],
)
def test_values_the_writer_changes_are_mirrored_or_parsed_with_the_same_hits(
    change: object, mirrored: bool
) -> None:
    ds = phi_dataset()
    change(ds)  # type: ignore[operator]
    assert (_written_pieces(ds, RELPATH) is not None) == mirrored
    assert _same_hits(ds, _fixture_values(ds))


def test_a_sequence_item_with_its_own_character_set() -> None:
    ds = _short_value_dataset("ISO_IR 100", "Müller^Zoë", ExplicitVRLittleEndian)
    ds.OtherPatientIDsSequence[0].SpecificCharacterSet = "ISO_IR 192"
    _same_hits(ds, [PhiValue("Müller", "name"), PhiValue("QX7Z1", "PatientID")])


def test_pydicoms_test_files_give_the_same_hits() -> None:
    """Every file pydicom ships that writes as a Part 10 file, searched for all of its own texts."""
    compared = mirrored = 0
    for path in get_testdata_files("*"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(path, force=True)
                for _ in ds.iterall():
                    pass
                if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}) or "SOPInstanceUID" not in ds:
                    continue
                write_dicom(ds)
            except Exception:  # noqa: BLE001 - files pydicom cannot write are not the point here
                continue
            values: list[object] = [*harvest_dicom(ds)]
            for elem in ds.iterall():
                if isinstance(elem.value, str) and len(elem.value.strip()) >= 4:
                    values.append(PhiValue(elem.value.strip(), "own"))
            _same_hits(ds, values)
        compared += 1
        mirrored += _written_pieces(ds, RELPATH) is not None
    assert compared >= 100
    assert mirrored >= compared - 5  # nearly all of them without the re-parse


def test_bytes_that_are_not_the_encoding_of_the_dataset_are_parsed() -> None:
    ds = phi_dataset()
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=False)  # no preamble: not what write_dicom makes
    values = _fixture_values(ds)
    assert scan_encoded_dicom(ds, buffer.getvalue(), RELPATH, values) == scan_output(buffer.getvalue(), RELPATH, values)
