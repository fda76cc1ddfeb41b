"""Harvest identifying values from inputs and search de-identified outputs for them.

Harvest (in the worker that reads the input; values never leave its memory):
- `harvest_dicom(ds, profile)`: text of every attribute the Basic Profile (with the run's options)
  removes, empties, replaces or dummies, at every depth, plus private text elements. Attributes the
  profile or the options keep (K) or clean (C), and `--keep` attributes, are not harvested: their
  values may legitimately stay. PN values add their components and common re-orderings; DA/DT
  values add other common date spellings.
- `harvest_path(path, root)`: the name and stem of the file (and of the folders below `root`), and
  their tokens that hold a capital letter or a digit; all-lowercase words ('truncated', 'notes')
  are descriptive and would collide with ordinary English in messages.
- `harvest_tiff_metadata(source)`: PHI-keyed fields of slide descriptions (Aperio `Filename`,
  `Date`, `User`, `Barcode`...; Philips `DICOM_PATIENT_*`...), and DocumentName, PageName, Artist,
  HostComputer, Copyright, UserComment, DateTime of every IFD.
- `harvest_text(text, kind)`: lines and tokens of free text such as OCR output of a label.

Which values count (the false-positive rule), applied by `PhiValue` normalisation:
- shorter than MIN_LEN (4) characters after trimming: dropped ('M', 'F', 'DOE');
- digits only and shorter than 6 digits: dropped (instance numbers, years, small counters);
- one character repeated ('0000', 'XXXX'), a generic word ('YES', 'NONE', 'ANONYMOUS',
  'REMOVED', 'UNKNOWN', file-type and folder words), a placeholder date ('19000101'), or a
  standard DICOM UID (1.2.840.10008.*): dropped. These are also the only values the de-identifier
  inserts itself besides keyed pseudonyms and new UIDs, which cannot equal an input value except
  by a 2^-64 chance.

How values are matched (case-insensitively):
- in metadata text (DICOM element values at every depth including file meta, TIFF text tags of
  every IFD including XMP, and the output's relative path): values of fewer than 8 characters
  must stand as a whole token (no letter or digit on either side), digit-only values must have
  no digit on either side (so '20240115' is not found inside a random '2.25.…' UID), longer
  values match anywhere;
- in the raw bytes of the whole output (ASCII/UTF-8, Latin-1, UTF-16LE and UTF-16BE): only values
  specific enough that chance matches in gigabytes of compressed pixels are negligible (at least
  RAW_MIN_BITS bits: about 9 letters or 14 digits).

A `LeakHit` names the output, the kind of value (the attribute keyword, 'path', 'tiff:…', 'ocr')
and where it was found; never the value. `LeakHit.describe()` is safe to print or log: when the
output's own name holds the leaked value, the name is replaced by a hash of it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import math
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from deid.settings import ProfileSettings, is_glob, parse_tag
from deid.verify.tiffwalk import TiffParseError, TiffText, iter_text_tags

MIN_LEN = 4
MIN_DIGITS = 6
LONG_LEN = 8
RAW_MIN_BITS = 60.0
RAW_CHUNK = 16 * 1024 * 1024
PIXEL_DATA_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}
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
_BROKEN = re.compile(r"end of file|delimiter|truncat|expected|could not|invalid tag", re.IGNORECASE)
_TEXT_VRS = {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR", "UI", "TM"}
_HARVEST_VRS = {"AE", "AS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR", "UI"}
_OPTION_NAMES = {
    "retain_long_full_dates": "long_full_dates",
    "retain_long_modified_dates": "long_modified_dates",
    "clean_descriptors": "clean_descriptors",
    "clean_graphics": "clean_graphics",
    "retain_uids": "uids",
    "retain_patient_chars": "patient_chars",
    "retain_device_id": "device_id",
    "retain_institution_id": "institution_id",
    "retain_safe_private": "safe_private",
}
# Slide description fields that identify a patient, a person, a case or a date.
_PHI_KEY = re.compile(
    r"(file ?name|filename|^date$|date ?time|scan ?date|user|operator|barcode|patient|accession|"
    r"case|specimen|label|physician|doctor|surgeon|^name$|birth|mrn|title|institution|hospital)",
    re.IGNORECASE,
)
_TEXT_TAG_KINDS = {269, 285, 315, 316, 33432, 37510, 65427}
_DATE_TAGS = {306, 36867, 36868}


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


# ---------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------


def _clean(text: str) -> str:
    return text.replace("\x00", " ").strip()


def is_meaningful(text: str) -> bool:
    """The false-positive rule of this module's docstring."""
    value = _clean(text)
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


