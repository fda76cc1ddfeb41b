"""Search de-identified outputs for the identifying values harvested from their inputs.

`scan_output` searches one output (its relative path, its DICOM or TIFF structure, its raw bytes);
`scan_text` and `scan_bytes` search one piece of text or bytes; `summarize` and `quarantine_relpath`
report a leak without naming the value. Which values count is deid/verify/values.py's rule.

How values are matched (case-insensitively):
- in metadata text (DICOM element values at every depth including file meta, TIFF text tags of
  every IFD including XMP, and the output's relative path): values of fewer than 8 characters
  must stand as a whole token (no letter or digit on either side), digit-only values must have
  no digit on either side (so '20240115' is not found inside a random '2.25.…' UID), longer
  values match anywhere;
- in the raw bytes of the whole output (ASCII/UTF-8, Latin-1, UTF-16LE and UTF-16BE): only values
  specific enough that chance matches in gigabytes of compressed pixels are negligible (at least
  RAW_MIN_BITS bits: about 9 letters or 14 digits);
- in text outputs (`scan_text_output`: records, reports, any file `looks_like_text`): the raw rule
  plus the metadata rule over the whole text, read as UTF-8 (else Latin-1) line by line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import math
import re
import warnings
from collections.abc import Container, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import pydicom
from pydicom.datadict import dictionary_VR

from deid.dicom.elements import is_nameable
from deid.verify.tiffwalk import TiffParseError, TiffText, iter_text_tags
from deid.verify.values import MAX_STRUCTURED_BYTES, MIN_LEN, LeakHit, PhiLike, PhiValue, as_values, element_texts

LONG_LEN = 8
RAW_MIN_BITS = 60.0
RAW_CHUNK = 16 * 1024 * 1024
PIXEL_DATA_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}
_BROKEN = re.compile(r"end of file|delimiter|truncat|expected|could not|invalid tag", re.IGNORECASE)
TEXT_VRS = {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR", "UI", "TM"}


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


def needles_of(values: Iterable[PhiLike]) -> list[_Needle]:
    out = []
    for value in as_values(values):
        folded = value.text.casefold()
        raw: tuple[bytes, ...] = ()
        if _raw_searchable(folded):
            if folded.isascii():
                # UTF-16 text of ASCII is found in the de-interleaved halves of the data (see
                # scan_raw), so the pattern is plain ASCII: no NUL bytes to slow the search down.
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
    return needles_of(items)  # type: ignore[arg-type]


def scan_bytes(data: bytes, values: Iterable[PhiLike], min_len: int = MIN_LEN, relpath: str = "") -> list[LeakHit]:
    """Search raw bytes (ASCII/UTF-8, Latin-1, UTF-16LE/BE, case-insensitively).

    Values of at least RAW_MIN_BITS bits match anywhere; shorter values (down to `min_len`) are
    searched in the text decodings of `data` with the metadata rule. Use it on metadata-sized byte
    strings; for whole files `scan_output` applies only the raw rule.
    """
    needles = [n for n in needles_of(values) if len(n.folded) >= min_len]
    hits = scan_raw(io.BytesIO(data), needles, relpath)
    if len(data) <= MAX_STRUCTURED_BYTES:
        hits += _scan_decoded(data, needles, relpath, "bytes")
    return _dedupe(hits)


def _scan_decoded(data: bytes, needles: list[_Needle], relpath: str, location: str) -> list[LeakHit]:
    return match_pieces(decoded_pieces(data, location), needles, relpath)


def decoded_pieces(data: bytes, location: str) -> list[tuple[str, str]]:
    texts = {data.decode("latin-1")}
    for codec in ("utf-8", "utf-16-le", "utf-16-be"):
        texts.add(data.decode(codec, errors="ignore"))
    return [(location, text) for text in texts]


def match_pieces(pieces: list[tuple[str, str]], needles: list[_Needle], relpath: str) -> list[LeakHit]:
    """scan_text over many (location, text) pieces, with one search per needle over all of them.

    Most needles occur nowhere: one find in the joined text rules them out at C speed; only a needle
    found there is looked for piece by piece, to name its location and apply the word-boundary rule.
    """
    if not pieces or not needles:
        return []
    folded = [(where, text.casefold()) for where, text in pieces]
    # Needles never hold NUL (see values.clean_value), so none can match across the separator.
    joined = "\x00".join(text for _, text in folded)
    hits: list[LeakHit] = []
    for needle in needles:
        if needle.folded not in joined:
            continue
        hits += [LeakHit(relpath, needle.value.kind, where) for where, text in folded if _found_in(text, needle)]
    return hits


def scan_raw(handle: BinaryIO, needles: list[_Needle], relpath: str) -> list[LeakHit]:
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


def location_tag(tag: int, present: Container[int] = ()) -> str:
    """A location's tag; '(unlisted tag)' for one that may be input text read as a header (is_nameable)."""
    text = _nameable_text(tag)
    if text is not None:
        return text
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})" if is_nameable(tag, present) else "(unlisted tag)"


@functools.lru_cache(maxsize=8192)
def _nameable_text(tag: int) -> str | None:
    """The text of a tag that is nameable whatever else the dataset holds (a dictionary tag, a group
    length, a private creator), else None. Memoised: dictionary look-ups cost more than the search."""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})" if is_nameable(tag, ()) else None


