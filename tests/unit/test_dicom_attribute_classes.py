"""Issue 12, profile engine: one synthetic instance per attribute class that once kept its value.

Each test puts a value in one place, runs the per-instance recipe (deidentify_instance: profile,
encoding, leak check) and asserts that the value is gone from the published bytes and that the
instance is published (no leak hit) when nothing identifying remains.
"""

from __future__ import annotations

import hashlib
import io
import struct

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage

from deid.dicom.clean import clean_text
from deid.dicom.instance import InstanceResult, InstanceSource, deidentify_instance
from deid.dicom.policy import profile_policy
from deid.errors import ConfigError, InvalidInputError
from deid.keys import DeidKey
from deid.settings import ProfileSettings, RunSettings
from deid.verify.harvest import harvest_dicom
from tests.support import dicom_factory as f

KEY = DeidKey(b"attribute-classes-key-0123456789")
UID_A = "1.2.826.0.1.3680043.9.7777.55.1"
UID_B = "1.2.826.0.1.3680043.9.7777.55.2"


def publish(ds: Dataset, profile: ProfileSettings | None = None) -> tuple[InstanceResult, Dataset]:
    data = f.to_bytes(ds)
    settings = RunSettings(output="/unused", key_token=KEY.to_token(), profile=profile or ProfileSettings())
    result = deidentify_instance(data, settings, KEY, InstanceSource(hashlib.sha256(data).hexdigest()))
    return result, pydicom.dcmread(io.BytesIO(result.payload))


def assert_gone(result: InstanceResult, *values: str | bytes) -> None:
    payload = result.payload.lower()
    for value in values:
        raw = value if isinstance(value, bytes) else value.encode("ascii")
        assert raw.lower() not in payload, value
        if isinstance(value, str):
            assert value.lower().encode("utf-16-le") not in payload, value
    assert not result.leaked, result.leak_summary()


# ------------------------------------------------------------------------------ U, not a class UID


@pytest.mark.parametrize("keyword", ["ManufacturerDeviceClassUID", "TemplateExtensionCreatorUID",
                                     "DigitalSignatureUID", "UID"])
def test_u_attributes_are_remapped_whatever_their_keyword_says(keyword: str) -> None:
    ds = f.instance()
    setattr(ds, keyword, UID_A)
    result, out = publish(ds)
    assert str(out[keyword].value) == KEY.uid(UID_A)
    assert_gone(result, UID_A)
    assert str(out.SOPClassUID) == CTImageStorage  # unlisted kind UIDs stay


def test_retain_device_identity_keeps_the_device_class_uid_as_the_table_says() -> None:
    ds = f.instance()
    ds.ManufacturerDeviceClassUID = UID_A
    _, out = publish(ds, ProfileSettings(retain_device_id=True))
    assert out.ManufacturerDeviceClassUID == UID_A


# ------------------------------------------------------------------------------------ D sequences


def test_d_sequence_items_are_replaced_not_kept() -> None:
    ds = f.instance()
    code = Dataset()
    code.CodeValue = "ZQX4455EMP"
    code.CodingSchemeDesignator = "ZQXCORP"
    code.CodeMeaning = "Quintessa Zarblewick"
    ds.PersonIdentificationCodeSequence = Sequence([code])
    operator = Dataset()
    inner = Dataset()
    inner.CodeValue = "ZQX7788OPR"
    inner.CodingSchemeDesignator = "ZQXCORP"
    inner.CodeMeaning = "Warbleton Quux"
    operator.PersonIdentificationCodeSequence = Sequence([inner])
    ds.OperatorIdentificationSequence = Sequence([operator])
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.826.0.1.3680043.9.7777.99"  # unknown IOD: D
    result, out = publish(ds)
    item = out.PersonIdentificationCodeSequence[0]
    assert item.CodeValue != "ZQX4455EMP" and item.CodeValue and item.CodeMeaning
    assert_gone(result, "ZQX4455EMP", "ZQXCORP", "Quintessa", "Zarblewick", "ZQX7788OPR", "Warbleton")


