"""The one rule for the marker segments of a JPEG stream copied from an input.

Every path that copies compressed JPEG bytes from an input into an output calls `sanitize_jpeg`:
WSI passthrough tiles and the TIFF JPEGTables tag (`deid.wsi.jpeg`, `deid.wsi.source`) and
encapsulated DICOM frames (`deid.dicom.embedded`). The entropy-coded data is kept byte for byte,
so the stream decodes to the same pixels; each marker segment is

* kept as is when it holds only the numbers decoding needs: SOFn, DHT, DAC, DQT, DRI, SOS, DNL,
  RSTn, DHP, EXP, and for JPEG-LS SOF55 and LSE;
* rebuilt from fixed values plus the few numbers that change how a decoder reads the pixels:
  - APP0 JFIF (its presence makes libjpeg read three components as YCbCr): 'JFIF', version 1.01,
    density units 0/1/2 and X/Y density (1 to 65535), no thumbnail; other APP0 (JFXX) dropped;
  - APP14 Adobe: 'Adobe', version 100, flags 0, the colour transform (0, 1 or 2; others become 1);
  - APP8 'mrfx' of a JPEG-LS stream (the HP colour transform): 'mrfx' and its transform (0 to 3);
* dropped otherwise: COM, every other APPn (EXIF, XMP, ICC_PROFILE, Photoshop/IPTC, JFXX, SPIFF,
  vendor blocks), fill bytes, and everything after EOI. Reserved markers (JPGn, RES) are refused.

Not covered: values coded into the numbers that are kept (quantisation or Huffman tables no scan
uses, padding bits of the entropy-coded data): the leak check still scans every output byte.
"""

from __future__ import annotations

SOI = b"\xff\xd8"
EOI = b"\xff\xd9"
_SOS = 0xDA
_SOF55 = 0xF7  # JPEG-LS frame header
# Segments kept verbatim: frame headers, tables, scan headers, restart interval, DNL, hierarchical.
_KEPT = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
    | {0xC4, 0xCC, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF, _SOF55, 0xF8}
)
_RST = frozenset(range(0xD0, 0xD8))
_TEM = 0x01
_APP0, _APP8, _APP14, _COM = 0xE0, 0xE8, 0xEE, 0xFE

JFIF_ID = b"JFIF\x00"
ADOBE_ID = b"Adobe"
MRFX_ID = b"mrfx"


class JpegStructureError(ValueError):
    """The bytes are not a JPEG stream this sanitizer can rebuild (the message holds no input value)."""


def sanitize_jpeg(data: bytes | bytearray | memoryview) -> bytes:
    """The stream with its text-carrying segments dropped or rebuilt (see the module docstring).

    Works on complete streams, abbreviated TIFF tiles and tables-only streams (JPEGTables). A
    stream that ends without EOI gets one. Raises JpegStructureError for malformed streams.
    """
    view = bytes(data)
    if not view.startswith(SOI):
        raise JpegStructureError("not a JPEG stream (no SOI marker)")
    out = [SOI]
    state = _State()
    pos, end = 2, len(view)
    while pos < end:
        if view[pos] != 0xFF:
            raise JpegStructureError("bytes outside any marker segment")
        while pos < end and view[pos] == 0xFF:  # fill bytes (dropped)
            pos += 1
        if pos >= end:
            break
        marker = view[pos]
        pos += 1
        if marker == 0xD9:
            out.append(EOI)
            return b"".join(out)
        if marker in _RST:  # a restart marker outside a scan's data (after fill bytes): the scan goes on
            scan_end = _scan_end(view, pos, state.jpeg_ls)
            out.append(bytes((0xFF, marker)) + view[pos:scan_end])
            pos = scan_end
            continue
        if marker == _TEM:
            continue
        if pos + 2 > end:
            raise JpegStructureError("a marker segment is truncated")
        length = (view[pos] << 8) | view[pos + 1]
        if length < 2 or pos + length > end:
            raise JpegStructureError("a marker segment's length runs past the stream")
        body = view[pos + 2 : pos + length]
        segment = view[pos - 2 : pos + length]
        pos += length
        if marker == _SOS:
            scan_end = _scan_end(view, pos, state.jpeg_ls)
            out.append(segment + view[pos:scan_end])
            pos = scan_end
        elif marker in _KEPT:
            state.jpeg_ls = state.jpeg_ls or marker == _SOF55
            out.append(segment)
        elif 0xE0 <= marker <= 0xEF or marker == _COM:
            rebuilt = state.rebuild(marker, body)
            if rebuilt is not None:
                out.append(rebuilt)
        else:
            raise JpegStructureError(f"a reserved JPEG marker 0xFF{marker:02X} is not supported")
    out.append(EOI)
    return b"".join(out)


class _State:
    """What earlier segments said: JPEG-LS coding; which rebuilt segments were already written."""

    def __init__(self) -> None:
        self.jpeg_ls = False
        self.done: set[bytes] = set()

    def rebuild(self, marker: int, body: bytes) -> bytes | None:
        if marker == _APP0 and body.startswith(JFIF_ID) and len(body) >= 14:
            return self._once(JFIF_ID, jfif_segment(body[7], _u16(body, 8), _u16(body, 10)))
        if marker == _APP14 and body.startswith(ADOBE_ID) and len(body) >= 12:
            return self._once(ADOBE_ID, adobe_segment(body[11]))
        if marker == _APP8 and body.startswith(MRFX_ID) and len(body) >= 5:
            return self._once(MRFX_ID, _segment(_APP8, MRFX_ID + bytes((body[4] if body[4] <= 3 else 0,))))
        return None

    def _once(self, key: bytes, segment: bytes) -> bytes | None:
        if key in self.done:
            return None
        self.done.add(key)
        return segment


def jfif_segment(units: int, x_density: int, y_density: int) -> bytes:
    """APP0 JFIF 1.01 with validated density and no thumbnail."""
    units = units if units in (0, 1, 2) else 0
    x_density, y_density = x_density or 1, y_density or 1
    density = x_density.to_bytes(2, "big") + y_density.to_bytes(2, "big")
    return _segment(_APP0, JFIF_ID + bytes((1, 1, units)) + density + b"\0\0")


def adobe_segment(transform: int) -> bytes:
    """APP14 Adobe, version 100, flags 0, the colour transform (0 none/RGB, 1 YCbCr, 2 YCCK)."""
    transform = transform if transform in (0, 1, 2) else 1
    return _segment(_APP14, ADOBE_ID + b"\x00\x64\x00\x00\x00\x00" + bytes((transform,)))


def _segment(marker: int, body: bytes) -> bytes:
    return bytes((0xFF, marker)) + (len(body) + 2).to_bytes(2, "big") + body


def _u16(data: bytes, offset: int) -> int:
    return (data[offset] << 8) | data[offset + 1]


def _scan_end(data: bytes, pos: int, jpeg_ls: bool) -> int:
    """Where the entropy-coded data starting at `pos` ends: the first marker other than RSTn.

    In JPEG, 0xFF 0x00 is a stuffed data byte; in JPEG-LS any 0xFF followed by a byte below 0x80.
    """
    end = len(data)
    while True:
        index = data.find(b"\xff", pos)
        if index < 0 or index + 1 >= end:
            return end
        following = data[index + 1]
        stuffed = (following < 0x80) if jpeg_ls else (following == 0x00)
        if not stuffed and following not in _RST:
            return index
        pos = index + 2