def _date_variants(da: str) -> list[str]:
    if not re.fullmatch(r"\d{8}", da):
        return [da]
    y, m, d = da[:4], da[4:6], da[6:]
    return [da, f"{y}-{m}-{d}", f"{y}/{m}/{d}", f"{y}:{m}:{d}", f"{m}/{d}/{y}", f"{d}.{m}.{y}", f"{m}/{d}/{y[2:]}"]


def _pn_variants(pn: str) -> list[str]:
    out = [pn]
    for group in pn.split("="):
        parts = [p.strip() for p in group.split("^") if p.strip()]
        out.extend(parts)
        if len(parts) >= 2:
            family, given = parts[0], parts[1]
            out += [
                " ".join(parts),
                f"{given} {family}",
                f"{family}, {given}",
                f"{family},{given}",
                f"{family}_{given}",
                f"{given}_{family}",
                f"{given}^{family}",
            ]
    return out


def _values(texts: Iterable[str], kind: str) -> set[PhiValue]:
    return {PhiValue(_clean(t), kind) for t in texts if is_meaningful(t)}


def as_values(values: Iterable[PhiLike]) -> list[PhiValue]:
    """Normalise mixed input (plain strings get kind 'value'), drop what is not meaningful, dedupe."""
    kinds: dict[str, set[str]] = {}
    texts: dict[str, str] = {}
    for value in values:
        item = value if isinstance(value, PhiValue) else PhiValue(_clean(value), "value")
        if is_meaningful(item.text):
            key = _clean(item.text).casefold()
            kinds.setdefault(key, set()).add(item.kind)
            texts.setdefault(key, _clean(item.text))
    # One value found under several kinds (StudyDate equal to SeriesDate) reports them all.
    merged = [PhiValue(texts[key], "/".join(sorted(kinds[key]))) for key in kinds]
    return sorted(merged, key=lambda v: (v.kind, len(v.text), v.text))


# ---------------------------------------------------------------------------------------------
# Harvest
# ---------------------------------------------------------------------------------------------


def _active_options(profile: ProfileSettings) -> set[str]:
    return {name for field_name, name in _OPTION_NAMES.items() if getattr(profile, field_name)}


def _kept_tags(profile: ProfileSettings) -> tuple[set[int], set[str]]:
    tags: set[int] = set()
    keywords: set[str] = set()
    for item in profile.keep:
        tag = parse_tag(item)
        if tag is None:
            keywords.add(item.strip())
        else:
            tags.add(tag)
    return tags, keywords


def _profile_action(tag: int, options: set[str]) -> str | None:
    """The effective action code for a non-private tag, or None when the profile does not list it."""
    from deid.dicom import profile_table as table

    row = table.BY_TAG.get(tag)
    if row is None:
        for mask, value, masked_row in table.MASKED:
            if tag & mask == value:
                row = masked_row
                break
    if row is None:
        return None
    action = row.basic
    for name in options:
        code = row.option(name)
        if code is not None:
            action = code
    return action


def _harvest_action(action: str | None, options: set[str]) -> bool:
    if action is None:
        return False
    # K keeps the value; C keeps a cleaned value. Under the modified-dates option C means shifted,
    # so the original value must still be gone.
    if action == "K":
        return False
    return not (action == "C" and "long_modified_dates" not in options)


def harvest_dicom(ds: Any, profile: ProfileSettings | None = None) -> frozenset[PhiValue]:
    """Identifying values of a pydicom Dataset (file meta included), at every depth.

    `profile`: the run's ProfileSettings, so that values the options retain are not expected gone.
    """
    profile = profile or ProfileSettings()
    options = _active_options(profile)
    kept_tags, kept_keywords = _kept_tags(profile)
    found: set[PhiValue] = set()
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        _harvest_dataset(meta, options, kept_tags, kept_keywords, found, depth=0)
    _harvest_dataset(ds, options, kept_tags, kept_keywords, found, depth=0)
    return frozenset(found)