def _scan_dicom_structure(data: BinaryIO, needles: list[_Needle], relpath: str) -> list[LeakHit]:
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
    return hits + match_pieces(pieces, needles, relpath)


# VRs whose values are numbers (pydicom gives int/float, which carry no identifying text here).
NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "SV", "UV", "AT", "DS", "IS"})
# Python codecs that decode every DICOM value the way pydicom does for a single-valued character set.
_PLAIN_CODECS = frozenset({"iso8859", "latin_1", "iso8859_1", "utf_8", "ascii"})


def _plain_codec(ds: Any) -> str | None:
    """The one Python codec of `ds`'s character set when it is that simple (no ISO 2022 switching)."""
    try:
        encodings = ds._character_set
    except (AttributeError, LookupError, ValueError):
        return None
    return codec_of(encodings)


def codec_of(encodings: Any) -> str | None:
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
        where = f"{prefix}{location_tag(tag, ds._dict)}"
        raw = ds._dict[tag]
        is_raw = bool(getattr(raw, "is_raw", False))
        value = getattr(raw, "value", None)
        vr = raw.VR
        if vr is None and is_raw and raw.length != 0xFFFFFFFF:
            vr = dictionary_vr(tag)
        if is_raw and isinstance(value, bytes) and vr not in (None, "SQ", "UN"):
            if vr in NUMBER_VRS:
                continue
            if vr in TEXT_VRS and codec is not None:
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
                pieces += decoded_pieces(bytes(value), where)
            continue
        pieces += [(where, text) for text in element_texts(elem)]
    return hits


def dictionary_vr(tag: int) -> str | None:
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
        pieces += decoded_pieces(item.data, f"tiff:ifd{item.ifd}:{item.name}")
    return match_pieces(pieces, needles, relpath)


def scan_output(
    source: str | Path | bytes | BinaryIO, relpath: str, values: Iterable[PhiLike]
) -> list[LeakHit]:
    """Search one output for the values: its relative path, its structure, its raw bytes.

    `source`: the output's bytes, a local path, or an open binary file (seekable). DICOM outputs
    are parsed (every element at every depth, file meta included, pixel data only in the raw
    pass); TIFF outputs are walked (every text tag of every IFD, SubIFDs, EXIF, XMP). An output
    that claims to be DICOM or TIFF but cannot be parsed is reported as kind 'unverifiable'.
    """
    needles = needles_of(values)
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
        hits += scan_raw(handle, needles, relpath)
    finally:
        if owned:
            handle.close()
    return finish_hits(hits)


def finish_hits(hits: list[LeakHit]) -> list[LeakHit]:
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


TEXT_CHUNK = 4 * 1024 * 1024
TEXT_SNIFF_BYTES = 8192
# Bytes no text file holds: C0 controls other than tab, line feed, vertical tab, form feed, return.
_BINARY_BYTES = frozenset(range(32)) - {9, 10, 11, 12, 13}


def looks_like_text(head: bytes) -> bool:
    """True for a head with no NUL or other C0 control byte (JSON, HTML, CSV, INI, plain text)."""
    return bool(head) and not _BINARY_BYTES.intersection(head)


def scan_text_output(
    source: str | Path | bytes | BinaryIO,
    relpath: str,
    values: Iterable[PhiLike],
    ignore: re.Pattern[str] | None = None,
) -> list[LeakHit]:
    """Search a text output: its relative path, its raw bytes, and its whole text with the metadata
    rule (so short values count too, as whole tokens), located by line ('text:line12').

    `ignore`: text the writer itself puts there that may equal an input value by coincidence (a run
    id holds the date of the run), blanked in the relative path and the text before the search.
    """
    needles = needles_of(values)

    def blank(text: str) -> str:
        return ignore.sub(lambda m: " " * len(m.group(0)), text) if ignore else text

    hits = scan_text(blank(relpath.replace("/", " / ")), needles, relpath, "relpath")
    handle, owned = _as_handle(source)
    try:
        raw = scan_raw(handle, needles, relpath)
        handle.seek(0)
        overlap = max((len(n.folded.encode("utf-8")) for n in needles), default=0) + 2
        line, pending = 1, b""
        while True:
            chunk = handle.read(TEXT_CHUNK)
            data = pending + chunk
            if not data:
                break
            cut = data.rfind(b"\n") + 1 if chunk else len(data)
            if cut == 0:  # one very long line: search it in pieces that overlap
                cut, keep = len(data), data[-overlap:]
            else:
                keep = b""
            text = _text_of(data[:cut])
            lines = text.split("\n")
            pieces = [(f"text:line{line + i}", blank(part)) for i, part in enumerate(lines)]
            hits += match_pieces(pieces, needles, relpath)
            line += data[:cut].count(b"\n")
            pending = keep + data[cut:]
            if not chunk:
                break
    finally:
        if owned:
            handle.close()
    # A raw hit adds something only for a value the text search missed (UTF-16 text, say).
    in_text = {h.value_kind for h in hits if h.location.startswith("text:")}
    hits = _dedupe(hits + [h for h in raw if h.value_kind not in in_text])
    if any(h.location == "relpath" for h in hits):
        hits = [dataclasses.replace(h, name_leaks=True) for h in hits]
    return hits


def _text_of(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


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
