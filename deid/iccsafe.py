"""The one rule for ICC colour profiles copied from an input: keep the colour data, rewrite the text.

A profile's text tags (profileDescription 'desc', copyright 'cprt', device manufacturer and model
descriptions 'dmnd'/'dmdd', viewing conditions 'vued', and any other tag of a text type) are free
text a scanner or a user can fill with anything. `sanitize_icc` parses the profile (128-byte
header, tag table, tag data) and writes a new one:

* header: size recomputed; version, device class, colour space, PCS, rendering intent, PCS
  illuminant and the defined flag and attribute bits kept; preferred CMM, platform, device
  manufacturer and model, creator, vendor flag and attribute bits and reserved bytes zeroed; the
  date a fixed value; the profile ID (MD5) recomputed when the input had one, else left zero;
* tags of a text type ('desc', 'text', 'mluc') rewritten with fixed text in the same type; 'dtim'
  dates set to the fixed date;
* tags of a numeric colour type (curves, matrices, LUTs, XYZ, chromaticity, measurement, viewing
  conditions, signatures, number arrays, multi-process elements) copied, their reserved bytes zeroed
  and the simple types cut to the size their counts declare;
* every other tag dropped: named colours ('ncl2'), profile sequences ('pseq', 'psid'), colorant
  tables ('clrt'), PostScript and UCR/BG data, dictionaries, private and unknown types;
* tag data re-laid 4-byte aligned (shared tag data stays shared); bytes between tags, after the
  last tag or after the declared size are not copied.

`sanitize_icc` raises IccStructureError for anything it cannot parse; callers drop the profile or
replace it with `srgb_profile()`. Not covered: numbers inside the kept LUT tags (mft1/mft2/mAB/mBA/
mpet) are copied within their declared size, so slack between their sub-elements is kept.
"""

from __future__ import annotations

import hashlib
import struct
from functools import lru_cache

HEADER_BYTES = 128
MAX_TAGS = 256
FIXED_DATE = (2000, 1, 1, 0, 0, 0)
FIXED_TEXT = {b"desc": "De-identified colour profile", b"cprt": "No copyright information"}
DEFAULT_TEXT = "Not specified"
TEXT_TYPES = frozenset({b"desc", b"text", b"mluc"})
NUMERIC_TYPES = frozenset(
    {
        b"XYZ ", b"curv", b"para", b"sf32", b"uf32", b"ui08", b"ui16", b"ui32", b"ui64",
        b"mft1", b"mft2", b"mAB ", b"mBA ", b"chrm", b"meas", b"view", b"sig ", b"clro",
        b"mpet", b"cicp", b"vcgt",
    }
)  # fmt: skip
_PARA_PARAMS = {0: 1, 1: 3, 2: 4, 3: 5, 4: 7}
_ID = slice(84, 100)


class IccStructureError(ValueError):
    """The bytes are not an ICC profile this sanitizer can rebuild (the message holds no input value)."""


def sanitize_icc(data: bytes | bytearray | memoryview) -> bytes:
    """A new profile with the colour data of `data` and fixed text (see the module docstring)."""
    raw = bytes(data)
    if len(raw) < HEADER_BYTES + 4 or raw[36:40] != b"acsp":
        raise IccStructureError("not an ICC profile (no 'acsp' signature)")
    (size,) = struct.unpack_from(">I", raw, 0)
    if not HEADER_BYTES + 4 <= size <= len(raw):
        raise IccStructureError("the ICC profile's declared size does not match its bytes")
    raw = raw[:size]
    (count,) = struct.unpack_from(">I", raw, HEADER_BYTES)
    table_end = HEADER_BYTES + 4 + 12 * count
    if count > MAX_TAGS or table_end > size:
        raise IccStructureError("the ICC profile's tag table is damaged")
    version4 = raw[8] >= 4
    entries: list[tuple[bytes, bytes]] = []  # (tag signature, new tag data)
    shared: dict[tuple[int, int], bytes | None] = {}
    for index in range(count):
        signature, offset, length = struct.unpack_from(">4sII", raw, HEADER_BYTES + 4 + 12 * index)
        if offset < table_end or length < 8 or offset + length > size:
            raise IccStructureError("an ICC tag lies outside the profile")
        key = (offset, length)
        if key not in shared:
            shared[key] = _safe_tag(signature, raw[offset : offset + length], version4)
        tag = shared[key]
        if tag is not None:
            entries.append((signature, tag))
    return _assemble(_safe_header(raw), entries, had_id=any(raw[_ID]))


