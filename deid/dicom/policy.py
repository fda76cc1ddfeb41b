"""The profile's effective action per attribute: Table E.1-1, the options and --keep/--remove.

Decided here once, for two readers that must never disagree: the engine (deid/dicom/profile.py)
applies these actions, and the leak check's harvest (deid/verify/harvest.py) asks the same policy
which input values have to be gone from the output. The choices the standard leaves open are listed
in profile.py's docstring.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from pydicom.datadict import dictionary_VR, tag_for_keyword

from deid.dicom import profile_table
from deid.dicom.elements import BINARY_VRS, tag_text
from deid.dicom.iod_types import attribute_type, known_iod
from deid.dicom.profile_model import ProfileRow
from deid.dicom.unlisted import unlisted_action
from deid.errors import ProfileError
from deid.settings import ProfileSettings, parse_tag

PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
PATIENT_ID = 0x00100020
GRAPHIC_ANNOTATION_SEQUENCE = 0x00700001
# Type 1C attributes "required if <sibling> is present": removed whenever the sibling is removed, so
# that the output never holds one without the other (dciodvfy: condition not satisfied).
CONDITIONAL_ON = {
    0x00120081: 0x00120082,  # Clinical Trial Protocol Ethics Committee Name <- ... Approval Number
}
SHIFTABLE_VRS = ("DA", "DT", "TM")

# Attributes every instance needs (SOP Common, study/series identity, pixel data): --remove may not
# name them, since the output would no longer be an instance of its IOD.
REQUIRED_TAGS = frozenset({0x00080016, 0x00080018, 0x0020000D, 0x0020000E, 0x00080060, 0x7FE00010})

# Private elements known to hold acquisition physics, never identity (PS3.15 E.3.10 examples and
# common vendor diffusion/scaling fields): (creator, group, element byte).
SAFE_PRIVATE: frozenset[tuple[str, int, int]] = frozenset({
    ("SIEMENS MR HEADER", 0x0019, 0x0C),  # B_value
    ("SIEMENS MR HEADER", 0x0019, 0x0D),  # DiffusionDirectionality
    ("SIEMENS MR HEADER", 0x0019, 0x0E),  # DiffusionGradientDirection
    ("SIEMENS MR HEADER", 0x0019, 0x27),  # B_matrix
    ("GEMS_ACQU_01", 0x0019, 0xBB),  # User data (diffusion direction)
    ("GEMS_ACQU_01", 0x0019, 0xBC),
    ("GEMS_ACQU_01", 0x0019, 0xBD),
    ("GEMS_PARM_01", 0x0043, 0x39),  # slop integers (b-value)
    ("Philips Imaging DD 001", 0x2001, 0x03),  # Diffusion B-factor
    ("Philips Imaging DD 001", 0x2001, 0x04),  # Diffusion direction
    ("Philips MR Imaging DD 001", 0x2005, 0xB0),  # Diffusion direction RL
    ("Philips MR Imaging DD 001", 0x2005, 0xB1),  # Diffusion direction AP
    ("Philips MR Imaging DD 001", 0x2005, 0xB2),  # Diffusion direction FH
    ("Philips MR Imaging DD 001", 0x2005, 0x0E),  # Scale slope
})

# ProfileSettings flag -> (option column of the table, CID 7050 code). The order is the order in
# which options are consulted, so that a row with a C under two options always picks the same one.
OPTIONS = (
    ("retain_long_full_dates", "long_full_dates", "113106"),
    ("retain_long_modified_dates", "long_modified_dates", "113107"),
    ("clean_descriptors", "clean_descriptors", "113105"),
    ("clean_graphics", "clean_graphics", "113103"),
    ("retain_uids", "uids", "113110"),
    ("retain_patient_chars", "patient_chars", "113108"),
    ("retain_device_id", "device_id", "113109"),
    ("retain_institution_id", "institution_id", "113112"),
    ("retain_safe_private", "safe_private", "113111"),
)


def enabled_option_codes(settings: ProfileSettings) -> list[str]:
    """CID 7050 codes of the options `settings` enables, in OPTIONS order."""
    return [code for flag, _, code in OPTIONS if getattr(settings, flag)]


def profile_row(tag: int) -> ProfileRow | None:
    """The Table E.1-1 row of a public tag, plain or masked (curves, overlays); None when unlisted."""
    row = profile_table.BY_TAG.get(tag)
    if row is not None:
        return row
    for mask, value, masked in profile_table.MASKED:
        if tag & mask == value:
            return masked
    return None


def _is_repeating_graphics(tag: int) -> bool:
    group = tag >> 16
    return (0x6000 <= group <= 0x60FF or 0x5000 <= group <= 0x50FF) and group % 2 == 0


def _combined(code: str, typ: int | None) -> str:
    """Resolve a combined code by the attribute's type; None (unknown) keeps the element present."""
    if code == "Z/D":
        return "Z" if typ == 2 else "D"
    if code == "X/Z":
        return "X" if typ == 3 else "Z"
    if code == "X/D":
        return "X" if typ == 3 else "D"
    if code == "X/Z/D":
        return {3: "X", 2: "Z"}.get(typ or 1, "D")
    if code == "X/Z/U*":
        return {3: "X", 2: "Z"}.get(typ or 1, "U")
    return code