def harvest_private_texts(texts: Iterable[str]) -> frozenset[PhiValue]:
    """Values of private elements that were removed unparsed (deid.dicom.deidentify.read_for_profile)."""
    return frozenset(_values(texts, "private"))


def _harvest_dataset(
    ds: Any, options: set[str], kept_tags: set[int], kept_keywords: set[str], found: set[PhiValue], depth: int
) -> None:
    if depth > 64:
        return
    for elem in ds:  # this level; sequences recurse below
        tag = int(elem.tag)
        vr = elem.VR
        private = bool((tag >> 16) & 1)
        if not private and vr != "SQ" and vr not in _HARVEST_VRS:
            continue  # numbers, codes, binary: the cheap test first, most elements stop here
        keyword = elem.keyword or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
        if tag in kept_tags or keyword in kept_keywords:
            continue
        if vr == "SQ":
            for item in elem.value or ():
                _harvest_dataset(item, options, kept_tags, kept_keywords, found, depth + 1)
            continue
        if private:
            if (tag & 0xFFFF) < 0x0100 or "safe_private" in options:
                continue  # private creator strings name a vendor, not a person
            found |= _values(_texts_of(elem), "private")
            continue
        if not _harvest_action(_profile_action(tag, options), options):
            continue
        texts = _texts_of(elem)
        if elem.VR == "UI":
            texts = [t for t in texts if not t.startswith("1.2.840.10008.")]
        expanded: list[str] = []
        for text in texts:
            if elem.VR == "PN":
                expanded += _pn_variants(text)
            elif elem.VR == "DA":
                expanded += _date_variants(text)
            elif elem.VR == "DT":
                expanded += [text, *_date_variants(text[:8])]
            else:
                expanded.append(text)
        found |= _values(expanded, keyword)


def _texts_of(elem: Any) -> list[str]:
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


def harvest_path(path: str, root: str | None = None) -> frozenset[PhiValue]:
    """Meaningful components of an input's path: below `root` if given, else the file name only."""
    posix = path.replace("\\", "/")
    parts: list[str]
    if root:
        base = root.replace("\\", "/").rstrip("/")
        rel = posix[len(base) :].lstrip("/") if posix.startswith(base + "/") else PurePosixPath(posix).name
        parts = [p for p in rel.split("/") if p and not is_glob(p)]
    else:
        parts = [PurePosixPath(posix).name]
    texts: list[str] = []
    for part in parts:
        stem = part
        while "." in stem and len(stem.rsplit(".", 1)[1]) <= 5:
            stem = stem.rsplit(".", 1)[0]
        tokens = [t for t in re.split(r"[\s_.\-+,;()\[\]{}]+", stem) if t and t != stem]
        # All-lowercase words in names are descriptive ('truncated', 'notes', 'chest') and collide
        # with ordinary English in outputs; identifying tokens carry a capital or a digit. The rule
        # holds for a one-word stem ('misc/truncated.dcm') as for the tokens of a longer one.
        texts += [t for t in [part, stem, *tokens] if not _descriptive_word(t)]
    return frozenset(_values(texts, "path"))


def _descriptive_word(token: str) -> bool:
    return (token.isalpha() and token.islower()) or (token.isdigit() and len(token) < 4)