def test_structured_content_keeps_its_codes_and_loses_its_text() -> None:
    ds = f.instance()
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    concept = Dataset()
    concept.CodeValue = "121071"
    concept.CodingSchemeDesignator = "DCM"
    concept.CodeMeaning = "Finding"
    item.ConceptNameCodeSequence = Sequence([concept])
    item.TextValue = "Seen by Dr Zarblewick, MRN ZQ998812"
    ds.ContentSequence = Sequence([item])
    result, out = publish(ds)
    kept = out.ContentSequence[0]
    assert kept.ConceptNameCodeSequence[0].CodeValue == "121071"
    assert kept.ConceptNameCodeSequence[0].CodeMeaning == "Finding"
    assert_gone(result, "Zarblewick", "ZQ998812")


# ------------------------------------------------------------------------------ D on binary VRs

BINARY_D = [
    ("CertificateOfSigner", 0x04000115, "OB", b"ZQXCERTIFICATE-BYTES"),
    ("EncapsulatedDocument", 0x00420011, "OB", b"%PDF ZQXWARBLE QUINTESSA"),
    ("SourceIdentifier", 0x00340005, "OB", b"ZQXSOURCE-77"),
    ("FrameOriginTimestamp", 0x00340007, "OB", b"ZQXTIMESTAMP"),
    ("SelectorOBValue", 0x00720065, "OB", b"ZQXSELECTOROB"),
    ("SelectorUNValue", 0x0072006D, "UN", b"ZQXSELECTORUN"),
    ("SelectorURValue", 0x00720071, "UR", b"https://zqxwarble.example/patient/ZQX1"),
]


@pytest.mark.parametrize(("keyword", "tag", "vr", "value"), BINARY_D, ids=[b[0] for b in BINARY_D])
def test_d_on_binary_and_uri_values_writes_a_valid_dummy(keyword: str, tag: int, vr: str, value: bytes) -> None:
    ds = f.instance()
    ds.add_new(tag, vr, value.decode("ascii") if vr == "UR" else value)
    result, out = publish(ds)
    dummy = out[tag].value
    assert dummy, f"{keyword} was emptied"
    if vr == "UR":
        assert dummy.startswith("https://") and dummy.endswith(".invalid/")
    else:
        assert set(bytes(dummy)) == {0} and len(dummy) >= len(value) and len(dummy) % 2 == 0
    assert_gone(result, value)


@pytest.mark.parametrize(("tag", "vr"), [(0x00720065, "OB"), (0x0072006D, "UN"), (0x04000115, "OB")])
def test_d_on_an_empty_binary_value_writes_a_non_empty_dummy(tag: int, vr: str) -> None:
    ds = f.instance()
    ds.add_new(tag, vr, b"")
    result, out = publish(ds)
    assert bytes(out[tag].value) == b"\x00\x00"  # D: a non-zero length value, one unit of the VR
    assert not result.leaked


def test_d_on_a_flow_identifier_inside_its_d_sequence() -> None:
    ds = f.instance()
    flow = Dataset()
    flow.add_new(0x00340002, "OB", b"ZQXFLOW-IDENT")
    ds.add_new(0x00340001, "SQ", Sequence([flow]))
    result, out = publish(ds)
    assert bytes(out[0x00340001].value[0][0x00340002].value) == b"\x00" * 14
    assert_gone(result, b"ZQXFLOW-IDENT")


# ------------------------------------------------------------------------ options follow the table


