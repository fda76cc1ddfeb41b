"""Element-level helpers shared by the DICOM reader, the profile engine and the writer.

How an element's value reads as text, how a tag is named in messages, and the value rewrites that
do not depend on a run's state (date shifting). No pydicom parsing happens here.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Container

from pydicom.datadict import keyword_for_tag
from pydicom.multival import MultiValue

DUMMY_DATE = "19000101"
DUMMY_TIME = "000000"
DUMMY_DATETIME = "19000101000000"

TEXT_VRS = frozenset({"PN", "LO", "SH", "LT", "ST", "UT", "UC", "AE", "CS", "AS", "DA", "DT", "TM", "UR"})
FREE_TEXT_VRS = frozenset({"PN", "LO", "SH", "LT", "ST", "UT", "UC"})
NUMERIC_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "SV", "UV"})
BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})


UNLISTED_TAG = "with an unlisted tag"


def is_nameable(tag: int, present: Container[int] = ()) -> bool:
    """True when a message may name `tag`: it is in pydicom's dictionary (repeating groups too), a group
    length, a private creator (gggg,0010-00FF), or a private element whose creator is in `present`
    (the tags of the same dataset, or those seen before it in the stream).

    Any other tag may be four bytes of input text read as a header (b"ARBL" reads as (5241,4C42)),
    so it is never printed; nor is the length such an element declares.
    """
    group, element = tag >> 16, tag & 0xFFFF
    if element == 0 or keyword_for_tag(tag):
        return True
    if group % 2 == 0 or group <= 0x0007 or group == 0xFFFF:
        return False
    if 0x0010 <= element <= 0x00FF:
        return True
    return element >= 0x1000 and ((group << 16) | (element >> 8)) in present


def tag_text(tag: int, present: Container[int] = ()) -> str:
    """'PatientName (0010,0010)', '(0009,1010)' for a nameable tag without a keyword (`is_nameable`),
    else UNLISTED_TAG ("with an unlisted tag"): never a value, never four bytes that may be input text.

    Written to follow "element": f"element {tag_text(tag)} ..." reads well in both forms.
    """
    if not is_nameable(tag, present):
        return UNLISTED_TAG
    keyword = keyword_for_tag(tag)
    text = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
    return f"{keyword} {text}" if keyword else text


def element_values(value: object) -> list[str]:
    """A (converted) element value as a list of strings, one per value of a multi-value."""
    if value is None:
        return []
    if isinstance(value, bytes):
        return [value.decode("latin-1")]
    # PersonName and str are iterable too, character by character: only real multi-values split.
    if isinstance(value, list | tuple | MultiValue):
        return [str(v) for v in value if v is not None]
    return [str(value)]


def normalise(text: str) -> str:
    """Upper-case letters and digits only: how free-text tokens are compared with identifying values."""
    return re.sub(r"[^0-9A-Z]", "", text.upper())


def date_forms(text: str) -> list[str]:
    """A DA value and the forms it takes in free text (ISO, US and European orders)."""
    match = re.fullmatch(r"(\d{4})(\d{2})(\d{2})", text.strip()[:8])
    if not match:
        return []
    y, m, d = match.groups()
    return [y + m + d, m + d + y, d + m + y]


def _shift_date(text: str, days: int) -> str | None:
    """Shift a DA (or the date part of a DT) back by `days`; None when it is not a date."""
    text = text.strip()
    match = re.fullmatch(r"(\d{4})(\d{2})?(\d{2})?(.*)", text)
    if not match:
        return None
    year, month, day, rest = match.groups()
    try:
        date = dt.date(int(year), int(month or 1), int(day or 1)) - dt.timedelta(days=days)
    except ValueError:
        return None
    if day:
        return date.strftime("%Y%m%d") + rest
    if month:
        return date.strftime("%Y%m") + rest
    return date.strftime("%Y") + rest


def shifted(value: str, vr: str, days: int) -> str:
    """A DA or DT value (multi-valued, DA ranges too) shifted back by `days`; dummies where unparsable."""
    out = []
    for one in value.split("\\"):
        parts = one.split("-") if vr == "DA" else [one]
        moved = [(_shift_date(p, days) if p else "") for p in parts]
        if any(s is None for s in moved):
            out.append(DUMMY_DATE if vr == "DA" else DUMMY_DATETIME)
        else:
            out.append("-".join(s or "" for s in moved))
    return "\\".join(out)