def _safe_header(raw: bytes) -> bytearray:
    header = bytearray(HEADER_BYTES)
    header[8:10] = raw[8:10]  # version (major, minor.bugfix); bytes 10-11 are reserved
    header[12:24] = raw[12:24]  # device class, colour space, PCS
    header[24:36] = struct.pack(">6H", *FIXED_DATE)
    header[36:40] = b"acsp"
    header[47] = raw[47] & 0x03  # embedded / not independent; the other bits are vendor or reserved
    header[63] = raw[63] & 0x0F  # reflective/transparency, glossy/matte, positive/negative, colour/B&W
    header[66:68] = raw[66:68]  # rendering intent (0-3)
    header[68:80] = raw[68:80]  # PCS illuminant
    return header


def _safe_tag(signature: bytes, tag: bytes, version4: bool) -> bytes | None:
    kind = tag[:4]
    if signature in FIXED_TEXT or kind in TEXT_TYPES:
        if kind not in TEXT_TYPES:
            kind = b"mluc" if version4 else (b"desc" if signature == b"desc" else b"text")
        return text_tag(kind, FIXED_TEXT.get(signature, DEFAULT_TEXT))
    if kind == b"dtim":
        return b"dtim\0\0\0\0" + struct.pack(">6H", *FIXED_DATE)
    if kind not in NUMERIC_TYPES:
        return None
    body = bytearray(tag[: _numeric_size(kind, tag)])
    body[4:8] = b"\0\0\0\0"
    if kind in (b"mft1", b"mft2") and len(body) > 11:
        body[11] = 0
    elif kind in (b"mAB ", b"mBA ", b"para") and len(body) > 11:
        body[10:12] = b"\0\0"
    return bytes(body)


def _numeric_size(kind: bytes, tag: bytes) -> int:
    """The size a simple type's own counts declare (at most the tag's size); other types: the tag size."""
    length = len(tag)
    if kind == b"curv" and length >= 12:
        return min(length, 12 + 2 * struct.unpack_from(">I", tag, 8)[0])
    if kind == b"para" and length >= 12:
        return min(length, 12 + 4 * _PARA_PARAMS.get(struct.unpack_from(">H", tag, 8)[0], 7))
    if kind == b"chrm" and length >= 12:
        return min(length, 12 + 8 * struct.unpack_from(">H", tag, 8)[0])
    if kind == b"sig ":
        return min(length, 12)
    if kind in (b"meas", b"view"):
        return min(length, 36)
    if kind in (b"XYZ ", b"sf32", b"uf32", b"ui32"):
        return 8 + (length - 8) // 4 * 4
    return length


def text_tag(kind: bytes, text: str) -> bytes:
    """Tag data of type 'mluc' (en-US, UTF-16BE), 'desc' (ICC v2 textDescription) or 'text' holding `text`."""
    ascii_text = text.encode("ascii") + b"\0"
    if kind == b"mluc":
        utf16 = text.encode("utf-16-be")
        return b"mluc\0\0\0\0" + struct.pack(">II2s2sII", 1, 12, b"en", b"US", len(utf16), 28) + utf16
    if kind == b"desc":
        # ASCII count and text, Unicode language code and count (none), ScriptCode code, count, 67 bytes.
        return b"desc\0\0\0\0" + struct.pack(">I", len(ascii_text)) + ascii_text + b"\0" * (4 + 4 + 2 + 1 + 67)
    return b"text\0\0\0\0" + ascii_text


def _assemble(header: bytearray, entries: list[tuple[bytes, bytes]], had_id: bool) -> bytes:
    table_end = HEADER_BYTES + 4 + 12 * len(entries)
    offsets: dict[int, int] = {}  # id(tag data) -> new offset: shared data written once
    blobs: list[bytes] = []
    position = _aligned(table_end)
    table = [struct.pack(">I", len(entries))]
    for signature, tag in entries:
        if id(tag) not in offsets:
            offsets[id(tag)] = position
            blobs.append(tag + b"\0" * (_aligned(len(tag)) - len(tag)))
            position += _aligned(len(tag))
        table.append(struct.pack(">4sII", signature, offsets[id(tag)], len(tag)))
    body = b"".join(table) + b"\0" * (_aligned(table_end) - table_end) + b"".join(blobs)
    profile = bytearray(header + body)
    struct.pack_into(">I", profile, 0, len(profile))
    if had_id:
        profile[_ID] = profile_id(bytes(profile))
    return bytes(profile)


def profile_id(profile: bytes) -> bytes:
    """ICC profile ID: MD5 of the profile with flags, rendering intent and the ID itself zeroed."""
    copy = bytearray(profile)
    copy[44:48] = b"\0\0\0\0"
    copy[64:68] = b"\0\0\0\0"
    copy[_ID] = b"\0" * 16
    return hashlib.md5(bytes(copy), usedforsecurity=False).digest()


def _aligned(value: int) -> int:
    return (value + 3) & ~3


@lru_cache(maxsize=1)
def srgb_profile() -> bytes:
    """A fixed sRGB profile (LittleCMS's built-in, its text tags rewritten), for a profile that had to go."""
    from PIL import ImageCms

    return sanitize_icc(bytes(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()))
