"""The one effective-action rule (deid.dicom.policy) that both the engine and the leak harvest follow."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from deid.dicom.policy import profile_policy
from deid.errors import ProfileError
from deid.settings import ProfileSettings
from deid.verify.harvest import harvest_dicom

CALIBRATION_DATE = 0x0014407E  # K under Retain Device Identity, C under Retain Modified Dates
STUDY_DATE = 0x00080020
MANUFACTURER = 0x00080070
OVERLAY_COMMENTS = 0x60004000


def test_keep_wins_over_an_option_c_and_modified_dates_c_means_shift() -> None:
    both = profile_policy(ProfileSettings(retain_device_id=True, retain_long_modified_dates=True))
    assert both.action_for(CALIBRATION_DATE) == "K"
    assert both.action_for(STUDY_DATE) == "S"
    assert profile_policy(ProfileSettings()).action_for(STUDY_DATE) == "Z"


def test_remove_wins_over_keep_and_over_the_profile() -> None:
    policy = profile_policy(ProfileSettings(keep=("Manufacturer", "0008,1030"), remove=("(0008,1030)",)))
    assert policy.action_for(MANUFACTURER) == "K" and policy.is_kept(MANUFACTURER)
    assert policy.action_for(0x00081030) == "X" and not policy.is_kept(0x00081030)
    assert profile_policy(ProfileSettings(clean_graphics=True)).action_for(OVERLAY_COMMENTS) == "X"
    with pytest.raises(ProfileError, match="neither a tag nor a DICOM keyword"):
        profile_policy(ProfileSettings(keep=("NotAKeyword",)))


def test_harvest_follows_the_policy_for_keep_and_remove() -> None:
    ds = Dataset()
    ds.Manufacturer = "ZQX Scanner Works"
    ds.StudyDescription = "ZQX study of Doe"
    kinds = {v.kind for v in harvest_dicom(ds, ProfileSettings(remove=("Manufacturer",)))}
    assert "Manufacturer" in kinds  # the profile keeps it, --remove takes it out: expected gone
    kinds = {v.kind for v in harvest_dicom(ds, ProfileSettings(keep=("StudyDescription",)))}
    assert "StudyDescription" not in kinds and "Manufacturer" not in kinds


def test_issue12_rules_are_the_policys() -> None:
    basic = profile_policy(ProfileSettings())
    ct = "1.2.840.10008.5.1.4.1.1.2"
    assert basic.action_for(0x00081140, ct) == "U" and basic.action_for(0x00082112, ct) == "U"  # X/Z/U*: U
    assert basic.action_for(0x00120081) == "X"  # the ethics committee name follows its X sibling
    assert profile_policy(ProfileSettings(retain_institution_id=True)).action_for(0x00120081) == "X"
    assert profile_policy(ProfileSettings(keep=("00120082",))).action_for(0x00120081) == "D"
    modified = profile_policy(ProfileSettings(retain_long_modified_dates=True))
    assert [modified.action_for(t) for t in (0x00080020, 0x00080030, 0x00080201, 0x04000310, 0x00340007)] == [
        "S", "S", "X", "X", "D",  # dates shifted (times kept); what cannot be shifted: the Basic Profile's code
    ]
    assert profile_policy(ProfileSettings(clean_descriptors=True)).action_for(0x0016002B) == "X"  # OB Maker Note
    uids = profile_policy(ProfileSettings(retain_uids=True))
    assert uids.action_for(0x00080018) == "K" and uids.action_for(0x04000100) == "U"  # no K in the column
    assert basic.element_action(0x00080016, "UI") == "K" and basic.element_action(0x00209312, "UI") == "U"
    assert basic.element_action(0x00700081, "LO") == "C" and basic.element_action(0x00180024, "SH") == "T"
    assert basic.element_action(0x00140104, "PN") == "D"  # SecondaryReviewerName: an unlisted name
    assert basic.element_action(0x00AA0010, "LO") == "X"  # a public tag no dictionary knows
