"""Dummy values (the D of PS3.15 Table E.1-1): a non-empty value valid for the element's VR.

Text identifiers get a keyed pseudonym (the same input value gives the same dummy in every file of
a run), dates and times fixed placeholders, numbers zero. Binary values (OB, OW, OD, OF, OL, OV, UN)
become zero bytes of the original length rounded up to the VR's unit, at least one unit: D asks for
a non-zero length, and a fixed-size value (a frame timestamp, a flow identifier) keeps its size. A
UR becomes DUMMY_URI, an absolute URI in the reserved .invalid domain (RFC 2606).
"""

from __future__ import annotations

from deid.dicom.elements import DUMMY_DATE, DUMMY_DATETIME, DUMMY_TIME, NUMERIC_VRS, element_values
from deid.keys import DeidKey

MAX_LENGTH = {"AE": 16, "CS": 16, "SH": 16, "LO": 64, "PN": 64, "UC": 64, "LT": 64, "ST": 64, "UT": 64}
BINARY_UNIT = {"OB": 2, "UN": 2, "OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
DUMMY_URI = "https://dummy.invalid/"


def dummy_value(key: DeidKey, vr: str, value: object, purpose: str) -> object:
    """The dummy for one element of VR `vr` holding `value`; `purpose` keys text pseudonyms."""
    values = element_values(value) if not isinstance(value, bytes | bytearray) else []
    multi = max(len(values), 1)
    if vr == "DA":
        return "\\".join([DUMMY_DATE] * multi)
    if vr == "DT":
        return "\\".join([DUMMY_DATETIME] * multi)
    if vr == "TM":
        return "\\".join([DUMMY_TIME] * multi)
    if vr == "AS":
        return "000Y"
    if vr in ("DS", "IS"):
        return "\\".join(["0"] * multi)
    if vr in NUMERIC_VRS:
        return 0 if multi == 1 else [0] * multi
    if vr in BINARY_UNIT:
        return binary_dummy(vr, value)
    if vr == "UR":
        return DUMMY_URI
    if vr in MAX_LENGTH:
        length = min(16, MAX_LENGTH[vr])
        dummies = [key.pseudonym(purpose, v, length) for v in values] or [key.pseudonym(purpose, "", length)]
        return dummies[0] if len(dummies) == 1 else dummies
    return value


def binary_dummy(vr: str, value: object) -> bytes:
    unit = BINARY_UNIT[vr]
    length = len(value) if isinstance(value, bytes | bytearray) else 0
    return b"\x00" * max(unit, -(-length // unit) * unit)