def harvest_text(text: str, kind: str = "ocr") -> frozenset[PhiValue]:
    """Lines and word tokens of free text (OCR of a label or macro image)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    tokens = [t for line in lines for t in re.split(r"[\s,;:|]+", line)]
    tokens = [t.strip(".'\"()[]{}") for t in tokens]
    return frozenset(_values(lines + tokens, kind))


def harvest_tiff_metadata(source: str | Path | bytes | BinaryIO) -> frozenset[PhiValue]:
    """PHI-keyed description fields and identifying text tags of every IFD of a TIFF-based slide."""
    found: set[PhiValue] = set()
    try:
        tags = list(iter_text_tags(source))
    except (TiffParseError, OSError, ValueError):
        return frozenset()
    for item in tags:
        text = _decode(item.data)
        if item.tag == 270:
            for key, value in _description_fields(text):
                kind = f"tiff:ImageDescription:{key}"
                if re.search(r"date", key, re.IGNORECASE):
                    found |= _values(_date_texts(value), kind)
                else:
                    found |= _values([value], kind)
        elif item.tag in _TEXT_TAG_KINDS:
            found |= _values([text], f"tiff:{item.name}")
        elif item.tag in _DATE_TAGS:
            found |= _values(_date_texts(text), f"tiff:{item.name}")
    return frozenset(found)


def _decode(data: bytes) -> str:
    data = data.rstrip(b"\x00")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _date_texts(value: str) -> list[str]:
    """A date as written, plus the DICOM DA form and its variants when it can be recognised."""
    out = [value.strip()]
    match = re.search(r"(\d{4})[:/\-.](\d{1,2})[:/\-.](\d{1,2})", value)
    if match:
        y, m, d = match.groups()
        out += _date_variants(f"{y}{int(m):02d}{int(d):02d}")
    match = re.search(r"\b(\d{1,2})/(\d{1,2})/(\d{2,4})\b", value)
    if match:
        m, d, y = match.groups()
        year = y if len(y) == 4 else ("20" + y if int(y) < 70 else "19" + y)
        out += _date_variants(f"{year}{int(m):02d}{int(d):02d}")
    match = re.search(r"\b(\d{8})\b", value)
    if match:
        out += _date_variants(match.group(1))
    return out


def _description_fields(text: str) -> Iterator[tuple[str, str]]:
    """(key, value) pairs of PHI-keyed fields in Aperio, key=value and Philips/XML descriptions."""
    for segment in re.split(r"[|\r\n]+", text):
        if "=" in segment and "<" not in segment:
            key, _, value = segment.partition("=")
            key = key.strip()
            if key and _PHI_KEY.search(key):
                yield key, value.strip()
    # Philips TIFF: <Attribute Name="DICOM_PATIENT_NAME" ...>value</Attribute>
    for match in re.finditer(r'Name="([A-Za-z0-9_]+)"[^>]*>([^<]*)<', text):
        key, value = match.groups()
        if _PHI_KEY.search(key.replace("_", " ")) or "DATE" in key.upper():
            yield key, value.strip().strip('"')
    # Generic XML elements: <PatientName>value</PatientName>
    for match in re.finditer(r"<([A-Za-z][\w:.-]*)[^>]*>([^<]+)</\1>", text):
        key, value = match.groups()
        if _PHI_KEY.search(key.split(":")[-1]):
            yield key, value.strip()


# ---------------------------------------------------------------------------------------------
# Matching
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Needle:
    value: PhiValue
    folded: str
    digits: bool
    short: bool
    raw: tuple[bytes, ...]


_DIGIT_BITS = math.log2(256 / 10)  # the fewest bits a character can carry here
_ALPHA_BITS = math.log2(256 / 2)


def _bits(text: str) -> float:
    bits = 0.0
    for ch in text:
        if ch.isdigit():
            bits += _DIGIT_BITS
        elif ch.isalpha():
            bits += _ALPHA_BITS
        else:
            bits += 8.0
    return bits


def _raw_searchable(text: str) -> bool:
    """At least RAW_MIN_BITS bits; long values are, whatever their characters."""
    return len(text) * _DIGIT_BITS >= RAW_MIN_BITS or _bits(text) >= RAW_MIN_BITS


def _needles(values: Iterable[PhiLike]) -> list[_Needle]:
    out = []
    for value in as_values(values):
        folded = value.text.casefold()
        raw: tuple[bytes, ...] = ()
        if _raw_searchable(folded):
            if folded.isascii():
                # UTF-16 text of ASCII is found in the de-interleaved halves of the data (see
                # _scan_raw), so the pattern is plain ASCII: no NUL bytes to slow the search down.
                encodings = {folded.encode("ascii")}
            else:
                encodings = {folded.encode("utf-8"), folded.encode("utf-16-le"), folded.encode("utf-16-be")}
                with contextlib.suppress(UnicodeEncodeError):
                    encodings.add(folded.encode("latin-1"))
            raw = tuple(sorted(encodings))
        out.append(
            _Needle(value, folded, folded.isdigit(), len(folded) < LONG_LEN and not folded.isdigit(), raw)
        )
    return out


def _found_in(text_folded: str, needle: _Needle) -> bool:
    start = text_folded.find(needle.folded)
    while start >= 0:
        end = start + len(needle.folded)
        before = text_folded[start - 1] if start > 0 else ""
        after = text_folded[end] if end < len(text_folded) else ""
        if needle.digits:
            ok = not before.isdigit() and not after.isdigit()
        elif needle.short:
            ok = not before.isalnum() and not after.isalnum()
        else:
            ok = True
        if ok:
            return True
        start = text_folded.find(needle.folded, start + 1)
    return False


def scan_text(text: str, values: Iterable[PhiLike] | list[_Needle], relpath: str, location: str) -> list[LeakHit]:
    """Search one metadata text for the values (the metadata matching rule)."""
    needles = _ensure_needles(values)
    folded = text.casefold()
    return [LeakHit(relpath, n.value.kind, location) for n in needles if _found_in(folded, n)]


def _ensure_needles(values: Iterable[PhiLike] | list[_Needle]) -> list[_Needle]:
    items = list(values)
    if items and all(isinstance(v, _Needle) for v in items):
        return items  # type: ignore[return-value]
    return _needles(items)  # type: ignore[arg-type]


def scan_bytes(data: bytes, values: Iterable[PhiLike], min_len: int = MIN_LEN, relpath: str = "") -> list[LeakHit]:
    """Search raw bytes (ASCII/UTF-8, Latin-1, UTF-16LE/BE, case-insensitively).

    Values of at least RAW_MIN_BITS bits match anywhere; shorter values (down to `min_len`) are
    searched in the text decodings of `data` with the metadata rule. Use it on metadata-sized byte
    strings; for whole files `scan_output` applies only the raw rule.
    """
    needles = [n for n in _needles(values) if len(n.folded) >= min_len]
    hits = _scan_raw(io.BytesIO(data), needles, relpath)
    if len(data) <= MAX_STRUCTURED_BYTES:
        hits += _scan_decoded(data, needles, relpath, "bytes")
    return _dedupe(hits)


def _scan_decoded(data: bytes, needles: list[_Needle], relpath: str, location: str) -> list[LeakHit]:
    return _match_pieces(_decoded_pieces(data, location), needles, relpath)


def _decoded_pieces(data: bytes, location: str) -> list[tuple[str, str]]:
    texts = {data.decode("latin-1")}
    for codec in ("utf-8", "utf-16-le", "utf-16-be"):
        texts.add(data.decode(codec, errors="ignore"))
    return [(location, text) for text in texts]


def _match_pieces(pieces: list[tuple[str, str]], needles: list[_Needle], relpath: str) -> list[LeakHit]:
    """scan_text over many (location, text) pieces, with one search per needle over all of them.

    Most needles occur nowhere: one find in the joined text rules them out at C speed; only a needle
    found there is looked for piece by piece, to name its location and apply the word-boundary rule.
    """
    if not pieces or not needles:
        return []
    folded = [(where, text.casefold()) for where, text in pieces]
    # Needles never hold NUL (see _clean), so none can match across the separator.
    joined = "\x00".join(text for _, text in folded)
    hits: list[LeakHit] = []
    for needle in needles:
        if needle.folded not in joined:
            continue
        hits += [LeakHit(relpath, needle.value.kind, where) for where, text in folded if _found_in(text, needle)]
    return hits


def _scan_raw(handle: BinaryIO, needles: list[_Needle], relpath: str) -> list[LeakHit]:
    """Raw search: ASCII/UTF-8/Latin-1 in the data, UTF-16LE/BE of ASCII values in its even and
    odd bytes (a candidate there counts only when the bytes between its letters are NUL)."""
    patterns = _minimal_patterns([(n, p) for n in needles for p in n.raw])
    if not patterns:
        return []
    overlap = 2 * max(len(p) for _, p in patterns) + 2
    hits: dict[int, LeakHit] = {}
    tail = b""
    position = 0
    while True:
        chunk = handle.read(RAW_CHUNK)
        if not chunk:
            break
        window = (tail + chunk).lower()
        base = position - len(tail)
        halves = (window[0::2], window[1::2])
        for needle, pattern in patterns:
            if id(needle) in hits:
                continue
            at = window.find(pattern)
            if at < 0 and pattern.isascii():
                at = _find_utf16(window, halves, pattern)
            if at >= 0:
                hits[id(needle)] = LeakHit(relpath, needle.value.kind, f"bytes@{base + at}")
        position += len(chunk)
        tail = (tail + chunk)[-overlap:]
    return list(hits.values())


def _minimal_patterns(patterns: list[tuple[_Needle, bytes]]) -> list[tuple[_Needle, bytes]]:
    """Drop patterns that contain another pattern: finding the shorter one is necessary anyway."""
    ordered = sorted(patterns, key=lambda item: len(item[1]))
    kept: list[tuple[_Needle, bytes]] = []
    for needle, pattern in ordered:
        if not any(other in pattern for _, other in kept):
            kept.append((needle, pattern))
    return kept


def _find_utf16(window: bytes, halves: tuple[bytes, bytes], pattern: bytes) -> int:
    le = pattern.decode("ascii").encode("utf-16-le")
    be = pattern.decode("ascii").encode("utf-16-be")
    for parity, half in enumerate(halves):
        at = half.find(pattern)
        while at >= 0:
            start = 2 * at + parity
            if window[start : start + len(le)] == le or window[start - 1 : start - 1 + len(be)] == be:
                return start
            at = half.find(pattern, at + 1)
    return -1


def _dedupe(hits: Iterable[LeakHit]) -> list[LeakHit]:
    seen: dict[tuple[str, str, str], LeakHit] = {}
    for hit in hits:
        seen.setdefault((hit.output, hit.value_kind, hit.location), hit)
    return list(seen.values())


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _scan_dicom_structure(data: BinaryIO, needles: list[_Needle], relpath: str) -> list[LeakHit]:
    import pydicom

    data.seek(0)
    pieces: list[tuple[str, str]] = []
    hits: list[LeakHit] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = pydicom.dcmread(data, force=True)
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            hits += _dataset_pieces(meta, relpath, "dicom:meta", 0, pieces)
        hits += _dataset_pieces(ds, relpath, "dicom", 0, pieces)
    broken = [w for w in caught if _BROKEN.search(str(w.message))]
    if broken or not ds._dict:
        raise ValueError("output DICOM is truncated or malformed")
    return hits + _match_pieces(pieces, needles, relpath)


# VRs whose values are numbers (pydicom gives int/float, which carry no identifying text here).
_NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "SV", "UV", "AT", "DS", "IS"})
# Python codecs that decode every DICOM value the way pydicom does for a single-valued character set.
_PLAIN_CODECS = frozenset({"iso8859", "latin_1", "iso8859_1", "utf_8", "ascii"})


def _plain_codec(ds: Any) -> str | None:
    """The one Python codec of `ds`'s character set when it is that simple (no ISO 2022 switching)."""
    try:
        encodings = ds._character_set
    except (AttributeError, LookupError, ValueError):
        return None
    if isinstance(encodings, str):
        encodings = [encodings]
    if len(encodings) != 1:
        return None
    codec = str(encodings[0]).lower().replace("-", "_")
    return codec if codec in _PLAIN_CODECS else None