def test_modified_dates_modify_what_the_table_marks_c() -> None:
    ds = f.instance()
    ds.TimezoneOffsetFromUTC = "+0530"
    ds.add_new(0x04000310, "OB", b"ZQXSIGNEDTIMESTAMPTOKEN")  # Certified Timestamp
    ds.add_new(0x00340007, "OB", b"\x00\x00\x65\x43\x21\x10\x00\x00\x00\x07")  # Frame Origin Timestamp
    result, out = publish(ds, ProfileSettings(retain_long_modified_dates=True))
    assert "TimezoneOffsetFromUTC" not in out  # cannot be shifted: the Basic Profile's X
    assert 0x04000310 not in out  # a signed token cannot be modified: X
    assert set(bytes(out[0x00340007].value)) == {0}  # an OB timestamp: the Basic Profile's D
    assert_gone(result, "+0530", b"ZQXSIGNEDTIMESTAMPTOKEN", b"\x65\x43\x21\x10")
    _, full = publish(ds, ProfileSettings(retain_long_full_dates=True))
    assert full.TimezoneOffsetFromUTC == "+0530"  # K under Full Dates


def test_retain_uids_keeps_only_what_the_table_marks_k() -> None:
    ds = f.instance(2, 1)
    ds.DigitalSignatureUID = UID_A
    ds.UID = UID_B
    result, out = publish(ds, ProfileSettings(retain_uids=True))
    assert out.SOPInstanceUID == f.instance_uid(2, 1)
    assert out.DigitalSignatureUID == KEY.uid(UID_A) and out[0x0040A124].value == KEY.uid(UID_B)
    assert_gone(result, UID_A, UID_B)


def test_retained_values_in_removed_sequences_are_not_leaks() -> None:
    ds = f.instance(2, 1)
    request = Dataset()
    request.StudyInstanceUID = f.STUDY_UID
    request.RequestedProcedureID = "ZQXREQ-55"
    ref = Dataset()
    ref.ReferencedSOPClassUID = CTImageStorage
    ref.ReferencedSOPInstanceUID = f.instance_uid(1, 1)
    request.ReferencedStudySequence = Sequence([ref])
    ds.RequestAttributesSequence = Sequence([request])
    ds.DigitalSignatureUID = UID_A
    result, out = publish(ds, ProfileSettings(retain_uids=True))
    assert out.StudyInstanceUID == f.STUDY_UID and "RequestAttributesSequence" not in out
    assert_gone(result, "ZQXREQ-55", UID_A)
    _, full = publish(ds, ProfileSettings(retain_long_full_dates=True))
    assert full.StudyDate == f.PHI["StudyDate"]


@pytest.mark.parametrize("dates", ["basic", "modified"])
def test_dates_inside_retained_uids_are_not_leaks(dates: str) -> None:
    ds = f.instance()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{f.ROOT}.{f.PHI['StudyDate']}.101010.7"
    ds.SeriesInstanceUID = f"{f.ROOT}.{f.PHI['StudyDate']}.2"
    ds.DigitalSignatureUID = f"{f.ROOT}.99.{f.PHI['PatientBirthDate']}"  # U without K: still a leak if kept
    profile = ProfileSettings(retain_uids=True, retain_long_modified_dates=dates == "modified")
    result, out = publish(ds, profile)
    assert out.SOPInstanceUID == ds.SOPInstanceUID and f.PHI["StudyDate"] in result.relpath
    assert out.StudyDate != f.PHI["StudyDate"]
    assert_gone(result, ds.DigitalSignatureUID)


# ---------------------------------------------------------------------------- X/Z/U* sequences


def test_image_references_are_kept_with_remapped_uids() -> None:
    ds = f.instance(2, 1)  # CT: both sequences Type 3
    ref = Dataset()
    ref.ReferencedSOPClassUID = CTImageStorage
    ref.ReferencedSOPInstanceUID = UID_A
    ds.ReferencedImageSequence = Sequence([ref])
    result, out = publish(ds)
    assert out.ReferencedImageSequence[0].ReferencedSOPInstanceUID == KEY.uid(UID_A)
    assert out.SourceImageSequence[0].ReferencedSOPInstanceUID == KEY.uid(f.instance_uid(1, 1))
    assert str(out.ReferencedImageSequence[0].ReferencedSOPClassUID) == CTImageStorage
    assert_gone(result, UID_A, f.instance_uid(1, 1))


