"""Pixel data against its header, checked while reading (deid.dicom.reader), before any frame is decoded.

A PixelData value that does not match the image pixel module is never published as `ok`. What is
checked, and when:

Always, whatever the run (these checks are cheap: lengths, item headers and a few header bytes per frame):

* PixelData (or FloatPixelData, DoubleFloatPixelData) needs Rows, Columns and BitsAllocated, and
  Rows, Columns, NumberOfFrames, SamplesPerPixel and BitsAllocated must not be zero;
* native data: the value length must be Rows x Columns x NumberOfFrames x SamplesPerPixel x
  BitsAllocated / 8 (YBR_FULL_422 stores 2 samples per pixel; 1-bit data is rounded up to whole
  bytes), plus one pad byte when that is odd. One byte short or long is refused;
* encapsulated data: a basic offset table item and at least one fragment; no fewer fragments than
  NumberOfFrames; a basic or extended offset table, when present, has one entry per frame, each at
  the start of a fragment, in increasing order;
* JPEG, JPEG-LS and JPEG 2000 transfer syntaxes: every frame starts with a frame header (SOF) or size
  marker (SIZ) that declares Columns x Rows and SamplesPerPixel (`deid.codestream.check_unit`, the
  rule slide tiles follow too); a larger one is `too_large`, a missing or different one `invalid_input`.

Only when the run decodes the pixels (pixel redaction, QA thumbnails): the entropy-coded data of
each frame. A frame whose header is sound but whose coded data is damaged fails there
(`pixel_decode`). A run that needs no pixel redaction copies the frames byte for byte without
decoding them, and its audit record says so: `details.pixel_data` is "checked" (the checks above)
rather than "decoded" (deid.dicom.instance).

Failures are `invalid_input` unless noted; messages give header sizes and frame numbers, never values.
"""

from __future__ import annotations

import struct

from pydicom.dataset import Dataset

from deid.codestream import HEADER_PREFIX_BYTES, Codec, Geometry, check_unit, read_header
from deid.errors import InvalidInputError

_PIXEL_KEYWORDS = (("PixelData", None), ("FloatPixelData", 32), ("DoubleFloatPixelData", 64))
_ITEM = (0xFFFE, 0xE000)
_SEQUENCE_END = (0xFFFE, 0xE0DD)
_JPEG_PREFIX = "1.2.840.10008.1.2.4."
# JPEG (baseline, extended, lossless) and JPEG-LS; JPEG 2000 and High-Throughput JPEG 2000.
JPEG_SYNTAXES = frozenset(_JPEG_PREFIX + s for s in ("50", "51", "52", "53", "54", "55", "56", "57", "58", "59",
                                                     "60", "61", "62", "63", "64", "65", "66", "70", "80", "81"))
JPEG2000_SYNTAXES = frozenset(_JPEG_PREFIX + s for s in ("90", "91", "92", "93", "201", "202", "203"))


def check_pixel_data(ds: Dataset) -> None:
    """Raise InvalidInputError (or InputTooLargeError) unless the pixel data matches the header; see module."""
    for keyword, float_bits in _PIXEL_KEYWORDS:
        if keyword in ds:
            _check_element(ds, keyword, float_bits)


def _size(ds: Dataset, keyword: str, default: int | None) -> int:
    value = ds.get(keyword)
    if value is None or value == "":
        if default is None:
            raise InvalidInputError(f"pixel data is present but {keyword} is missing; the header is malformed")
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{keyword} is not an integer; the header is malformed") from None
    if number <= 0:
        raise InvalidInputError(f"{keyword} is zero or negative while pixel data is present; the header is malformed")
    return number


