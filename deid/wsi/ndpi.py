"""Hamamatsu NDPI: the pre-open geometry guard and the level plan, read in constant memory.

NDPI is classic little-endian TIFF with private tags (65420 marks the format, 65421 the source lens:
> 0 for a pyramid level, -1 for the macro, -2 for the map) that stores each level as ONE JPEG strip,
however large. The generic TIFF rule (`deid.wsi.source.check_tiff_geometry`: a strip must fit a
256 MiB buffer) would refuse every scanner-size level (a 10240 x 9216 level is a 283 MB strip), but
OpenSlide never decodes an NDPI level whole when its JPEG has restart markers: it decodes one
restart interval (a "tile" of restart-interval MCUs x one MCU row) at a time, after the JPEG header
found at the strip start. So the guard here checks, per JPEG page, before any decoder runs:

* the JPEG header (SOF) declares the page's size and samples. Sides above 65535 cannot be written
  in a SOF: NDPI writes 0 there and readers take the TIFF ImageWidth / ImageLength instead, so a 0
  is accepted exactly for a side above 65535;
* with restart markers (DRI > 0) the interval divides the MCUs of a row, the per-interval buffer
  (interval x MCU height x 4 bytes, what OpenSlide allocates per tile) fits `MAX_UNIT_BUFFER_BYTES`,
  and the MCU-starts table (tag 65426), when present, has one entry per interval inside the strip;
* without restart markers (or with an interval OpenSlide cannot tile on) the JPEG is decoded whole,
  so the whole level must fit that buffer, else `too_large` with a message saying why.

Only the IFD entries, the first and last MCU-starts entries and the JPEG header bytes are read:
memory does not depend on the slide's size (a 100,000 x 80,000 level is planned like a small one).
NDPI files past 4 GiB overflow 32-bit offsets: the high bits of a strip offset are chosen, as
OpenSlide did before version 4, as those placing the data below its directory, and then confirmed
by the JPEG start-of-image marker found there. Pixels are read later through OpenSlide region reads.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from deid.errors import InputTooLargeError, InvalidInputError

NDPI_FORMAT_FLAG = 65420
NDPI_SOURCE_LENS = 65421
NDPI_MCU_STARTS = 65426
TIFF_JPEG = 7
# What OpenSlide allocates per NDPI tile (RGBA), or per level when it must decode a JPEG whole.
MAX_UNIT_BUFFER_BYTES = 256 * 1024 * 1024
MAX_SIDE = 1 << 20
MAX_PAGES = 4096
MAX_ENTRIES = 4096
# The JPEG header (tables, SOF, DRI, SOS) sits in the first bytes of a strip; more is not searched.
MAX_HEADER_BYTES = 1024 * 1024
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


@dataclass(frozen=True)
class JpegHeader:
    """What the JPEG header at the start of an NDPI strip declares."""

    width: int
    height: int
    components: int
    mcu_width: int
    mcu_height: int
    restart_interval: int  # in MCUs; 0 = no restart markers
    length: int  # bytes up to and including the SOS segment


@dataclass(frozen=True)
class NdpiPage:
    """One IFD of an NDPI file, as far as the guard needs it (no arrays are loaded)."""

    index: int
    width: int
    height: int
    samples: int
    compression: int
    source_lens: float | None
    strip_offset: int
    strip_bytes: int
    strip_count: int
    mcu_starts: tuple[int, int, int] | None  # (count, first, last) of tag 65426
    rows_per_strip: int


@dataclass(frozen=True)
class NdpiLevel:
    """The decode plan of one pyramid level: OpenSlide's tile (one restart interval) or the whole JPEG."""

    page: int
    width: int
    height: int
    source_lens: float
    unit_width: int
    unit_height: int
    units: int  # restart intervals (1 when the JPEG is decoded whole)

    @property
    def unit_buffer_bytes(self) -> int:
        return self.unit_width * self.unit_height * 4


