"""Pure tests: keyed pseudonyms and settings validation."""

from __future__ import annotations

import re

import pytest

from deid.errors import ConfigError
from deid.keys import DATE_SHIFT_MAX_DAYS, DeidKey
from deid.settings import (
    Box,
    ProfileSettings,
    RedactionSettings,
    RedactRegions,
    WsiSettings,
    parse_tag,
    split_tag_list,
)

KEY = DeidKey(b"k" * 32)
OTHER = DeidKey(b"o" * 32)


def test_uid_is_keyed_stable_and_valid() -> None:
    old = "1.2.840.113619.2.55.3.604688119.969.1268071029.320"
    new = KEY.uid(old)
    assert new == KEY.uid(old) == DeidKey.from_token(KEY.to_token()).uid(old)
    assert new != OTHER.uid(old)
    assert new != KEY.uid(old + "1")
    assert re.fullmatch(r"2\.25\.(0|[1-9][0-9]*)", new)
    assert len(new) <= 64


def test_uid_ignores_dicom_padding() -> None:
    assert KEY.uid("1.2.3\x00") == KEY.uid("1.2.3")


def test_pseudonym_depends_on_purpose_and_fits_length() -> None:
    a = KEY.pseudonym("patient_id", "MRN-1")
    assert len(a) == 16 and a == KEY.pseudonym("patient_id", "MRN-1")
    assert a != KEY.pseudonym("accession", "MRN-1")
    assert len(KEY.pseudonym("x", "y", length=8)) == 8


def test_date_shift_is_per_patient_and_bounded() -> None:
    shifts = {KEY.date_shift_days(f"patient-{i}") for i in range(200)}
    assert all(1 <= s <= DATE_SHIFT_MAX_DAYS for s in shifts)
    assert len(shifts) > 150  # spread, not a constant
    assert KEY.date_shift_days("p") == KEY.date_shift_days("p")


def test_short_key_is_refused_with_advice() -> None:
    with pytest.raises(ConfigError, match="at least 16"):
        DeidKey.from_bytes(b"short\n")


def test_key_file_white_space_is_ignored(tmp_path) -> None:
    path = tmp_path / "k"
    path.write_bytes(b"0123456789abcdef0123\n")
    assert DeidKey.from_file(path).secret == b"0123456789abcdef0123"


def test_key_file_missing_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot read --deid_key_file"):
        DeidKey.from_file(tmp_path / "missing")


def test_generated_keys_differ() -> None:
    assert DeidKey.generate().secret != DeidKey.generate().secret


def test_tag_parsing_and_lists() -> None:
    assert parse_tag("(0010,0010)") == 0x00100010
    assert parse_tag("00100020") == 0x00100020
    assert parse_tag("PatientName") is None
    assert split_tag_list("0010,0010, PatientID,(0008,0050)") == ("0010,0010", "PatientID", "(0008,0050)")


def test_regions_global_and_per_input() -> None:
    regions = RedactRegions.parse('{"*": [[0, 0, 10, 10]], "ABC": [[5, 5, 2, 2]]}')
    assert regions.for_input("abc") == (Box(0, 0, 10, 10), Box(5, 5, 2, 2))
    assert regions.for_input("other") == (Box(0, 0, 10, 10),)
    assert RedactRegions.parse("[[1, 2, 3, 4]]").everywhere == (Box(1, 2, 3, 4),)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[1, 2, 3]]", "four integers"),
        ("[[0, 0, 0, 5]]", "width, height > 0"),
        ("no-such-file.json", "neither JSON nor a readable file"),
        ("{bad json", "not valid JSON"),
        ("[1", "not valid JSON"),
    ],
)
def test_bad_regions_are_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RedactRegions.parse(text)


def test_exclusive_date_options() -> None:
    with pytest.raises(ConfigError, match="exclude each other"):
        ProfileSettings(retain_long_full_dates=True, retain_long_modified_dates=True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tile_size": 500}, "multiple of 16"),
        ({"tile_size": 128, "tile_overlap": 64}, "less than half"),
        ({"jpeg_quality": 0}, "between 1 and 100"),
    ],
)
def test_bad_wsi_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        WsiSettings(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"text": "maybe"}, "--redact_text must be one of"), ({"fill": "pink"}, "--redact_fill must be one of")],
)
def test_bad_redaction_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RedactionSettings(**kwargs)


def test_redaction_is_configured_by_boxes_for_any_input_or_by_text() -> None:
    assert not RedactionSettings().configured
    assert RedactionSettings(text="detect").configured
    assert RedactionSettings(regions=RedactRegions(by_input=(("ab" * 32, (Box(0, 0, 1, 1),)),))).configured