# ------------------------------------------------------------------------------ clean descriptors

DESCRIPTOR = ("CT chest w/o contrast, read by Dr. Quintessa Zarblewick MRN ZQ998812 on 2023-11-04 14:22, "
              "call 555-867-5309 or zq@example.org; compare 4 Nov 2023")


def test_clean_descriptors_cuts_identifying_patterns_and_keeps_wording() -> None:
    ds = f.instance()
    ds.StudyDescription = DESCRIPTOR
    diagnosis = Dataset()
    diagnosis.CodeValue = "J18.9"
    diagnosis.CodingSchemeDesignator = "I10"
    diagnosis.CodeMeaning = "Pneumonia per Dr Warbleton 11/04/2023"
    ds.AdmittingDiagnosesCodeSequence = Sequence([diagnosis])
    result, out = publish(ds, ProfileSettings(clean_descriptors=True))
    assert out.StudyDescription.startswith("CT chest w/o contrast, read by")
    assert out.AdmittingDiagnosesCodeSequence[0].CodeMeaning == "Pneumonia per"
    assert out.AdmittingDiagnosesCodeSequence[0].CodeValue == "J18.9"
    assert_gone(result, "Quintessa", "Zarblewick", "ZQ998812", "2023-11-04", "14:22", "867-5309",
                "zq@example.org", "4 Nov 2023", "Warbleton", "11/04/2023")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("T2 FLAIR 3D L4-L5 b0 B30f 120kV 2.5mm 5 mg", "T2 FLAIR 3D L4-L5 b0 B30f 120kV 2.5mm 5 mg"),
        ("Lung, left upper lobe", "Lung, left upper lobe"),
        ("May contain contrast", "May contain contrast"),
        ("SMITH^ANNA follow-up", "follow-up"),
        ("J. Smith reported at 10 am", "reported at"),
        ("Acc ACC2024001 id 123456", "Acc id"),
        ("+1 (555) 123 4567", ""),
    ],
)
def test_the_cleaner_on_its_own(text: str, expected: str) -> None:
    assert clean_text(text, frozenset()).text == expected


def test_known_values_are_cut_even_from_multi_word_runs() -> None:
    result = clean_text("Seen at St Elsewhere General Hospital", frozenset({"STELSEWHEREGENERALHOSPITAL"}))
    assert result.text == "Seen at" and result.known_cut == ("St Elsewhere General Hospital",)
    assert clean_text("V3.2.1234 DOE", frozenset({"DOE"}), known_only=True).text == "V3.2.1234"


# ----------------------------------------------------------------- conditional sibling, command group


def test_ethics_committee_name_follows_its_approval_number() -> None:
    ds = f.instance()
    ds.ClinicalTrialProtocolEthicsCommitteeName = "ZQX Ethics Board"
    ds.ClinicalTrialProtocolEthicsCommitteeApprovalNumber = "IRB-ZQX-991"
    for profile in (ProfileSettings(), ProfileSettings(retain_institution_id=True)):
        result, out = publish(ds, profile)
        assert "ClinicalTrialProtocolEthicsCommitteeName" not in out
        assert_gone(result, "ZQX Ethics Board", "IRB-ZQX-991")
    _, kept = publish(ds, ProfileSettings(keep=("ClinicalTrialProtocolEthicsCommitteeApprovalNumber",)))
    assert kept.ClinicalTrialProtocolEthicsCommitteeName not in ("", "ZQX Ethics Board")  # D


