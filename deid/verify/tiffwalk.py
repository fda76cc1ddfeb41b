"""A minimal, defensive TIFF/BigTIFF IFD walker that yields the byte values of text-bearing tags.

It follows the main IFD chain, SubIFDs (330), the EXIF (34665) and GPS (34853) IFDs, guards against
loops and absurd counts, and never decodes pixels, so it is cheap on multi-gigabyte slides and safe
on hostile files (it reads only what the IFD entries point at, each value capped at `MAX_VALUE`).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MAX_IFDS = 4096
MAX_ENTRIES = 4096
MAX_VALUE = 32 * 1024 * 1024

# Types whose values are bytes: BYTE, ASCII, SBYTE, UNDEFINED.
_BYTE_TYPES = {1, 2, 6, 7}
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}
_IFD_POINTERS = {330, 34665, 34853, 40965}

TAG_NAMES = {
    269: "DocumentName",
    270: "ImageDescription",
    271: "Make",
    272: "Model",
    285: "PageName",
    305: "Software",
    306: "DateTime",
    315: "Artist",
    316: "HostComputer",
    347: "JPEGTables",
    700: "XMP",
    33432: "Copyright",
    34675: "ICCProfile",
    36867: "DateTimeOriginal",
    36868: "DateTimeDigitized",
    37510: "UserComment",
    42016: "ImageUniqueID",
    65427: "NDPI_Reference",
    65428: "NDPI_AuthCode",
    65442: "NDPI_ScannerSerialNumber",
    65448: "NDPI_FirmwareVersion",
    65449: "NDPI_PropertyMap",
}


@dataclass(frozen=True)
class TiffText:
    """One byte-valued tag: which IFD (by order of discovery), which tag, its raw bytes."""

    ifd: int
    tag: int
    data: bytes

    @property
    def name(self) -> str:
        return TAG_NAMES.get(self.tag, f"tag{self.tag}")


class TiffParseError(ValueError):
    """The bytes are not a TIFF this walker can follow."""


def _open(source: str | Path | bytes | BinaryIO) -> tuple[BinaryIO, bool]:
    if isinstance(source, bytes | bytearray | memoryview):
        return io.BytesIO(bytes(source)), True
    if isinstance(source, str | Path):
        return open(source, "rb"), True
    return source, False


def iter_text_tags(source: str | Path | bytes | BinaryIO) -> Iterator[TiffText]:
    """Every BYTE/ASCII/SBYTE/UNDEFINED tag value of every IFD reachable from the header."""
    handle, owned = _open(source)
    try:
        yield from _walk(handle)
    except struct.error as exc:  # a field cut short by the end of the file
        raise TiffParseError("truncated TIFF structure") from exc
    finally:
        if owned:
            handle.close()


def _walk(handle: BinaryIO) -> Iterator[TiffText]:
    handle.seek(0, io.SEEK_END)
    size = handle.tell()
    handle.seek(0)
    header = handle.read(16)
    if header[:2] == b"II":
        order = "<"
    elif header[:2] == b"MM":
        order = ">"
    else:
        raise TiffParseError("no TIFF byte-order mark")
    if len(header) < 8:
        raise TiffParseError("truncated TIFF header")
    (magic,) = struct.unpack(order + "H", header[2:4])
    if magic == 42:
        big = False
        (first,) = struct.unpack(order + "I", header[4:8])
    elif magic == 43:
        big = True
        (first,) = struct.unpack(order + "Q", header[8:16])
    else:
        raise TiffParseError("not a TIFF or BigTIFF header")
    entry_fmt = order + ("HHQ8s" if big else "HHI4s")
    entry_size = 20 if big else 12
    count_fmt = order + ("Q" if big else "H")
    count_size = 8 if big else 2
    next_fmt = order + ("Q" if big else "I")
    offset_fmt = order + ("Q" if big else "I")
    inline = 8 if big else 4

    pending = [first]
    seen: set[int] = set()
    ifd_index = 0
    while pending and len(seen) < MAX_IFDS:
        offset = pending.pop(0)
        if offset == 0 or offset in seen or offset + count_size > size:
            continue
        seen.add(offset)
        handle.seek(offset)
        raw_count = handle.read(count_size)
        if len(raw_count) < count_size:
            continue
        (count,) = struct.unpack(count_fmt, raw_count)
        if count > MAX_ENTRIES:
            raise TiffParseError(f"IFD with {count} entries")
        table = handle.read(count * entry_size)
        raw_next = handle.read(struct.calcsize(next_fmt))
        values: list[TiffText] = []
        for index in range(len(table) // entry_size):
            tag, typ, n, field = struct.unpack_from(entry_fmt, table, index * entry_size)
            width = _TYPE_SIZES.get(typ)
            if width is None:
                continue
            nbytes = width * n
            if tag in _IFD_POINTERS and typ in (4, 13, 16, 18):
                pending.extend(_offsets(handle, order, typ, n, field, nbytes, inline, offset_fmt, size))
                continue
            if typ not in _BYTE_TYPES or nbytes == 0 or nbytes > MAX_VALUE:
                continue
            if nbytes <= inline:
                data = field[:nbytes]
            else:
                (where,) = struct.unpack(offset_fmt, field)
                if where + nbytes > size:
                    continue
                handle.seek(where)
                data = handle.read(nbytes)
            values.append(TiffText(ifd_index, tag, data))
        yield from values
        ifd_index += 1
        if len(raw_next) == struct.calcsize(next_fmt):
            (nxt,) = struct.unpack(next_fmt, raw_next)
            pending.append(nxt)


def _offsets(
    handle: BinaryIO, order: str, typ: int, n: int, field: bytes, nbytes: int, inline: int, offset_fmt: str, size: int
) -> list[int]:
    fmt = {4: "I", 13: "I", 16: "Q", 18: "Q"}[typ]
    n = min(n, MAX_IFDS)
    nbytes = struct.calcsize(fmt) * n
    if nbytes <= inline:
        data = field[:nbytes]
    else:
        (where,) = struct.unpack(offset_fmt, field)
        if where + nbytes > size:
            return []
        handle.seek(where)
        data = handle.read(nbytes)
    return list(struct.unpack(order + fmt * (len(data) // struct.calcsize(fmt)), data[: struct.calcsize(fmt) * n]))
