"""The descriptor-echo rule (deid/verify/echo.py): clinical wording repeated in kept codes is an audit
note, not a leak; anything carrying a name, ID or date of the input still quarantines."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from deid.dicom.instance import InstanceResult, InstanceSource, deidentify_instance
from deid.keys import DeidKey
from deid.settings import ProfileSettings, RunSettings
from tests.support import dicom_factory

KEY = DeidKey.generate()
SETTINGS = RunSettings(output="unused", key_token=KEY.to_token())


def _code(meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "ZZ123", "99LOCAL", meaning
    return item


def _run(description: str, meaning: str, private: str | None = None) -> InstanceResult:
    ds = dicom_factory.instance(1, 3)
    ds.RequestedProcedureDescription = description
    ds.ProcedureCodeSequence = Sequence([_code(meaning)])
    ds.ManufacturerModelName = "LightSpeed Ultra"
    if private is not None:
        ds.private_block(0x0009, "GEMS_IDEN_01", create=True).add_new(0x04, "SH", private)
    data = dicom_factory.to_bytes(ds)
    return deidentify_instance(data, SETTINGS, KEY, InstanceSource(hashlib.sha256(data).hexdigest()))


def test_clinical_wording_repeated_in_a_kept_code_is_an_echo_not_a_leak() -> None:
    result = _run("CT PE CHEST", "CT PE CHEST")
    assert not result.leaked
    assert result.actions["descriptor_echo"] >= 1


def _kept_description(text: str) -> InstanceResult:
    """StudyDescription kept by --keep holds `text`; RequestedProcedureDescription (removed) too."""
    ds = dicom_factory.instance(1, 4)
    ds.StudyDescription = text
    ds.RequestedProcedureDescription = text
    data = dicom_factory.to_bytes(ds)
    profile = ProfileSettings(keep=("StudyDescription",))
    settings = RunSettings(output="unused", key_token=KEY.to_token(), profile=profile)
    return deidentify_instance(data, settings, KEY, InstanceSource(hashlib.sha256(data).hexdigest()))


def test_a_description_with_the_patients_name_still_quarantines() -> None:
    surname = dicom_factory.PHI["PatientName"].split("^")[0]
    assert _kept_description(f"CT CHEST {surname}").leaked


def test_a_description_with_digits_still_quarantines() -> None:
    assert _kept_description("CT CHEST 2019").leaked


def test_plain_wording_kept_by_the_user_is_an_echo() -> None:
    result = _kept_description("CT CHEST WITHOUT CONTRAST")
    assert not result.leaked and result.actions["descriptor_echo"] >= 1


def test_a_private_element_cut_from_a_kept_model_name_is_an_echo() -> None:
    result = _run("CT PE CHEST", "CHEST", private="LightSpeed Ultr")
    assert not result.leaked
    assert result.actions.get("descriptor_echo", 0) >= 1


def test_wording_of_an_earlier_deidentification_is_not_a_leak() -> None:
    """An input de-identified before (e.g. by CTP) repeats the method's code meaning in a private
    element; our output writes the same meaning, which is the de-identifier's own vocabulary."""
    result = _run("CT PE CHEST", "CHEST", private="Basic Application Confidentiality Profile")
    assert not result.leaked


def test_a_file_name_word_equal_to_a_kept_multi_valued_code_is_no_leak(tmp_path: Path) -> None:
    """presidio's 2_ORIGINAL.dicom: the name's 'ORIGINAL' is also a value of the kept ImageType."""
    ds = dicom_factory.instance(1, 5)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    data = dicom_factory.to_bytes(ds)
    path = tmp_path / "2_ORIGINAL.dicom"
    path.write_bytes(data)
    settings = RunSettings(output="unused", key_token=KEY.to_token(), input_root=str(tmp_path))
    source = InstanceSource(hashlib.sha256(data).hexdigest(), str(path))
    assert not deidentify_instance(data, settings, KEY, source).leaked


def _kept_study_description_with_names(description: str, patient: str, physician: str) -> InstanceResult:
    ds = dicom_factory.instance(1, 5)
    ds.PatientName = patient
    ds.ReferringPhysicianName = physician
    ds.StudyDescription = description
    data = dicom_factory.to_bytes(ds)
    profile = ProfileSettings(keep=("StudyDescription",))
    settings = RunSettings(output="unused", key_token=KEY.to_token(), profile=profile)
    return deidentify_instance(data, settings, KEY, InstanceSource(hashlib.sha256(data).hexdigest()))


def test_a_short_family_name_inside_a_kept_description_quarantines() -> None:
    """'Roe' (3 letters) is below the harvest's MIN_LEN, so only deid/verify/kept_names.py finds it."""
    result = _kept_study_description_with_names("CT chest, follow-up Roe", "Roe^Jane", "Smithfield^Alan")
    assert result.leaked
    assert any(hit.value_kind == "PatientName" and "StudyDescription" in hit.location for hit in result.leak_hits)


def test_a_two_letter_physician_name_inside_a_kept_description_quarantines() -> None:
    result = _kept_study_description_with_names("CT chest per Dr. Li", "Smithfield^Janet", "Li^Wei")
    assert result.leaked
    assert {hit.value_kind for hit in result.leak_hits} >= {"ReferringPhysicianName"}


def test_a_short_name_part_inside_a_longer_word_is_no_leak() -> None:
    """Whole tokens only: 'Roe' inside 'Roentgen' is not the name."""
    result = _kept_study_description_with_names("CT chest Roentgen view", "Roe^Jane", "Smithfield^Alan")
    assert not result.leaked


def test_a_name_prefix_equal_to_a_modality_is_no_leak() -> None:
    """'Mr' (the name's prefix) is not searched: 'MR brain' stays publishable."""
    result = _kept_study_description_with_names("MR brain follow-up", "Smithfield^Janet^^Mr", "Jones^Alan")
    assert not result.leaked
