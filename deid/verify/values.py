"""Identifying values of inputs and leak hits in outputs: which values count, and how they are shown.

Which values count (the false-positive rule), applied by `PhiValue` normalisation:
- shorter than MIN_LEN (4) characters after trimming: dropped ('M', 'F', 'DOE');
- digits only and shorter than 6 digits: dropped (instance numbers, years, small counters);
- one character repeated ('0000', 'XXXX'), a generic word ('YES', 'NONE', 'ANONYMOUS',
  'REMOVED', 'UNKNOWN', file-type and folder words), a placeholder date ('19000101'), or a
  standard DICOM UID (1.2.840.10008.*): dropped. These are also the only values the de-identifier
  inserts itself besides keyed pseudonyms and new UIDs, which cannot equal an input value except
  by a 2^-64 chance.

Person names are harvested in every spelling other systems use (`name_variants`, the one place
they are made, for DICOM PN values and every other name source): 'FAMILY^GIVEN' also gives 'GIVEN
FAMILY', 'FAMILY GIVEN', 'FAMILY, GIVEN', 'FAMILY,GIVEN', 'FAMILY_GIVEN'... Matching is
case-insensitive (deid/verify/scan.py), so no case variants are needed.

A `LeakHit` names the output, the kind of value (the attribute keyword, 'path', 'tiff:…', 'ocr')
and where it was found; never the value. `LeakHit.describe()` is safe to print or log: when the
output's own name holds the leaked value, the name is replaced by a hash of it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MIN_LEN = 4
MIN_DIGITS = 6
MAX_STRUCTURED_BYTES = 1024 * 1024

_GENERIC_TEXT = """
    yes no none null nil true false unknown unk n/a na other anonymous anonymized anonymised
    anon removed deleted redacted deidentified de-identified dummy empty blank test sample
    patient name male female
    dcm dicom dicm img ima image images svs tif tiff ndpi scn mrxs bif vms vmu jpg jpeg png raw dat
    input inputs output outputs data slide slides study studies series scan scans file files case
    cases home work tmp temp mnt bucket gs local users user documents downloads export exports
"""
GENERIC_WORDS = frozenset(_GENERIC_TEXT.split())
PLACEHOLDER_VALUES = frozenset({"19000101", "00000000", "19700101", "99999999", "0001-01-01"})


@dataclass(frozen=True)
class PhiValue:
    """One identifying value and the kind of value it is (attribute keyword, 'path', 'tiff:…')."""

    text: str
    kind: str

    def __repr__(self) -> str:  # never show the value
        return f"PhiValue(kind={self.kind!r}, len={len(self.text)})"


@dataclass(frozen=True)
class LeakHit:
    """An input value found in an output: which output, which kind of value, where. Never the value."""

    output: str
    value_kind: str
    location: str
    # True when the output's own relative path holds a value: then it is never printed.
    name_leaks: bool = False

    def __repr__(self) -> str:  # the output's name may be the leak itself
        return f"LeakHit(output={self.safe_output!r}, value_kind={self.value_kind!r}, location={self.location!r})"

    def describe(self) -> str:
        """One printable line: output (its name hashed when the name itself leaks), kind, location."""
        return f"LEAK {self.safe_output}: {self.value_kind} in {self.location}"

    @property
    def safe_output(self) -> str:
        return safe_output_name(self.output, self.name_leaks or self.location == "relpath")


def safe_output_name(relpath: str, name_leaks: bool) -> str:
    if name_leaks:
        digest = hashlib.sha256(relpath.encode("utf-8")).hexdigest()[:16]
        return f"<output whose name holds the value, sha256 {digest}>"
    return relpath


PhiLike = PhiValue | str


def clean_value(text: str) -> str:
    """A value as it is compared: NULs (DICOM padding) as spaces, trimmed."""
    return text.replace("\x00", " ").strip()


def is_meaningful(text: str) -> bool:
    """The false-positive rule of this module's docstring."""
    value = clean_value(text)
    folded = value.casefold()
    if len(value) < MIN_LEN:
        return False
    if folded in GENERIC_WORDS or folded in PLACEHOLDER_VALUES:
        return False
    if value.isdigit() and len(value) < MIN_DIGITS:
        return False
    if len(set(folded)) == 1:
        return False
    if value.startswith("1.2.840.10008."):
        return False
    return any(ch.isalnum() for ch in value)