def _dataset_pieces(ds: Any, relpath: str, prefix: str, depth: int, pieces: list[tuple[str, str]]) -> list[LeakHit]:
    """Append (location, text) for every element of `ds` at every depth; returns 'unverifiable' hits.

    Text values still in their raw form are decoded here directly when the character set is a plain
    one: pydicom's per-element conversion would cost more than the search. Sequences, and anything
    else, go through pydicom.
    """
    if depth > 64:
        return [LeakHit(relpath, "unverifiable", f"{prefix}:sequence nesting deeper than 64")]
    hits: list[LeakHit] = []
    codec = _plain_codec(ds)
    for tag in list(ds._dict):
        tag = int(tag)
        if tag in PIXEL_DATA_TAGS:
            continue
        where = f"{prefix}{_tag_text(tag)}"
        raw = ds._dict[tag]
        is_raw = bool(getattr(raw, "is_raw", False))
        value = getattr(raw, "value", None)
        vr = raw.VR
        if vr is None and is_raw and raw.length != 0xFFFFFFFF:
            vr = _dictionary_vr(tag)
        if is_raw and isinstance(value, bytes) and vr not in (None, "SQ", "UN"):
            if vr in _NUMBER_VRS:
                continue
            if vr in _TEXT_VRS and codec is not None:
                text = value.decode(codec, errors="replace")
                pieces += [(where, part.strip("\x00 ")) for part in text.split("\\") if part.strip("\x00 ")]
                continue
        elem = ds[tag]
        if elem.VR == "SQ":
            for index, item in enumerate(elem.value or ()):
                hits += _dataset_pieces(item, relpath, f"{where}[{index}]>", depth + 1, pieces)
            continue
        value = elem.value
        if isinstance(value, bytes | bytearray):
            if len(value) <= MAX_STRUCTURED_BYTES:
                pieces += _decoded_pieces(bytes(value), where)
            continue
        pieces += [(where, text) for text in _texts_of(elem)]
    return hits


