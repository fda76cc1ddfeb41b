"""The DICOM engine on synthetic datasets: every action code, every option, errors and consistency."""

from __future__ import annotations

import importlib.util
import io
import re
import struct
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from deid.dicom import profile_table
from deid.dicom import reader as deidentify_module
from deid.dicom.iod_types import attribute_type
from deid.dicom.profile import DicomResult, deidentify
from deid.dicom.reader import read_dicom, read_for_profile
from deid.dicom.writer import mark_pixel_data_cleaned, output_relpath, write_dicom
from deid.errors import (
    BurnedInAnnotationError,
    DeidError,
    InputTooLargeError,
    InvalidInputError,
    ProfileError,
)
from deid.keys import DeidKey
from deid.settings import Limits, ProfileSettings
from deid.verify.harvest import harvest_dicom, harvest_private_texts
from tests.support import dicom_factory as f
from tests.support.env import REPO_ROOT, SHARED_DATA

REPO = REPO_ROOT
SHARED = SHARED_DATA
STANDARD_JSON = SHARED / "dicom-standard" / "confidentiality_profile_attributes.json"
KEY = DeidKey(b"0123456789abcdef0123456789abcdef")
OTHER_KEY = DeidKey(b"fedcba9876543210fedcba9876543210")
BASIC = ProfileSettings()


def run(ds: Dataset, settings: ProfileSettings = BASIC, key: DeidKey = KEY) -> DicomResult:
    return deidentify(ds, settings, key)


def roundtrip(ds: Dataset, settings: ProfileSettings = BASIC, key: DeidKey = KEY) -> tuple[DicomResult, Dataset]:
    result = run(read_dicom(f.to_bytes(ds), Limits()), settings, key)
    return result, pydicom.dcmread(io.BytesIO(write_dicom(result.dataset)))


def leaks(ds: Dataset, values: list[str]) -> list[str]:
    text = "\x00".join(f.all_strings(ds)).upper()
    return [v for v in values if v.upper() in text]


# ------------------------------------------------------------------------------------ generated table


def test_table_covers_the_standard() -> None:
    assert profile_table.ROW_COUNT == 621
    assert len(profile_table.BY_TAG) + len(profile_table.MASKED) + 1 == 621
    assert profile_table.BY_TAG[0x00100010].basic == "Z"
    assert profile_table.BY_TAG[0x00080018].basic == "U"
    assert profile_table.BY_TAG[0x00080018].option("uids") == "K"
    masks = {value: row.name for _, value, row in profile_table.MASKED}
    assert masks == {0x50000000: "Curve Data", 0x60003000: "Overlay Data", 0x60004000: "Overlay Comments"}
    assert profile_table.PRIVATE.option("safe_private") == "C"