def _check_element(ds: Dataset, keyword: str, float_bits: int | None) -> None:
    rows, columns = _size(ds, "Rows", None), _size(ds, "Columns", None)
    frames, samples = _size(ds, "NumberOfFrames", 1), _size(ds, "SamplesPerPixel", 1)
    bits = float_bits or _size(ds, "BitsAllocated", None)
    element = ds[keyword]
    value = b"" if element.value is None else element.value  # pydicom reads an empty value as None
    if not isinstance(value, bytes | bytearray):
        raise InvalidInputError(f"{keyword} has no byte value; the file is malformed")
    if keyword == "PixelData" and element.is_undefined_length:
        _check_encapsulated(ds, bytes(value), rows, columns, frames, samples)
        return
    stored = 2 if samples == 3 and str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422" else samples
    expected = -(-rows * columns * frames * stored * bits // 8)
    if len(value) not in (expected, expected + expected % 2):
        relation = "shorter" if len(value) < expected else "longer"
        raise InvalidInputError(
            f"{keyword} holds {len(value)} bytes, {relation} than the {expected} bytes that Rows x Columns x "
            f"NumberOfFrames x SamplesPerPixel x BitsAllocated ({rows} x {columns} x {frames} x {samples} x "
            f"{bits} bits) declare; the file is truncated or damaged"
        )


def _items(value: bytes) -> list[tuple[int, int]]:
    """(item start, value length) of each item of an encapsulated value (the offset table first)."""
    items: list[tuple[int, int]] = []
    position = 0
    while position + 8 <= len(value):
        group, element, length = struct.unpack_from("<HHI", value, position)
        if (group, element) == _SEQUENCE_END:
            break
        if (group, element) != _ITEM or position + 8 + length > len(value):
            raise InvalidInputError(f"encapsulated pixel data has a malformed item at offset {position} of its value")
        items.append((position, length))
        position += 8 + length
    return items


def _check_encapsulated(ds: Dataset, value: bytes, rows: int, columns: int, frames: int, samples: int) -> None:
    items = _items(value)
    if not items:
        raise InvalidInputError("encapsulated pixel data has no basic offset table item; the file is damaged")
    fragments = items[1:]
    if len(fragments) < frames:
        raise InvalidInputError(
            f"encapsulated pixel data holds {len(fragments)} fragments but NumberOfFrames declares {frames} "
            "frames; the file is truncated or damaged"
        )
    first_item = items[0][0] + 8 + items[0][1]
    starts = [start - first_item for start, _ in fragments]
    bot_start, bot_length = items[0]
    table: list[int] | None = None
    if bot_length:
        if bot_length % 4:
            raise InvalidInputError("the basic offset table of the pixel data has a partial entry")
        table = list(struct.unpack_from(f"<{bot_length // 4}I", value, bot_start + 8))
    elif "ExtendedOffsetTable" in ds:
        raw = ds.ExtendedOffsetTable
        if not isinstance(raw, bytes | bytearray) or len(raw) % 8:
            raise InvalidInputError("the extended offset table of the pixel data is malformed")
        table = list(struct.unpack(f"<{len(raw) // 8}Q", raw))
    if table is not None:
        index_of = {offset: index for index, offset in enumerate(starts)}
        if len(table) != frames or any(offset not in index_of for offset in table) or table != sorted(set(table)):
            raise InvalidInputError(
                f"the offset table of the pixel data does not hold one fragment start per frame for the {frames} "
                "frames declared; the file is damaged"
            )
        first_fragments = [index_of[offset] for offset in table]
    elif frames == 1 or len(fragments) == frames:
        first_fragments = list(range(frames))
    else:
        first_fragments = [0]  # several fragments per frame and no table: only the first frame's start is known
    codec = _codec(ds)
    if codec is None:
        return
    bounds = [*first_fragments, len(fragments)]
    for frame, (first, stop) in enumerate(zip(bounds, bounds[1:], strict=False)):
        what = f"frame {frame + 1} of the pixel data"
        head = _frame_head(value, fragments[first:stop], codec, what)
        check_unit(head, codec, Geometry(columns, rows, samples), what)


def _frame_head(value: bytes, fragments: list[tuple[int, int]], codec: Codec, what: str) -> bytes:
    """The first bytes of a frame, across its fragments, until its header is complete (or the frame ends)."""
    head = b""
    for start, length in fragments:
        head += value[start + 8 : start + 8 + min(length, HEADER_PREFIX_BYTES)]
        if read_header(head, codec, what) is not None:
            break
    return head


def _codec(ds: Dataset) -> Codec | None:
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if syntax in JPEG_SYNTAXES:
        return "jpeg"
    if syntax in JPEG2000_SYNTAXES:
        return "jpeg2000"
    return None