def _dictionary_vr(tag: int) -> str | None:
    from pydicom.datadict import dictionary_VR

    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return None
    return None if " or " in vr else vr


def _scan_tiff_structure(handle: BinaryIO, needles: list[_Needle], relpath: str) -> list[LeakHit]:
    pieces: list[tuple[str, str]] = []
    handle.seek(0)
    item: TiffText
    for item in iter_text_tags(handle):
        pieces += _decoded_pieces(item.data, f"tiff:ifd{item.ifd}:{item.name}")
    return _match_pieces(pieces, needles, relpath)


def scan_output(
    source: str | Path | bytes | BinaryIO, relpath: str, values: Iterable[PhiLike]
) -> list[LeakHit]:
    """Search one output for the values: its relative path, its structure, its raw bytes.

    `source`: the output's bytes, a local path, or an open binary file (seekable). DICOM outputs
    are parsed (every element at every depth, file meta included, pixel data only in the raw
    pass); TIFF outputs are walked (every text tag of every IFD, SubIFDs, EXIF, XMP). An output
    that claims to be DICOM or TIFF but cannot be parsed is reported as kind 'unverifiable'.
    """
    needles = _needles(values)
    hits = scan_text(relpath.replace("/", " / "), needles, relpath, "relpath")
    handle, owned = _as_handle(source)
    try:
        head = handle.read(132)
        handle.seek(0)
        if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            try:
                hits += _scan_tiff_structure(handle, needles, relpath)
            except (TiffParseError, OSError, ValueError) as exc:
                hits.append(LeakHit(relpath, "unverifiable", f"tiff:{type(exc).__name__}"))
        elif head[128:132] == b"DICM" or relpath.lower().endswith(".dcm"):
            try:
                hits += _scan_dicom_structure(handle, needles, relpath)
            except Exception as exc:  # noqa: BLE001 - any parse failure means: cannot verify
                hits.append(LeakHit(relpath, "unverifiable", f"dicom:{type(exc).__name__}"))
        handle.seek(0)
        hits += _scan_raw(handle, needles, relpath)
    finally:
        if owned:
            handle.close()
    hits = _dedupe(hits)
    if any(h.location == "relpath" for h in hits):
        hits = [dataclasses.replace(h, name_leaks=True) for h in hits]
    return hits