@pytest.mark.skipif(not STANDARD_JSON.exists(), reason="../shared/data/dicom-standard is not present")
def test_regenerating_the_table_is_byte_identical(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_profile_table", REPO / "scripts" / "gen_profile_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    target = tmp_path / "profile_table.py"
    assert module.main(["gen", str(STANDARD_JSON), str(target)]) == 0
    committed = (REPO / "deid" / "dicom" / "profile_table.py").read_bytes()
    assert target.read_bytes() == committed


# ------------------------------------------------------------------------------------- action codes


def test_basic_profile_actions_on_one_instance() -> None:
    result, out = roundtrip(f.instance())
    assert out.PatientName == ""  # Z
    assert out.AccessionNumber == ""  # Z
    assert out.StudyDate == ""  # Z
    assert "InstitutionName" not in out  # X/Z/D, Type 3 in CT: X
    assert "InstitutionAddress" not in out  # X
    assert "ImageComments" not in out  # X
    assert "OperatorsName" not in out  # X/Z/D -> X
    assert "SeriesDate" not in out  # X/D -> X
    assert out.ContentDate == ""  # Z/D, Type 2 in CT: Z
    assert out.ContrastBolusAgent == ""  # Z/D, Type 2: Z
    assert out.Manufacturer == "ACME"  # not in the table: K
    assert out.PatientID == KEY.pseudonym("patient_id", f.PHI["PatientID"])
    assert out.SOPInstanceUID == KEY.uid(f.instance_uid(1, 1))  # U
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.PatientIdentityRemoved == "YES"
    assert [item.CodeValue for item in out.DeidentificationMethodCodeSequence] == ["113100"]
    assert out.LongitudinalTemporalInformationModified == "REMOVED"
    assert "SourceApplicationEntityTitle" not in out.file_meta
    assert result.actions["removed"] > 0 and result.actions["emptied"] > 0
    assert result.patient_id_map == ((f.PHI["PatientID"], out.PatientID),)
    assert not leaks(out, list(f.PHI.values()))


def test_dummy_values_fit_their_vr() -> None:
    ds = f.instance()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT: content date and serial are Type 1
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    _, out = roundtrip(ds)
    assert out.ContentDate == "19000101"  # Z/D on a Type 1 attribute: D
    assert out.ContentTime == "000000"
    assert out.AcquisitionDateTime == "19000101000000"  # X/Z/D Type 1: D
    assert re.fullmatch(r"[A-Z2-9]{16}", out.DeviceSerialNumber)  # LO identifier: pseudonym
    assert out.DeviceSerialNumber != f.PHI["DeviceSerialNumber"]


def test_nested_person_name_is_dummied_consistently() -> None:
    _, out = roundtrip(f.instance(2, 1))
    observer = out.VerifyingObserverSequence[0]
    assert str(observer.VerifyingObserverName) == KEY.pseudonym("pn", f.PHI["NestedName"])
    assert observer.VerificationDateTime == "19000101000000"


def test_other_patient_ids_sequence_is_removed() -> None:
    _, out = roundtrip(f.instance())
    assert "OtherPatientIDsSequence" not in out


@pytest.mark.parametrize(
    ("code", "typ", "expected"),
    [
        ("Z/D", 2, "Z"), ("Z/D", 1, "D"), ("Z/D", None, "D"),
        ("X/Z", 3, "X"), ("X/Z", 2, "Z"), ("X/Z", None, "Z"),
        ("X/D", 3, "X"), ("X/D", 1, "D"), ("X/D", None, "D"),
        ("X/Z/D", 3, "X"), ("X/Z/D", 2, "Z"), ("X/Z/D", 1, "D"), ("X/Z/D", None, "D"),
        ("X/Z/U*", 3, "X"), ("X/Z/U*", 2, "Z"), ("X/Z/U*", 1, "U"), ("X/Z/U*", None, "U"),
        ("K", None, "K"), ("U", 3, "U"),
    ],
)
def test_combined_codes_choose_by_type(code: str, typ: int | None, expected: str) -> None:
    from deid.dicom.policy import _combined

    assert _combined(code, typ) == expected


def test_iod_type_table() -> None:
    ct, sr, wsi = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.77.1.6"
    assert attribute_type(ct, 0x00080023, nested=False) == 2
    assert attribute_type(sr, 0x00080023, nested=False) == 1
    assert attribute_type(wsi, 0x00181000, nested=False) == 1
    assert attribute_type(ct, 0x00080080, nested=False) == 3
    assert attribute_type(ct, 0x00080023, nested=True) is None
    assert attribute_type("1.2.3.4", 0x00080023, nested=False) is None


def test_unknown_iod_keeps_combined_attributes_present() -> None:
    ds = f.instance()
    ds.SOPClassUID = "1.2.826.0.1.3680043.9.7777.99"  # a private SOP class
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    _, out = roundtrip(ds)
    assert out.SOPClassUID == ds.SOPClassUID  # class UIDs are never remapped
    assert out.InstitutionName not in ("", f.PHI["InstitutionName"])  # X/Z/D unknown type: D
    assert out.AcquisitionDateTime == "19000101000000"


def test_presentation_state_keeps_required_dates() -> None:
    ds = f.instance()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.11.1"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.PresentationCreationDate = "20240301"
    ds.PresentationCreationTime = "120000"
    ds.ContentCreatorName = "SMITH^ANNA"
    _, out = roundtrip(ds)
    assert out.PresentationCreationDate == "19000101"  # X on a Type 1 attribute would be invalid: D
    assert out.ContentCreatorName == ""  # Z/D, Type 2


# --------------------------------------------------------------------------------------------- UIDs


def test_uids_are_consistent_across_files_and_runs() -> None:
    first = [run(ds) for ds in f.study()]
    again = [run(ds) for ds in f.study()]
    other = [run(ds, key=OTHER_KEY) for ds in f.study()]
    studies = {r.dataset.StudyInstanceUID for r in first}
    assert len(studies) == 1
    assert studies == {r.dataset.StudyInstanceUID for r in again}
    assert studies.isdisjoint({r.dataset.StudyInstanceUID for r in other})
    series = {r.dataset.SeriesInstanceUID for r in first}
    assert series == {KEY.uid(f.series_uid(1)), KEY.uid(f.series_uid(2))}
    assert len({r.dataset.SOPInstanceUID for r in first}) == 4
    assert all(r.dataset.FrameOfReferenceUID == KEY.uid(f.FRAME_OF_REFERENCE_UID) for r in first)
    assert [r.dataset.SOPInstanceUID for r in first] == [r.dataset.SOPInstanceUID for r in again]
    assert all(uid.startswith("2.25.") and len(uid) <= 64 for r in first for _, uid in r.uid_map)


def test_references_in_nested_sequences_are_remapped() -> None:
    results = [run(ds) for ds in f.study()]
    by_old = {f.instance_uid(s, n): r.dataset.SOPInstanceUID for r, (s, n) in
              zip(results, [(1, 1), (1, 2), (2, 1), (2, 2)], strict=True)}
    second = results[2].dataset
    # X/Z/U*: kept with its UIDs remapped whatever the type (Type 3 in CT), as in an unknown IOD.
    assert second.SourceImageSequence[0].ReferencedSOPInstanceUID == by_old[f.instance_uid(1, 1)]
    unknown = f.instance(2, 1)
    unknown.SOPClassUID = unknown.file_meta.MediaStorageSOPClassUID = "1.2.826.0.1.3680043.9.7777.99"
    source = run(unknown).dataset.SourceImageSequence[0]  # unknown IOD: U, kept and remapped
    assert source.ReferencedSOPInstanceUID == by_old[f.instance_uid(1, 1)]
    assert str(source.ReferencedSOPClassUID) == pydicom.uid.CTImageStorage
    evidence = second.ReferencedImageEvidenceSequence[0]
    assert evidence.StudyInstanceUID == results[0].dataset.StudyInstanceUID
    series_item = evidence.ReferencedSeriesSequence[0]
    assert series_item.SeriesInstanceUID == results[0].dataset.SeriesInstanceUID
    assert series_item.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == by_old[f.instance_uid(1, 1)]
    assert (f.instance_uid(1, 1), by_old[f.instance_uid(1, 1)]) in results[2].uid_map


def test_retain_uids_keeps_them() -> None:
    settings = ProfileSettings(retain_uids=True)
    _, out = roundtrip(f.instance(2, 1), settings)
    assert out.SOPInstanceUID == f.instance_uid(2, 1)
    assert out.SourceImageSequence[0].ReferencedSOPInstanceUID == f.instance_uid(1, 1)
    assert "113110" in [item.CodeValue for item in out.DeidentificationMethodCodeSequence]


def test_output_relpath_uses_new_uids() -> None:
    result = run(f.instance())
    ds = result.dataset
    assert output_relpath(ds) == f"dicom/{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
    assert f.ROOT not in output_relpath(ds)


# -------------------------------------------------------------------------------------------- dates


def test_modified_dates_shift_consistently_per_patient() -> None:
    settings = ProfileSettings(retain_long_modified_dates=True)
    results = [run(ds, settings) for ds in f.study()]
    shift = KEY.date_shift_days(f.PHI["PatientID"])
    import datetime as dt

    expected = (dt.date(2024, 3, 15) - dt.timedelta(days=shift)).strftime("%Y%m%d")
    for result in results:
        out = result.dataset
        assert out.StudyDate == expected
        assert out.ContentDate == expected
        assert out.AcquisitionDateTime == expected + "101500.000000"
        assert out.StudyTime == "101010"  # a whole-day shift keeps the time of day
        assert out.LongitudinalTemporalInformationModified == "MODIFIED"
        assert result.actions["dates_shifted"] >= 4
    other = f.with_patient(f.instance(), "OTHER-PATIENT", "ROE^RICHARD")
    assert run(other, settings).dataset.StudyDate != expected or KEY.date_shift_days("OTHER-PATIENT") == shift


def test_full_dates_are_kept() -> None:
    _, out = roundtrip(f.instance(), ProfileSettings(retain_long_full_dates=True))
    assert out.StudyDate == f.PHI["StudyDate"]
    assert out.SeriesDate == f.PHI["StudyDate"]
    assert out.PatientBirthDate == ""  # not a longitudinal date: still Z
    assert out.LongitudinalTemporalInformationModified == "UNMODIFIED"


# ------------------------------------------------------------------------------------------ options


def test_retain_patient_characteristics() -> None:
    _, basic = roundtrip(f.instance())
    _, kept = roundtrip(f.instance(), ProfileSettings(retain_patient_chars=True))
    assert "PatientAge" not in basic and basic.PatientSex == ""
    assert kept.PatientAge == "062Y" and kept.PatientSex == "M" and kept.PatientWeight == 80


def test_retain_device_and_institution_identity() -> None:
    _, out = roundtrip(f.instance(), ProfileSettings(retain_device_id=True, retain_institution_id=True))
    assert out.DeviceSerialNumber == f.PHI["DeviceSerialNumber"]
    assert out.StationName == f.PHI["StationName"]
    assert out.InstitutionName == f.PHI["InstitutionName"]
    codes = {item.CodeValue for item in out.DeidentificationMethodCodeSequence}
    assert {"113100", "113109", "113112"} <= codes


def test_clean_descriptors_drops_identifying_tokens() -> None:
    result, out = roundtrip(f.instance(), ProfileSettings(clean_descriptors=True))
    assert out.StudyDescription == "CT CHEST"
    assert out.SeriesDescription == "AXIAL 1"
    assert "113105" in [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
    assert result.actions["cleaned"] >= 2
    _, basic = roundtrip(f.instance())
    assert "StudyDescription" not in basic  # X without the option


def test_clean_graphics_and_overlays() -> None:
    ds = f.instance()
    annotation = Dataset()
    annotation.GraphicLayer = "LAYER1"
    text = Dataset()
    text.UnformattedTextValue = "DOE JOHN"
    annotation.TextObjectSequence = Sequence([text])
    ds.GraphicAnnotationSequence = Sequence([annotation])
    _, basic = roundtrip(ds)
    assert not any(elem.tag.group == 0x6000 for elem in basic)  # the whole overlay group goes
    assert basic.GraphicAnnotationSequence[0].TextObjectSequence[0].UnformattedTextValue != "DOE JOHN"
    _, cleaned = roundtrip(ds, ProfileSettings(clean_graphics=True))
    assert "GraphicAnnotationSequence" not in cleaned
    assert "113103" in [item.CodeValue for item in cleaned.DeidentificationMethodCodeSequence]


# ---------------------------------------------------------------------------------------- private


def test_no_private_element_survives_by_default() -> None:
    result, out = roundtrip(f.instance())
    assert not [elem for elem in out.iterall() if elem.tag.is_private]
    assert result.actions["private_removed"] >= 4
    assert f.PHI["PrivateText"] in result.phi_values


@pytest.mark.parametrize("cut_from_bytes", [True, False], ids=["cut-from-bytes", "stripped-after-parse"])
@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_privates_dropped_unparsed_give_the_same_output_counts_and_values(
    implicit: bool, cut_from_bytes: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not cut_from_bytes:  # the path of files over MAX_FILTERED_BYTES
        monkeypatch.setattr(deidentify_module, "MAX_FILTERED_BYTES", 0)
    data = f.to_bytes(f.instance(), implicit=implicit)
    full_ds = read_dicom(data, Limits())
    full = run(full_ds)
    fast_ds, stripped = read_for_profile(data, Limits(), BASIC)
    fast = deidentify(fast_ds, BASIC, KEY, stripped)
    # The private sequence stays for the normal path (its items are harvested); the rest is dropped.
    assert [int(e.tag) for e in fast_ds if e.tag.is_private] == [0x00111002]
    assert stripped.count == len([e for e in full_ds if e.tag.is_private]) - 1
    assert write_dicom(fast.dataset) == write_dicom(full.dataset)
    assert fast.actions == full.actions
    assert f.PHI["PrivateText"] in fast.phi_values
    harvested = {v.text for v in harvest_dicom(fast_ds, BASIC) | harvest_private_texts(stripped.texts)}
    assert harvested == {v.text for v in harvest_dicom(full_ds, BASIC)}
    assert f.PHI["PrivateText"] in harvested
    if not implicit:  # implicit VR: pydicom reads the uncatalogued private sequence as UN bytes either way
        assert f.PHI["PrivateSeqText"] in harvested


def test_safe_private_reads_every_private_element() -> None:
    settings = ProfileSettings(retain_safe_private=True, safe_private_tags=("ACME PRIVATE:0011,03",))
    ds, stripped = read_for_profile(f.to_bytes(f.instance()), Limits(), settings)
    assert stripped.count == 0 and not stripped.texts
    assert ds[0x00111001].value == f.PHI["PrivateText"]


def test_safe_private_allow_list() -> None:
    ds = f.instance()
    settings = ProfileSettings(retain_safe_private=True, safe_private_tags=("ACME PRIVATE:0011,03",))
    _, out = roundtrip(ds, settings)
    private = {int(elem.tag): elem.value for elem in out if elem.tag.is_private}
    assert private[0x00111003] == 42.5
    assert private[0x00110010] == "ACME PRIVATE"
    assert 0x00111001 not in private and 0x00111002 not in private
    with pytest.raises(ProfileError, match="Creator:gggg,ee"):
        run(ds, ProfileSettings(retain_safe_private=True, safe_private_tags=("nonsense",)))


# -------------------------------------------------------------------------------------- keep/remove


def test_keep_overrides_profile_and_remove_wins_over_keep() -> None:
    settings = ProfileSettings(keep=("InstitutionName", "0008,1030"), remove=("Manufacturer", "(0008,1030)"))
    _, out = roundtrip(f.instance(), settings)
    assert out.InstitutionName == f.PHI["InstitutionName"]  # keep beats the profile
    assert "Manufacturer" not in out  # remove beats the profile's K
    assert "StudyDescription" not in out  # in both lists: remove wins
    with pytest.raises(ProfileError, match="SOPInstanceUID"):
        run(f.instance(), ProfileSettings(remove=("SOPInstanceUID",)))
    with pytest.raises(ProfileError, match="neither a tag nor a DICOM keyword"):
        run(f.instance(), ProfileSettings(keep=("NotAKeyword",)))


# ------------------------------------------------------------------------------------- burned in


@pytest.mark.parametrize("value", ["YES", None])
def test_burned_in_annotation_raises_without_pixel_redaction(value: str | None) -> None:
    with pytest.raises(BurnedInAnnotationError, match="burned-in"):
        run(f.ultrasound(value))
    result = run(f.ultrasound(value), ProfileSettings(pixel_redaction=True))
    assert result.needs_pixel_redaction


def test_burned_in_no_passes() -> None:
    result = run(f.ultrasound("NO"))
    assert not result.needs_pixel_redaction
    ds = result.dataset
    mark_pixel_data_cleaned(ds)
    assert "113101" in [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert ds.BurnedInAnnotation == "NO"


# -------------------------------------------------------------------------------------- read/write


def test_write_preserves_transfer_syntax_and_pixels() -> None:
    for implicit in (False, True):
        data = f.to_bytes(f.instance(), implicit=implicit)
        original = read_dicom(data, Limits())
        out = pydicom.dcmread(io.BytesIO(write_dicom(run(original).dataset)))
        assert out.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert out.PixelData == original.PixelData


def test_input_dataset_is_not_modified() -> None:
    ds = f.instance()
    before = f.all_strings(ds)
    run(ds)
    assert f.all_strings(ds) == before


def _phi_free(exc: BaseException) -> None:
    message = str(exc).upper()
    for value in f.PHI.values():
        assert value.upper() not in message


def test_empty_and_junk_inputs() -> None:
    with pytest.raises(InvalidInputError, match="empty"):
        read_dicom(b"", Limits())
    with pytest.raises(InvalidInputError, match="not DICOM"):
        read_dicom(b"hello, this is not a DICOM file at all" * 10, Limits())
    with pytest.raises(InvalidInputError, match="not DICOM"):
        read_dicom(b"\x00" * 128 + b"DIXM" + b"\x00" * 64, Limits())


@pytest.mark.parametrize("cut", [140, 300, 600, -1, -7, -100])
def test_truncated_inputs(cut: int) -> None:
    data = f.to_bytes(f.instance())
    with pytest.raises(InvalidInputError, match="malformed DICOM|truncated") as info:
        read_dicom(data[:cut], Limits())
    _phi_free(info.value)


def _offset_of(data: bytes, tag: int) -> int:
    needle = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    return data.index(needle, 132)


def test_bad_vr_and_bad_lengths() -> None:
    data = f.to_bytes(f.instance())
    at = _offset_of(data, 0x00100010)
    bad_vr = data[: at + 4] + b"Q9" + data[at + 6 :]
    with pytest.raises(InvalidInputError, match=r"invalid VR code") as info:
        read_dicom(bad_vr, Limits())
    _phi_free(info.value)
    too_long = data[: at + 6] + struct.pack("<H", 0xFFF0) + data[at + 8 :]
    with pytest.raises(InvalidInputError, match=r"PatientName|\(0010,0010\)|declares") as info:
        read_dicom(too_long, Limits())
    _phi_free(info.value)
    rows = _offset_of(data, 0x00280010)
    odd = data[: rows + 6] + struct.pack("<H", 3) + data[rows + 8 :]
    with pytest.raises(InvalidInputError, match=r"not a multiple of 2|malformed"):
        read_dicom(odd, Limits())


def test_undefined_length_on_a_text_element() -> None:
    data = f.to_bytes(f.instance(), implicit=True)
    at = _offset_of(data, 0x00100010)
    trap = data[: at + 4] + struct.pack("<I", 0xFFFFFFFF) + data[at + 8 :]
    with pytest.raises(InvalidInputError, match="undefined length"):
        read_dicom(trap, Limits())


def test_deep_nesting_is_refused() -> None:
    ds = f.instance()
    inner = Dataset()
    inner.CodeMeaning = "leaf"
    for _ in range(40):
        outer = Dataset()
        outer.ContentSequence = Sequence([inner])
        inner = outer
    ds.ContentSequence = inner.ContentSequence
    with pytest.raises(InvalidInputError, match="nested deeper"):
        read_dicom(f.to_bytes(ds), Limits())


def test_hostile_dimensions_fail_before_decoding() -> None:
    ds = f.instance()
    ds.Rows = 65535
    ds.Columns = 65535
    ds.NumberOfFrames = "1000"
    # Pixel data stays 128 bytes: the check must come from the header, not from decoding.
    with pytest.raises(InputTooLargeError, match="--max_pixels"):
        read_dicom(f.to_bytes(ds), Limits(max_pixels=10_000_000))
    with pytest.raises(InputTooLargeError, match="--max_file_bytes"):
        read_dicom(f.to_bytes(f.instance()), Limits(max_file_bytes=100))


def test_missing_identity_uids_are_invalid() -> None:
    ds = f.instance()
    del ds.SeriesInstanceUID
    with pytest.raises(InvalidInputError, match="SeriesInstanceUID"):
        run(ds)


def test_no_phi_in_any_error_message() -> None:
    ds = f.instance()
    ds.BurnedInAnnotation = "YES"
    errors: list[DeidError] = []
    for call in (
        lambda: run(ds),
        lambda: read_dicom(f.to_bytes(f.instance())[:-50], Limits()),
        lambda: run(f.instance(), ProfileSettings(keep=(f.PHI["PatientName"],))),
    ):
        with pytest.raises(DeidError) as info:
            call()
        errors.append(info.value)
    for exc in errors:
        message = str(exc)
        for value in (f.PHI["PatientID"], f.PHI["StudyDate"], f.PHI["InstitutionName"], f.instance_uid(1, 1)):
            assert value not in message


def test_phi_values_cover_removed_identifiers() -> None:
    result = run(f.instance(2, 1))
    for name in ("PatientName", "PatientID", "AccessionNumber", "InstitutionName", "StudyDate", "NestedName"):
        assert f.PHI[name] in result.phi_values, name
    assert f.instance_uid(2, 1) in result.phi_values
    assert "ACME" not in result.phi_values  # kept values are not PHI
