"""The one rule for compressed image units: read the size a unit declares, and check it, before decoding.

A decoder allocates what a unit's own header declares: the frame header (SOF) of a JPEG stream, the
image and tile size marker (SIZ) of a JPEG 2000 codestream. A hostile 256 x 256 slide tile whose SOF
claims 65500 x 65500 pixels makes a decoder ask for 12 GB. `check_unit` is the single check, used by
every path that hands input bytes to a decoder: WSI tiles and strips (`deid.wsi.units` in the slide
probe, `deid.wsi.source` before each raw tile decode) and DICOM encapsulated frames
(`deid.dicom.pixel_data` while reading). It requires that the unit

* starts the way its codec does and has its size header (SOF before the first scan; SIZ right
  after SOC, also inside a JP2 `jp2c` box) - else `invalid_input`;
* declares exactly the geometry its container declares (the TIFF tile or strip size, DICOM
  Columns x Rows and SamplesPerPixel): more pixels, components or JPEG 2000 tiles than that is
  `too_large`, any other difference `invalid_input`.

The container's geometry itself is checked against `--max_pixels` where it is read (DICOM header,
TIFF tags, slide dimensions), so a unit that matches it is within the limits too. Messages give the
container's geometry and never a number read from the unit: a hostile header is four bytes of text.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

from deid.errors import InputTooLargeError, InvalidInputError

Codec = Literal["jpeg", "jpeg2000"]

# Start-of-frame markers: baseline, extended, progressive, lossless (Huffman and arithmetic), JPEG-LS.
JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
J2K_SOC_SIZ = b"\xff\x4f\xff\x51"
JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
MAX_COMPONENTS = 4
# JPEG 2000 tiles: a decoder keeps a structure per tile, so 1 x 1 tiles of a large image are a bomb too.
MAX_J2K_TILES = 1 << 16
_MAX_JP2_BOXES = 64
# Bytes of a unit read first when scanning a file: enough for a SOF after the tables, or a SIZ.
HEADER_PREFIX_BYTES = 4096


@dataclass(frozen=True)
class UnitHeader:
    """What a compressed unit's own header declares."""

    codec: Codec
    width: int
    height: int
    components: int
    tiles: int = 1


@dataclass(frozen=True)
class Geometry:
    """What the container declares for one unit.

    samples: components the unit must hold (None: any count up to MAX_COMPONENTS).
    short_height: another height allowed (the rows left for the last strip of a TIFF page).
    """

    width: int
    height: int
    samples: int | None = None
    short_height: int | None = None


def read_header(
    data: bytes | bytearray | memoryview, codec: Codec, what: str = "a compressed unit"
) -> UnitHeader | None:
    """The unit's declared size; None when `data` ends before the header does (read more, or refuse).

    Raises InvalidInputError when the unit does not start like `codec` or has no size header.
    """
    view = memoryview(data).cast("B")
    if codec == "jpeg":
        return _jpeg_header(view, what)
    return _j2k_header(view, what)


def check_unit(data: bytes | bytearray | memoryview, codec: Codec, expected: Geometry, what: str) -> UnitHeader:
    """Raise InputTooLargeError or InvalidInputError unless the unit declares `expected`; see the module.

    `what` names the unit in messages ("a JPEG tile of TIFF page 2", "frame 3 of the pixel data").
    """
    header = read_header(data, codec, what)
    if header is None:
        raise InvalidInputError(f"{what} ends before its {_header_name(codec)}; the file is truncated or damaged")
    _check_header(header, expected, what)
    return header


def _check_header(header: UnitHeader, expected: Geometry, what: str) -> None:
    declared = f"{expected.width} x {expected.height}"
    samples = expected.samples if expected.samples is not None else MAX_COMPONENTS
    heights = {expected.height, expected.short_height or expected.height}
    if (
        header.width > expected.width
        or header.height > max(heights)
        or header.components > samples
        or header.tiles > MAX_J2K_TILES
    ):
        raise InputTooLargeError(
            f"{what} declares a larger image in its {_header_name(header.codec)} than the {declared} pixels "
            f"(and {samples} samples) its container declares; refused before decoding (decompression bomb "
            "or damaged file)"
        )
    if header.width != expected.width or header.height not in heights or header.components < 1 or (
        expected.samples is not None and header.components != expected.samples
    ):
        raise InvalidInputError(
            f"{what} declares a different size in its {_header_name(header.codec)} than the {declared} pixels "
            f"(and {samples} samples) its container declares; the file is damaged"
        )


