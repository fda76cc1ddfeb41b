"""The one rule for JPEG 2000 units copied from an input: no comment, box or byte that decoding does not need.

`sanitize_j2k` is what `deid.jpegsafe.sanitize_jpeg` is for JPEG, for encapsulated DICOM frames of the
JPEG 2000 and HTJ2K transfer syntaxes (`deid.dicom.embedded`). The packet data is kept byte for byte.

Codestream (starts with SOC): COM marker segments are dropped from the main header and from every
tile-part header (Psot of a shortened tile-part is fixed, and TLM, an optional index of tile-part
lengths, is dropped when any length changed); bytes after EOC are dropped. Every other marker
segment of the main and tile-part headers holds numbers and is kept; unknown markers are refused.

JP2 file (starts with the JP2 signature box; DICOM expects a bare codestream, some writers wrap it):
a new signature and file type box (known brands only), the header box with only ihdr, bpcc, colr
(enumerated colour space, or an ICC profile rewritten by `deid.iccsafe`), pclr, cmap, cdef and res,
and the first contiguous codestream box, sanitized as above. Every other box (xml, uuid, uinf, jp2i,
IPR, association, fragment tables, ...) is dropped.
"""

from __future__ import annotations

import struct

from deid.iccsafe import IccStructureError, sanitize_icc

SOC = b"\xff\x4f"
EOC = b"\xff\xd9"
JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_SOT, _SOD, _COM, _TLM = 0xFF90, 0xFF93, 0xFF64, 0xFF55
# Part 1, Part 2 (multi-component: DCO, VMS, DFS, ADS, MCT, MCC, NLT, MCO, CBD, ATK) and Part 15 (CAP, CPF).
_PART2 = frozenset({0xFF70, 0xFF71, 0xFF72, 0xFF73, 0xFF74, 0xFF75, 0xFF76, 0xFF77, 0xFF78, 0xFF79})
_COMMON = frozenset({0xFF52, 0xFF53, 0xFF5C, 0xFF5D, 0xFF5E, 0xFF5F}) | _PART2  # COD COC QCD QCC RGN POC
_MAIN = _COMMON | {0xFF51, 0xFF50, 0xFF59, 0xFF60, _TLM, 0xFF57, 0xFF63}  # SIZ CAP CPF PPM TLM PLM CRG
_TILE_PART = _COMMON | {0xFF61, 0xFF58}  # PPT PLT
_BRANDS = frozenset({b"jp2 ", b"jpx ", b"jpxb", b"jph "})
_HEADER_BOXES = frozenset({b"ihdr", b"bpcc", b"colr", b"pclr", b"cmap", b"cdef", b"res "})


class J2kStructureError(ValueError):
    """The bytes are not a JPEG 2000 unit this sanitizer can rebuild (the message holds no input value)."""


def sanitize_j2k(data: bytes | bytearray | memoryview) -> bytes:
    """The unit (a codestream or a JP2 file) without comments, unneeded boxes or trailing bytes."""
    raw = bytes(data)
    if raw.startswith(SOC):
        return sanitize_codestream(raw)
    if raw.startswith(JP2_SIGNATURE):
        return _sanitize_jp2(raw)
    raise J2kStructureError("not a JPEG 2000 codestream or JP2 file")


def sanitize_codestream(raw: bytes) -> bytes:
    if not raw.startswith(SOC):
        raise J2kStructureError("a JPEG 2000 codestream must start with SOC")
    main: list[tuple[int, bytes]] = []
    pos = 2
    while True:
        marker, seg_end = _marker_segment(raw, pos)
        if marker == _SOT:
            break
        if marker not in _MAIN and marker != _COM:
            raise J2kStructureError(f"the JPEG 2000 main header holds an unsupported marker 0x{marker:04X}")
        if marker != _COM:
            main.append((marker, raw[pos:seg_end]))
        pos = seg_end
    parts: list[bytes] = []
    lengths_changed = False
    while pos < len(raw) and raw[pos : pos + 2] != EOC:
        part, pos, changed = _tile_part(raw, pos)
        parts.append(part)
        lengths_changed |= changed
    segments = [segment for marker, segment in main if not (lengths_changed and marker == _TLM)]
    return b"".join([SOC, *segments, *parts, EOC])