def _as_handle(source: str | Path | bytes | BinaryIO) -> tuple[BinaryIO, bool]:
    if isinstance(source, bytes | bytearray | memoryview):
        return io.BytesIO(bytes(source)), True
    if isinstance(source, str | Path):
        return open(source, "rb"), True
    return source, False


def summarize(hits: Iterable[LeakHit]) -> str:
    """A PHI-free one-line message for a LeakDetectedError / dead-letter record."""
    items = list(hits)
    kinds = sorted({h.value_kind for h in items})
    where = sorted({h.location.split("@")[0] for h in items})
    name_leak = any(h.location == "relpath" for h in items)
    return (
        f"{len(items)} identifying value(s) of the input found in the output "
        f"(kinds: {', '.join(kinds)}; locations: {', '.join(where[:8])}"
        f"{'; the output name itself' if name_leak else ''}); the output was quarantined"
    )


def quarantine_relpath(input_sha256: str, relpath: str, index: int = 0) -> str:
    """Where a leaking output goes: quarantine/<input sha256>/<n>.<ext>; never the leaking name."""
    suffix = PurePosixPath(relpath).suffix.lower()
    if not re.fullmatch(r"\.[a-z0-9]{1,5}", suffix):
        suffix = ".bin"
    return f"quarantine/{input_sha256}/{index}{suffix}"
