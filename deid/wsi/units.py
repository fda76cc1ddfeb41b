"""Check the declared size of every compressed tile and strip of a TIFF slide before any decoder runs.

OpenSlide, libtiff and libjpeg decode what a JPEG or JPEG 2000 unit's own header declares. The
slide probe (`deid.wsi.probe`, in a memory-capped child) calls `check_tiff_units` before it opens
the slide: each tile and strip of every JPEG (7) or JPEG 2000 (33003, 33004, 33005, 34712) page is
read up to its header and checked with `deid.codestream.check_unit` against the page's tile or
strip size and samples per pixel (an NDPI page, one JPEG that tifffile presents as tiles, against
the page size). Other compressions (none, LZW, deflate, PackBits) decode into a buffer sized by the
TIFF tags, which `deid.wsi.source.check_tiff_geometry` bounds. Raw tiles decoded in the worker are
checked again, one by one, right before decoding (`deid.wsi.source.SlideReader.decoded_tile`).

Cost: one seek and one small read per unit (a few KiB), about a second for 100,000 tiles.
"""

from __future__ import annotations

import struct
from typing import Any

import tifffile

from deid.codestream import HEADER_PREFIX_BYTES, Codec, Geometry, check_unit, read_header
from deid.errors import InvalidInputError
from deid.wsi import ndpi
from deid.wsi.source import tiff_pages

TIFF_JPEG = 7
TIFF_JPEG2000 = frozenset({33003, 33004, 33005, 34712})
_PLANAR_SEPARATE = 2
NDPI_MCU_STARTS = 65426
TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
# A header not found in this many bytes of a unit is refused (APPn segments pushing the SOF further
# out are metadata, at most 64 KiB each).
MAX_HEADER_SEARCH_BYTES = 1024 * 1024


def page_codec(page: Any) -> Codec | None:
    """The codec whose header every unit of `page` has, or None when its units are not JPEG/JPEG 2000."""
    compression = int(page.compression)
    if compression == TIFF_JPEG:
        return "jpeg"
    if compression in TIFF_JPEG2000:
        return "jpeg2000"
    return None


def check_tiff_units(path: str) -> None:
    """Raise InputTooLargeError or InvalidInputError for the first unit whose header disagrees with its page."""
    with open(path, "rb") as handle:
        if handle.read(4) not in TIFF_MAGICS:
            return
    if ndpi.is_ndpi(path):
        ndpi.check_ndpi(path)  # one JPEG per level, sides past 65535 declared as 0: its own rule
        return
    try:
        tiff = tifffile.TiffFile(path)
    except (tifffile.TiffFileError, ValueError, OSError, struct.error, IndexError, KeyError, MemoryError):
        return  # not parsable as TIFF here: OpenSlide will refuse it with its own error
    with tiff:
        for index, page in enumerate(tiff_pages(tiff)):
            codec = page_codec(page)
            if codec is not None:
                _check_page(tiff.filehandle, index, page, codec)


def _check_page(handle: Any, index: int, page: Any, codec: Codec) -> None:
    separate = int(page.planarconfig) == _PLANAR_SEPARATE
    samples = 1 if separate else int(page.samplesperpixel)
    offsets, counts = page.dataoffsets, page.databytecounts
    if getattr(page, "jpegheader", None) is not None:
        # NDPI: one JPEG per page, which tifffile presents as tiles (its restart intervals); the unit
        # a decoder sees is the whole stream, whose header ends where the first interval starts.
        header_bytes = int(page.tags.valueof(NDPI_MCU_STARTS)[0])
        handle.seek(int(offsets[0]) - header_bytes)
        data = handle.read(min(header_bytes, MAX_HEADER_SEARCH_BYTES))
        geometry = Geometry(int(page.imagewidth), int(page.imagelength), samples)
        check_unit(data, codec, geometry, f"the JPEG stream of NDPI page {index}")
        return
    if page.is_tiled:
        kind = "tile"
        geometries = [Geometry(int(page.tilewidth), int(page.tilelength), samples)] * len(offsets)
    else:
        kind = "strip"
        width, length = int(page.imagewidth), int(page.imagelength)
        rows = min(int(page.rowsperstrip or length) or length, length)
        per_plane = max(-(-length // rows), 1)
        geometries = []
        for unit in range(len(offsets)):
            left = length - (unit % per_plane) * rows
            geometries.append(Geometry(width, min(rows, max(left, 1)), samples, short_height=rows))
    what = f"a {'JPEG' if codec == 'jpeg' else 'JPEG 2000'} {kind} of TIFF page {index}"
    for offset, count, geometry in zip(offsets, counts, geometries, strict=False):
        if count <= 0:
            continue  # a sparse (absent) unit: nothing is decoded
        handle.seek(int(offset))
        data = handle.read(min(int(count), HEADER_PREFIX_BYTES))
        if len(data) < min(int(count), HEADER_PREFIX_BYTES):
            raise InvalidInputError(f"{what} lies beyond the end of the file; the slide is truncated")
        if read_header(data, codec, what) is None and int(count) > len(data):
            handle.seek(int(offset))
            data = handle.read(min(int(count), MAX_HEADER_SEARCH_BYTES))
        check_unit(data, codec, geometry, what)