def _header_name(codec: Codec) -> str:
    return "JPEG frame header (SOF)" if codec == "jpeg" else "JPEG 2000 size marker (SIZ)"


def _u16(view: memoryview, offset: int) -> int:
    return int(struct.unpack_from(">H", view, offset)[0])


def _u32(view: memoryview, offset: int) -> int:
    return int(struct.unpack_from(">I", view, offset)[0])


def _jpeg_header(view: memoryview, what: str) -> UnitHeader | None:
    if len(view) < 2:
        return None
    if bytes(view[:2]) != b"\xff\xd8":
        raise InvalidInputError(f"{what} does not start with a JPEG start-of-image marker; the file is damaged")
    pos = 2
    while True:
        if pos + 2 > len(view):
            return None
        if view[pos] != 0xFF:
            raise InvalidInputError(f"{what} has a malformed JPEG marker sequence before its frame header")
        marker = view[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in (0xDA, 0xD9, 0xD8):
            raise InvalidInputError(f"{what} has no JPEG frame header (SOF) before its scan; the file is damaged")
        if pos + 4 > len(view):
            return None
        length = _u16(view, pos + 2)
        if length < 2:
            raise InvalidInputError(f"{what} has a JPEG marker segment of impossible length; the file is damaged")
        if marker in JPEG_SOF:
            if length < 8:
                raise InvalidInputError(f"the JPEG frame header (SOF) of {what} is too short; the file is damaged")
            if pos + 10 > len(view):
                return None
            height, width, components = _u16(view, pos + 5), _u16(view, pos + 7), view[pos + 9]
            if height == 0 or width == 0:
                # Height 0 defers it to a DNL marker after the first scan: not checkable up front.
                raise InvalidInputError(f"the JPEG frame header (SOF) of {what} declares a zero width or height")
            return UnitHeader("jpeg", width, height, components)
        pos += 2 + length


def _j2k_header(view: memoryview, what: str) -> UnitHeader | None:
    if len(view) >= len(JP2_SIGNATURE) and bytes(view[: len(JP2_SIGNATURE)]) == JP2_SIGNATURE:
        start = _jp2_codestream(view, what)
        if start is None:
            return None
        view = view[start:]
    if len(view) < 4:
        return None
    if bytes(view[:4]) != J2K_SOC_SIZ:
        raise InvalidInputError(
            f"{what} does not start with JPEG 2000 SOC and SIZ markers (nor a JP2 box holding them); "
            "the file is damaged"
        )
    if len(view) < 42:
        return None
    x_size, y_size, x_offset, y_offset = (_u32(view, 8 + 4 * i) for i in range(4))
    tile_w, tile_h, tile_x, tile_y = (_u32(view, 24 + 4 * i) for i in range(4))
    components = _u16(view, 40)
    grid_ok = tile_w and tile_h and tile_x <= x_offset and tile_y <= y_offset
    if not (x_offset < x_size and y_offset < y_size and grid_ok):
        raise InvalidInputError(f"the JPEG 2000 size marker (SIZ) of {what} declares an impossible image or tile grid")
    tiles = -(-(x_size - tile_x) // tile_w) * -(-(y_size - tile_y) // tile_h)
    return UnitHeader("jpeg2000", x_size - x_offset, y_size - y_offset, components, tiles)


def _jp2_codestream(view: memoryview, what: str) -> int | None:
    """Offset of the codestream in the JP2 file's `jp2c` box; None when `view` ends first."""
    pos = 0
    for _ in range(_MAX_JP2_BOXES):
        if pos + 8 > len(view):
            return None
        length, kind = _u32(view, pos), bytes(view[pos + 4 : pos + 8])
        header = 8
        if length == 1:
            if pos + 16 > len(view):
                return None
            length, header = int(struct.unpack_from(">Q", view, pos + 8)[0]), 16
        if kind == b"jp2c":
            return pos + header
        if length == 0 or length < header:
            break
        pos += length
    raise InvalidInputError(f"{what} is a JP2 file without a codestream box (jp2c); the file is damaged")