def _tile_part(raw: bytes, start: int) -> tuple[bytes, int, bool]:
    """(sanitized tile-part, where the next one starts, whether its length changed)."""
    marker, pos = _marker_segment(raw, start)
    if marker != _SOT or pos - start != 12:
        raise J2kStructureError("a JPEG 2000 tile-part does not start with a 10-byte SOT segment")
    (psot,) = struct.unpack_from(">I", raw, start + 6)
    header = [bytearray(raw[start:pos])]
    while True:
        if raw[pos : pos + 2] == b"\xff\x93":
            pos += 2
            break
        marker, seg_end = _marker_segment(raw, pos)
        if marker not in _TILE_PART and marker != _COM:
            raise J2kStructureError(f"a JPEG 2000 tile-part header holds an unsupported marker 0x{marker:04X}")
        if marker != _COM:
            header.append(bytearray(raw[pos:seg_end]))
        pos = seg_end
    if psot:
        end = start + psot
        if end > len(raw) or end < pos:
            raise J2kStructureError("a JPEG 2000 tile-part length runs past the codestream")
    else:  # the last tile-part runs to EOC (0xFF 0xD9 cannot occur inside packet data)
        end = raw.find(EOC, pos)
        end = len(raw) if end < 0 else end
    new_length = sum(len(segment) for segment in header) + 2 + (end - pos)
    if psot:
        struct.pack_into(">I", header[0], 6, new_length)
    return b"".join([*map(bytes, header), b"\xff\x93", raw[pos:end]]), end, bool(psot) and new_length != psot


def _marker_segment(raw: bytes, pos: int) -> tuple[int, int]:
    """(marker, end of its segment) of the marker segment at `pos`."""
    if pos + 4 > len(raw) or raw[pos] != 0xFF:
        raise J2kStructureError("a JPEG 2000 header is truncated or malformed")
    marker, length = struct.unpack_from(">HH", raw, pos)
    if length < 2 or pos + 2 + length > len(raw):
        raise J2kStructureError("a JPEG 2000 marker segment's length runs past the unit")
    return marker, pos + 2 + length


def _boxes(raw: bytes, start: int, end: int) -> list[tuple[bytes, bytes]]:
    """(type, content) of the boxes between `start` and `end`."""
    out = []
    pos = start
    while pos + 8 <= end:  # fewer bytes than a box header: padding (DICOM pads odd frames), dropped
        length, kind = struct.unpack_from(">I4s", raw, pos)
        header = 8
        if length == 1:
            if pos + 16 > end:
                raise J2kStructureError("a JP2 box header is truncated")
            (length,) = struct.unpack_from(">Q", raw, pos + 8)
            header = 16
        elif length == 0:
            length = end - pos
        if length < header or pos + length > end:
            raise J2kStructureError("a JP2 box's length runs past the file")
        out.append((kind, raw[pos + header : pos + length]))
        pos += length
    return out


def _box(kind: bytes, content: bytes) -> bytes:
    if len(content) + 8 < 2**32:
        return struct.pack(">I4s", len(content) + 8, kind) + content
    return struct.pack(">I4sQ", 1, kind, len(content) + 16) + content


def _sanitize_jp2(raw: bytes) -> bytes:
    boxes = _boxes(raw, len(JP2_SIGNATURE), len(raw))
    first = {kind: content for kind, content in reversed(boxes)}
    if b"ftyp" not in first or b"jp2h" not in first or b"jp2c" not in first:
        raise J2kStructureError("a JP2 file needs its file type, header and codestream boxes")
    ftyp = first[b"ftyp"]
    brand = ftyp[:4] if ftyp[:4] in _BRANDS else b"jp2 "
    compatible = [ftyp[i : i + 4] for i in range(8, len(ftyp) - 3, 4)]
    listed = list(dict.fromkeys(c for c in compatible if c in _BRANDS)) or [b"jp2 "]
    out = [JP2_SIGNATURE, _box(b"ftyp", brand + b"\0\0\0\0" + b"".join(listed))]
    out.append(_box(b"jp2h", _header_box(first[b"jp2h"])))
    out.append(_box(b"jp2c", sanitize_codestream(first[b"jp2c"])))
    return b"".join(out)


def _header_box(content: bytes) -> bytes:
    kept = []
    colour = False
    for kind, body in _boxes(content, 0, len(content)):
        if kind not in _HEADER_BOXES:
            continue
        if kind == b"colr":
            body = _colour_box(body) or b""
            if not body:
                continue
            colour = True
        elif kind == b"res ":
            body = b"".join(_box(k, b) for k, b in _boxes(body, 0, len(body)) if k in (b"resc", b"resd"))
        kept.append(_box(kind, body))
    if not colour:
        raise J2kStructureError("a JP2 header has no colour specification this sanitizer can keep")
    return b"".join(kept)


def _colour_box(body: bytes) -> bytes | None:
    """An enumerated colour space as is (7 bytes); an ICC profile rewritten; other methods dropped."""
    if len(body) < 7:
        return None
    method = body[0]
    if method == 1:
        return body[:7]
    if method in (2, 3):
        try:
            return body[:3] + sanitize_icc(body[3:])
        except IccStructureError:
            return None
    return None