def resolve_tags(items: Iterable[str], what: str) -> frozenset[int]:
    """Tags named by a --keep/--remove list (tags in any spelling parse_tag accepts, or keywords)."""
    tags: set[int] = set()
    for item in items:
        tag = parse_tag(item)
        if tag is None:
            tag = tag_for_keyword(item.strip())
        if tag is None:
            raise ProfileError(f"--{what} names '{item}', which is neither a tag nor a DICOM keyword; fix the list")
        tags.add(tag)
    return frozenset(tags)


def _parse_safe_private(items: Iterable[str]) -> frozenset[tuple[str, int, int]]:
    out = set(SAFE_PRIVATE)
    for item in items:
        creator, sep, rest = item.rpartition(":")
        match = re.fullmatch(r"\(?([0-9A-Fa-f]{4}),([0-9A-Fa-f]{2})\)?", rest.strip())
        if not sep or not creator.strip() or not match or not int(match.group(1), 16) % 2:
            raise ProfileError(
                f"safe private tag '{item}' must be 'Creator:gggg,ee' with an odd group gggg and the "
                "element byte ee"
            )
        out.add((creator.strip(), int(match.group(1), 16), int(match.group(2), 16)))
    return frozenset(out)


@dataclass(frozen=True)
class ProfilePolicy:
    """The run's ProfileSettings resolved once: enabled option columns, --keep and --remove as tags.

    `keep` already excludes `remove`: a tag named in both lists is safer removed.
    """

    settings: ProfileSettings
    keep: frozenset[int]
    remove: frozenset[int]
    options: tuple[str, ...]
    safe_private: frozenset[tuple[str, int, int]]

    @classmethod
    def from_settings(cls, settings: ProfileSettings) -> ProfilePolicy:
        """Raises ProfileError for a list entry that names nothing, or a --remove of a required attribute."""
        remove = resolve_tags(settings.remove, "remove")
        keep = resolve_tags(settings.keep, "keep") - remove
        required = remove & REQUIRED_TAGS
        if required:
            names = ", ".join(sorted(tag_text(t) for t in required))
            raise ProfileError(f"--remove names {names}, which every instance needs; take it off the list")
        return cls(
            settings=settings,
            keep=keep,
            remove=remove,
            options=tuple(option for flag, option, _ in OPTIONS if getattr(settings, flag)),
            safe_private=(
                _parse_safe_private(settings.safe_private_tags) if settings.retain_safe_private else frozenset()
            ),
        )

    def action_for(self, tag: int, sop_class: str = "", nested: bool = False) -> str | None:
        """The action on public attribute `tag` of an instance of `sop_class` (top level or `nested`).

        X remove, K keep, P pseudonymise (PatientID), S shift dates (the C of Retain Longitudinal
        Modified Dates), C clean, Z empty, D dummy, U remap UIDs. None when Table E.1-1 does not list
        the tag: then `element_action` decides by the element's VR. Without a known `sop_class`
        a combined code takes the choice that keeps the element present, never K or C.
        """
        if tag in self.remove:
            return "X"
        if tag in PIXEL_TAGS or tag in self.keep:
            return "K"
        if tag & 0xFFFF == 0:
            return "X"  # group lengths go stale once elements change
        if _is_repeating_graphics(tag):
            return "X"
        if tag == GRAPHIC_ANNOTATION_SEQUENCE and self.settings.clean_graphics:
            return "X"
        if tag == PATIENT_ID:
            return "P"
        row = profile_row(tag)
        if row is None:
            return None
        sibling = CONDITIONAL_ON.get(tag)
        if sibling is not None and self.action_for(sibling, sop_class, nested) == "X":
            return "X"  # even when an option would keep it: alone it is not allowed
        chosen = self._option_code(row, tag)
        if chosen is not None:
            return chosen
        if row.basic == "X/Z/U*":
            # Kept with every UID remapped whatever the type (as the Healthcare API, CTP and dicognito
            # do): the references carry nothing identifying and research use depends on them.
            return "U"
        typ = attribute_type(sop_class, tag, nested)
        code = _combined(row.basic, typ)
        if typ is not None and known_iod(sop_class):
            # Plain X or Z on an attribute the IOD requires would leave an invalid instance.
            if code == "X" and typ in (1, 2):
                code = "D" if typ == 1 else "Z"
            elif code == "Z" and typ == 1:
                code = "D"
        return code

    def element_action(
        self, tag: int, vr: str, sop_class: str = "", nested: bool = False, in_clean: bool = False
    ) -> str:
        """`action_for`, or for an attribute the table does not list the rule by VR of
        deid/dicom/unlisted.py (T: kept with the instance's known identifying values cut)."""
        code = self.action_for(tag, sop_class, nested)
        return unlisted_action(tag, vr, self.settings, in_clean) if code is None else code

    def _option_code(self, row: ProfileRow, tag: int) -> str | None:
        # A K under any enabled option wins: retaining is what that option was asked for.
        clean: str | None = None
        for option in self.options:
            code = row.option(option)
            if code == "K":
                return "K"
            if code == "C" and clean is None:
                clean = option
        if clean is None:
            return None
        if clean == "clean_graphics":
            return "X"  # clean_graphics cleans by removal
        vr = _vr(tag)
        if clean == "long_modified_dates":
            # Dates are shifted (times kept: a whole-day shift leaves the time of day). A value the
            # shift cannot modify consistently (a signed timestamp token, an OB frame timestamp, a
            # time zone offset) gets the Basic Profile's action instead.
            return "S" if vr in SHIFTABLE_VRS else None
        if vr in BINARY_VRS:
            return None  # bytes cannot be cleaned (Maker Note): the Basic Profile's action
        return "C"

    def is_kept(self, tag: int) -> bool:
        """Named by --keep (and not by --remove)."""
        return tag in self.keep

    def keeps_private(self, tag: int, creator: str) -> bool:
        """Whether private element `tag`, whose block belongs to `creator`, survives the profile."""
        if not self.settings.retain_safe_private or tag in self.remove:
            return False
        return (creator, tag >> 16, tag & 0xFF) in self.safe_private or tag in self.keep


def _vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return ""


@functools.lru_cache(maxsize=16)
def profile_policy(settings: ProfileSettings) -> ProfilePolicy:
    """ProfilePolicy.from_settings, memoised: a run builds it once, not once per instance."""
    return ProfilePolicy.from_settings(settings)