def is_ndpi(path: str) -> bool:
    """A classic little-endian TIFF whose first IFD carries the NDPI format tag (65420)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            if head[:4] != b"II*\x00":
                return False
            offset = struct.unpack_from("<I", head, 4)[0]
            if offset < 8:
                return False
            first = _entries(handle, offset, os.fstat(handle.fileno()).st_size)
            return first is not None and NDPI_FORMAT_FLAG in first[0]
    except (OSError, struct.error, InvalidInputError):
        return False  # not NDPI (or not parsable as one): the generic TIFF rules apply


def read_pages(path: str) -> list[NdpiPage]:
    """Every IFD of an NDPI file (InvalidInputError when its structure is damaged)."""
    try:
        return _read_pages(path)
    except struct.error:
        raise InvalidInputError("an NDPI directory ends inside an entry; the file is truncated") from None


def _read_pages(path: str) -> list[NdpiPage]:
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        head = handle.read(16)
        if len(head) < 16 or head[:4] != b"II*\x00":
            raise InvalidInputError("the NDPI file has no TIFF header; the file is damaged")
        # NDPI writes every next-directory offset as 64 bits, the first one too (bytes 4..12).
        offset = struct.unpack_from("<Q", head, 4)[0]
        pages: list[NdpiPage] = []
        seen: set[int] = set()
        while offset and len(pages) < MAX_PAGES:
            if offset in seen:
                raise InvalidInputError("the NDPI directory chain loops; the file is damaged")
            seen.add(offset)
            current = offset
            found = _entries(handle, current, size)
            if found is None:
                raise InvalidInputError(f"NDPI directory {len(pages)} lies beyond the end of the file; truncated")
            entries, offset = found
            pages.append(_page(handle, len(pages), entries, size, current))
        return pages


def plan_levels(path: str) -> list[NdpiLevel]:
    """Check every JPEG page (module docstring) and return the pyramid levels' decode plans.

    Raises InputTooLargeError or InvalidInputError for the first page that fails a check.
    """
    levels: list[NdpiLevel] = []
    with open(path, "rb") as handle:
        for page in read_pages(path):
            level = check_page(handle, page)
            if level is not None:
                levels.append(level)
    return levels


def check_ndpi(path: str) -> None:
    """The guard the slide probe runs before OpenSlide opens an NDPI file."""
    plan_levels(path)


def check_page(handle: BinaryIO, page: NdpiPage) -> NdpiLevel | None:
    """Check one page; its plan when it is a JPEG pyramid level, else None (macro, map, other codecs)."""
    what = f"NDPI page {page.index}"
    if not (0 < page.width <= MAX_SIDE and 0 < page.height <= MAX_SIDE):
        raise InputTooLargeError(
            f"{what} declares {page.width} x {page.height} pixels, outside 1 to {MAX_SIDE} per side; "
            "the file is damaged or not a slide"
        )
    if page.compression != TIFF_JPEG:
        rows = min(page.rows_per_strip or page.height, page.height)
        if page.width * rows * max(page.samples, 1) > MAX_UNIT_BUFFER_BYTES:
            raise InputTooLargeError(
                f"{what} is not JPEG and needs a {page.width * rows * page.samples}-byte strip buffer, more "
                f"than {MAX_UNIT_BUFFER_BYTES}; the file is damaged or hostile"
            )
        return None
    if page.strip_count != 1:
        raise InvalidInputError(f"{what} is a JPEG page with {page.strip_count} strips; NDPI stores one")
    header = _read_header(handle, page, what)
    _check_sof(header, page, what)
    level = _decode_plan(header, page)
    if level.unit_buffer_bytes > MAX_UNIT_BUFFER_BYTES:
        whole = level.units == 1
        raise InputTooLargeError(
            f"{what} ({page.width} x {page.height} pixels) "
            + (
                "is one JPEG without usable restart markers, so it would be decoded whole"
                if whole
                else "has restart intervals too long to decode one at a time"
            )
            + f" ({level.unit_buffer_bytes} bytes, more than {MAX_UNIT_BUFFER_BYTES}); re-export the slide "
            "from the scanner software with restart markers, or convert it to a tiled format"
        )
    _check_mcu_starts(header, page, level, what)
    if page.source_lens is None or page.source_lens <= 0:
        return None  # macro (-1) or map (-2): an associated image
    return level


def _decode_plan(header: JpegHeader, page: NdpiPage) -> NdpiLevel:
    lens = page.source_lens if page.source_lens is not None else 0.0
    mcus_per_row = -(-page.width // header.mcu_width)
    interval = header.restart_interval
    if interval and interval <= mcus_per_row and mcus_per_row % interval == 0:
        rows = -(-page.height // header.mcu_height)
        return NdpiLevel(
            page.index,
            page.width,
            page.height,
            lens,
            interval * header.mcu_width,
            header.mcu_height,
            rows * (mcus_per_row // interval),
        )
    return NdpiLevel(page.index, page.width, page.height, lens, page.width, page.height, 1)


def _check_sof(header: JpegHeader, page: NdpiPage, what: str) -> None:
    def side_ok(declared: int, tiff: int) -> bool:
        return declared == tiff or (declared == 0 and tiff > 0xFFFF)

    if header.width > page.width or header.height > page.height or header.components > max(page.samples, 1):
        raise InputTooLargeError(
            f"the JPEG frame header (SOF) of {what} declares a larger image than the {page.width} x "
            f"{page.height} pixels its TIFF tags declare; refused before decoding (decompression bomb or damaged file)"
        )
    if not (side_ok(header.width, page.width) and side_ok(header.height, page.height)) or (
        header.components != page.samples
    ):
        raise InvalidInputError(
            f"the JPEG frame header (SOF) of {what} declares a different size than the {page.width} x "
            f"{page.height} pixels its TIFF tags declare; the file is damaged"
        )


def _check_mcu_starts(header: JpegHeader, page: NdpiPage, level: NdpiLevel, what: str) -> None:
    if page.mcu_starts is None or level.units == 1:
        return  # OpenSlide finds the restart markers itself
    count, first, last = page.mcu_starts
    if count != level.units:
        raise InvalidInputError(
            f"the MCU-starts table (tag 65426) of {what} has {count} entries for {level.units} restart "
            "intervals; the file is damaged"
        )
    if first < header.length or not first <= last < page.strip_bytes:
        raise InvalidInputError(f"the MCU-starts table (tag 65426) of {what} points outside its JPEG; damaged")


# -- reading ------------------------------------------------------------------------------------------

Entry = tuple[int, int, bytes]  # (type, count, the 4 value/offset bytes)


def _entries(handle: BinaryIO, offset: int, size: int) -> tuple[dict[int, Entry], int] | None:
    """(tag -> entry, next IFD offset) of the IFD at `offset`; None when it lies beyond the file."""
    if offset + 2 > size:
        return None
    handle.seek(offset)
    (count,) = struct.unpack("<H", handle.read(2))
    if count > MAX_ENTRIES:
        raise InvalidInputError("an NDPI directory declares too many entries; the file is damaged")
    data = handle.read(count * 12 + 8)
    if len(data) < count * 12 + 4:
        return None
    entries: dict[int, Entry] = {}
    for index in range(count):
        tag, kind, number = struct.unpack_from("<HHI", data, index * 12)
        entries[tag] = (kind, number, data[index * 12 + 8 : index * 12 + 12])
    tail = data[count * 12 :]
    following = struct.unpack("<Q", tail)[0] if len(tail) == 8 else struct.unpack("<I", tail[:4])[0]
    return entries, following


def _page(handle: BinaryIO, index: int, entries: dict[int, Entry], size: int, ifd_offset: int) -> NdpiPage:
    def scalar(tag: int, default: int = 0) -> int:
        entry = entries.get(tag)
        if entry is None or entry[1] < 1:
            return default
        return _first_value(handle, entry, size)

    lens_entry = entries.get(NDPI_SOURCE_LENS)
    lens = struct.unpack("<f", lens_entry[2])[0] if lens_entry is not None and lens_entry[0] == 11 else None
    strip_entry = entries.get(273)
    strip_count = strip_entry[1] if strip_entry is not None else 0
    offset_low = scalar(273)
    bytes_low = scalar(279)
    offset = _widen(handle, offset_low, size, ifd_offset)
    strip_bytes = bytes_low
    while offset + strip_bytes + (1 << 32) <= min(size, max(ifd_offset, offset + 1)):
        strip_bytes += 1 << 32  # an NDPI strip past 4 GiB: its byte count overflowed too
    starts_entry = entries.get(NDPI_MCU_STARTS)
    starts = None
    if starts_entry is not None and starts_entry[1] > 0:
        starts = (
            starts_entry[1],
            _nth_value(handle, starts_entry, 0, size),
            _nth_value(handle, starts_entry, starts_entry[1] - 1, size),
        )
    return NdpiPage(
        index=index,
        width=scalar(256),
        height=scalar(257),
        samples=scalar(277, 1),
        compression=scalar(259, 1),
        source_lens=lens,
        strip_offset=offset,
        strip_bytes=strip_bytes,
        strip_count=strip_count,
        mcu_starts=starts,
        rows_per_strip=scalar(278),
    )


def _first_value(handle: BinaryIO, entry: Entry, size: int) -> int:
    return _nth_value(handle, entry, 0, size)


def _nth_value(handle: BinaryIO, entry: Entry, n: int, size: int) -> int:
    kind, count, raw = entry
    width = _TYPE_SIZES.get(kind)
    if width is None or width > 4 and kind not in (16, 17, 18):
        raise InvalidInputError("an NDPI directory entry has an unexpected type; the file is damaged")
    fmt = {1: "<B", 2: "<B", 3: "<H", 4: "<I", 6: "<b", 7: "<B", 8: "<h", 9: "<i", 13: "<I", 16: "<Q", 17: "<q"}
    if kind not in fmt:
        raise InvalidInputError("an NDPI directory entry has an unexpected type; the file is damaged")
    if count * width <= 4:
        return int(struct.unpack_from(fmt[kind], raw, n * width)[0])
    position = struct.unpack("<I", raw)[0] + n * width
    if position + width > size:
        raise InvalidInputError("an NDPI directory entry points beyond the end of the file; truncated")
    handle.seek(position)
    return int(struct.unpack(fmt[kind], handle.read(width))[0])


def _widen(handle: BinaryIO, low: int, size: int, ifd_offset: int) -> int:
    """The 64-bit strip offset of a file past 4 GiB: the candidate below the directory that holds a JPEG SOI."""
    if size <= 1 << 32:
        return low
    candidates = [low + (high << 32) for high in range((size >> 32), -1, -1)]
    for candidate in sorted((c for c in candidates if c < size), key=lambda c: (c >= ifd_offset, -c)):
        handle.seek(candidate)
        if handle.read(2) == b"\xff\xd8":
            return candidate
    return low


def _read_header(handle: BinaryIO, page: NdpiPage, what: str) -> JpegHeader:
    size = os.fstat(handle.fileno()).st_size
    if page.strip_bytes <= 0 or page.strip_offset + page.strip_bytes > size:
        raise InvalidInputError(f"the JPEG of {what} lies beyond the end of the file; the slide is truncated")
    handle.seek(page.strip_offset)
    data = handle.read(min(page.strip_bytes, MAX_HEADER_BYTES))
    return parse_jpeg_header(data, what)


def parse_jpeg_header(data: bytes, what: str = "an NDPI JPEG") -> JpegHeader:
    """SOF, DRI and sampling factors of a JPEG stream, read up to its first scan header (SOS)."""
    if data[:2] != b"\xff\xd8":
        raise InvalidInputError(f"{what} does not start with a JPEG start-of-image marker; the file is damaged")
    sof: tuple[int, int, int, int, int] | None = None
    interval = 0
    for marker, start, body in _segments(data, what):
        if marker in _SOF:
            if len(body) < 6:
                raise InvalidInputError(f"the JPEG frame header (SOF) of {what} is too short; the file is damaged")
            height, width, components = struct.unpack_from(">HHB", body, 1)
            factors = body[6 : 6 + 3 * components]
            if len(factors) < 3 * components or components < 1:
                raise InvalidInputError(f"the JPEG frame header (SOF) of {what} is truncated; the file is damaged")
            h_max = max(factors[1 + 3 * i] >> 4 for i in range(components)) or 1
            v_max = max(factors[1 + 3 * i] & 15 for i in range(components)) or 1
            sof = (width, height, components, 8 * h_max, 8 * v_max)
        elif marker == 0xDD and len(body) >= 2:
            interval = struct.unpack_from(">H", body)[0]
        elif marker == 0xDA:
            if sof is None:
                raise InvalidInputError(f"{what} has no JPEG frame header (SOF) before its scan; the file is damaged")
            return JpegHeader(*sof, restart_interval=interval, length=start + 4 + len(body))
    raise InvalidInputError(f"{what} ends before its JPEG scan header within {MAX_HEADER_BYTES} bytes; damaged")


def _segments(data: bytes, what: str) -> Iterator[tuple[int, int, bytes]]:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise InvalidInputError(f"{what} has a malformed JPEG marker sequence before its scan; damaged")
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2:
            raise InvalidInputError(f"{what} has a JPEG marker segment of impossible length; damaged")
        yield marker, pos, data[pos + 4 : pos + 2 + length]
        pos += 2 + length