def meaningful_values(texts: Iterable[str], kind: str) -> set[PhiValue]:
    """The texts that pass the false-positive rule, as PhiValues of `kind`."""
    return {PhiValue(clean_value(t), kind) for t in texts if is_meaningful(t)}


class MergedValues(list[PhiValue]):
    """Values already merged by `as_values` (texts clean, meaningful and distinct when casefolded, one
    kind each), perhaps relabelled: `as_values` of them is only their order, so it skips the merge."""


def _value_order(value: PhiValue) -> tuple[str, int, str]:
    return value.kind, len(value.text), value.text


def as_values(values: Iterable[PhiLike]) -> list[PhiValue]:
    """Normalise mixed input (plain strings get kind 'value'), drop what is not meaningful, dedupe."""
    if isinstance(values, MergedValues):
        return sorted(values, key=_value_order)
    kinds: dict[str, set[str]] = {}
    texts: dict[str, str] = {}
    for value in values:
        item = value if isinstance(value, PhiValue) else PhiValue(clean_value(value), "value")
        if is_meaningful(item.text):
            key = clean_value(item.text).casefold()
            kinds.setdefault(key, set()).add(item.kind)
            texts.setdefault(key, clean_value(item.text))
    # One value found under several kinds (StudyDate equal to SeriesDate) reports them all.
    merged = [PhiValue(texts[key], "/".join(sorted(kinds[key]))) for key in kinds]
    return sorted(merged, key=_value_order)


def name_variants(name: str) -> list[str]:
    """A person's name as written, its components, and the spellings other systems write it in.

    Each '='-group of a DICOM PN ('FAMILY^GIVEN^MIDDLE^PREFIX^SUFFIX'), 'FAMILY, GIVEN' and 'GIVEN
    [MIDDLE] FAMILY' give: the components, 'GIVEN FAMILY', 'FAMILY GIVEN', 'FAMILY, GIVEN',
    'FAMILY,GIVEN', 'FAMILY_GIVEN', 'GIVEN_FAMILY', 'FAMILY^GIVEN', 'GIVEN^FAMILY' and all
    components in order, with GIVEN both as the first given name and with the middle names.
    Which variants count is still the false-positive rule (is_meaningful).
    """
    out = [name]
    for group in name.split("="):
        parts, family, givens = _name_parts(group)
        out += parts
        if len(parts) >= 2:
            out.append(" ".join(parts))
        for given in givens:
            joined = given.replace(" ", "_")
            out += [
                f"{given} {family}",
                f"{family} {given}",
                f"{family}, {given}",
                f"{family},{given}",
                f"{family}_{joined}",
                f"{joined}_{family}",
                f"{family}^{given}",
                f"{given}^{family}",
            ]
    return list(dict.fromkeys(text for text in out if text.strip()))


def name_parts(group: str) -> list[str]:
    """The components of one '='-group of a person name, in any of the spellings name_variants reads."""
    return _name_parts(group)[0]


def _name_parts(group: str) -> tuple[list[str], str, list[str]]:
    """(components, family name, given-name spellings) of one name; no given names if one word."""
    if "^" in group:
        parts = [p.strip() for p in group.split("^") if p.strip()]
        family, rest = (parts[0], parts[1:3]) if parts else ("", [])
    elif "," in group:
        family, _, given = group.partition(",")
        parts = [p for p in (family.strip(), *given.split()) if p]
        family, rest = family.strip(), given.split()
    else:
        parts = group.split()
        family, rest = (parts[-1], parts[:-1]) if parts else ("", [])
    if not family or not rest:
        return parts, family, []
    return parts, family, list(dict.fromkeys([rest[0], " ".join(rest)]))


def element_texts(elem: Any) -> list[str]:
    """A pydicom element's value as texts to match; numbers and values over MAX_STRUCTURED_BYTES give none."""
    value = elem.value
    if value is None or value == "":
        return []
    if elem.VR == "PN":
        items = value if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue" else [value]
        return [str(v) for v in items if v is not None]
    if isinstance(value, bytes | bytearray):
        if len(value) > MAX_STRUCTURED_BYTES:
            return []
        return [bytes(value).decode("latin-1").strip("\x00 ")]
    if isinstance(value, str):
        return [value]
    if isinstance(value, Iterable):
        return [str(v) for v in value if v is not None and not isinstance(v, int | float)]
    if isinstance(value, int | float):
        return []
    return [str(value)]