def test_command_group_elements_are_invalid_input() -> None:
    data = f.to_bytes(f.instance())
    meta_end = 144 + struct.unpack("<I", data[140:144])[0]
    status = struct.pack("<HH", 0x0000, 0x0900) + b"US" + struct.pack("<H", 2) + b"\x00\x00"
    bad = data[:meta_end] + status + data[meta_end:]
    settings = RunSettings(output="/unused", key_token=KEY.to_token())
    with pytest.raises(InvalidInputError, match=r"command \(group 0000\)"):
        deidentify_instance(bad, settings, KEY, InstanceSource("0" * 64))


# -------------------------------------------------------------- standard attributes not in the table


def _unlisted_instance() -> Dataset:
    ds = f.instance()
    ds.ContentDescription = "Scan for Mrs Quintessa Zarblewick, ref ZQ998812, chest"
    ds.WindowCenterWidthExplanation = "LUNG DOE"  # safe list: the patient's known name is cut
    ds.BodyPartExamined = "CHEST"
    ds.PatientBirthDateInAlternativeCalendar = "5784-01-15"
    ds.PlacerOrderNumberProcedure = "ZQ-998812"
    ds.HL7InstanceIdentifier = "ZQX998877^^^HOSP"
    ds.SecondaryReviewerName = "WARBLETON^QUUX"
    ds.SecondaryReviewDate = "20231104"
    ds.SecondaryReviewTime = "142233"
    ds.SoftwareVersions = "VB17A_ZQ.3.2.1234"
    return ds


def test_unlisted_text_is_cleaned_by_default_and_names_dates_dummied() -> None:
    result, out = publish(_unlisted_instance())
    assert out.ContentDescription == "Scan for, ref, chest"
    assert out.WindowCenterWidthExplanation == "LUNG"
    assert out.BodyPartExamined == "CHEST" and out.Manufacturer == "ACME"
    assert out.SoftwareVersions == "VB17A_ZQ.3.2.1234"  # safe list
    assert out.PlacerOrderNumberProcedure == "CLEANED"
    assert str(out.SecondaryReviewerName) == KEY.pseudonym("pn", "WARBLETON^QUUX")
    assert out.SecondaryReviewDate == "19000101" and out.SecondaryReviewTime == "000000"
    assert_gone(result, "Quintessa", "Zarblewick", "ZQ998812", "5784-01-15", "ZQX998877", "WARBLETON",
                "20231104", "142233")


def test_unlisted_text_keep_and_remove() -> None:
    ds = _unlisted_instance()
    ds.ContentDescription = "Chest follow-up ZQ-7Q1234"
    _, kept = publish(ds, ProfileSettings(unlisted_text="keep"))
    assert kept.ContentDescription == "Chest follow-up ZQ-7Q1234"
    assert kept.WindowCenterWidthExplanation == "LUNG"  # the safe list still cuts known values
    result, removed = publish(ds, ProfileSettings(unlisted_text="remove"))
    assert "ContentDescription" not in removed and "PlacerOrderNumberProcedure" not in removed
    assert removed.SoftwareVersions == "VB17A_ZQ.3.2.1234"
    assert_gone(result, "ZQ-7Q1234", "ZQ-998812")
    with pytest.raises(ConfigError, match="--unlisted_text"):
        ProfileSettings(unlisted_text="maybe")


def test_harvest_and_engine_agree_on_unlisted_attributes() -> None:
    ds = _unlisted_instance()
    kinds = {v.kind for v in harvest_dicom(ds, ProfileSettings())}
    assert {"SecondaryReviewerName", "SecondaryReviewDate"} <= kinds  # dummied: expected gone
    assert "ContentDescription" not in kinds and "SoftwareVersions" not in kinds  # cleaned, kept
    removing = {v.kind for v in harvest_dicom(ds, ProfileSettings(unlisted_text="remove"))}
    assert "ContentDescription" in removing
    policy = profile_policy(ProfileSettings())
    assert policy.element_action(0x00700081, "LO") == "C" and policy.element_action(0x00081090, "LO") == "T"
