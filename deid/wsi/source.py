"""Read whole-slide images: OpenSlide for every format, tifffile for raw JPEG tiles where safe.

`SlideReader` needs a local path (OpenSlide cannot read streams). OpenSlide errors latch: after one,
the handle is closed and every later call raises `SlideReadError`; callers drop the reader.

Raw tiles: where an OpenSlide level is stored as JPEG tiles on its own grid (a tiled TIFF page of
an Aperio, generic, Leica SCN, Ventana BIF or Philips TIFF slide, or a DICOM WSI instance; found by
`deid.wsi.rawtiles`), its tiles are read and decoded directly (faster than `read_region`, same
pixels: OpenSlide decodes with libjpeg the same way, RGB streams as RGB and YCbCr streams as YCbCr)
and copied to the output byte for byte when no redaction touches them.
"""

from __future__ import annotations

import os
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import openslide
import tifffile

from deid.codestream import Geometry, check_unit
from deid.errors import InputTooLargeError, InvalidInputError, SlideReadError, UnsupportedFormatError
from deid.settings import Box, Limits
from deid.wsi import jpeg, ndpi
from deid.wsi.formats import unsupported_reason
from deid.wsi.metadata import TIFF_TEXT_TAGS, SlideMetadata, scrub
from deid.wsi.rawtiles import (
    DICOM_VENDORS,
    MAX_RAW_TILE,
    MIN_RAW_TILE,
    RAW_VENDORS,
    TRUSTED_VENDORS,
    RawLevel,
    TileTable,
    find_dicom_levels,
    find_tiff_levels,
    same_pixels,
    sample_tiles,
    tiff_table,
)

__all__ = ["MAX_RAW_TILE", "MIN_RAW_TILE", "RawLevel", "SlideInfo", "SlideReader"]
DEFAULT_CACHE_TILES = 12
_T = TypeVar("_T")
_U = TypeVar("_U")


class Mapper(Protocol):
    """`map`, or a thread pool's map: a function applied to each item, results in order."""

    def __call__(self, fn: Callable[[_T], _U], items: Iterable[_T], /) -> Iterator[_U]: ...
_TIFF_JPEG = 7
_PHOTOMETRIC_RGB = 2


@dataclass(frozen=True)
class SlideInfo:
    """What the pipeline needs to know about a slide, small enough to travel in an element."""

    metadata: SlideMetadata
    raw_levels: tuple[RawLevel, ...]
    associated: tuple[str, ...]
    level_downsamples: tuple[float, ...] = ()  # OpenSlide's, one per input level

    @property
    def width(self) -> int:
        return self.metadata.width

    @property
    def height(self) -> int:
        return self.metadata.height

    def raw_level(self, downsample: int) -> RawLevel | None:
        for level in self.raw_levels:
            if level.downsample == downsample:
                return level
        return None


# Declared sizes a real slide never exceeds. OpenSlide allocates a tile or strip buffer from the
# declared geometry before reading a byte, and GLib aborts the whole process when that fails, so
# these are checked from the TIFF header first.
MAX_TIFF_SIDE = 1 << 20
MAX_TIFF_TILE_SIDE = 16384
MAX_TIFF_BUFFER_BYTES = 256 * 1024 * 1024
MAX_TIFF_PAGES = 4096


def check_tiff_geometry(path: str) -> None:
    """Refuse TIFF pages whose declared tile, strip or image size would force a hostile allocation.

    NDPI levels are single JPEG strips decoded one restart interval at a time: `deid.wsi.ndpi` checks those.
    """
    with open(path, "rb") as handle:
        if handle.read(4) not in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return
    if ndpi.is_ndpi(path):
        ndpi.check_ndpi(path)
        return
    try:
        tiff = tifffile.TiffFile(path)
    except (tifffile.TiffFileError, ValueError, OSError, struct.error, IndexError, KeyError, MemoryError):
        return  # not parsable as TIFF here: OpenSlide will refuse it with its own error
    with tiff:
        for index, page in enumerate(tiff_pages(tiff)):
            tags = page.tags
            value = _tag_reader(tags)
            width, length = value(256), value(257)
            samples, bits = value(277, 1), value(258, 8)
            if width > MAX_TIFF_SIDE or length > MAX_TIFF_SIDE:
                raise InputTooLargeError(
                    f"TIFF page {index} declares {width} x {length} pixels, more than {MAX_TIFF_SIDE} per side; "
                    "the file is damaged or not a slide"
                )
            if 322 in tags or 323 in tags:
                tile_w, tile_h = value(322), value(323)
                if not (0 < tile_w <= MAX_TIFF_TILE_SIDE and 0 < tile_h <= MAX_TIFF_TILE_SIDE):
                    raise InvalidInputError(
                        f"TIFF page {index} declares {tile_w} x {tile_h} tiles; tiles must be 1 to "
                        f"{MAX_TIFF_TILE_SIDE} pixels a side: the file is damaged"
                    )
                buffer = tile_w * tile_h * samples * max(bits, 8) // 8
            else:
                rows = min(value(278, length) or length, length)
                buffer = width * rows * samples * max(bits, 8) // 8
            if buffer > MAX_TIFF_BUFFER_BYTES:
                raise InputTooLargeError(
                    f"TIFF page {index} needs a {buffer}-byte buffer per tile or strip, more than "
                    f"{MAX_TIFF_BUFFER_BYTES}; the file is damaged or hostile"
                )


def tiff_pages(tiff: Any) -> list[Any]:
    """The pages of a TiffFile by index: tifffile's page iterator loops forever on a circular IFD chain."""
    return [tiff.pages[index] for index in range(min(len(tiff.pages), MAX_TIFF_PAGES))]


def _tag_reader(tags: Any) -> Any:
    def value(code: int, default: int = 0) -> int:
        tag = tags.get(code)
        raw = tag.value if tag is not None else default
        return int(raw[0] if isinstance(raw, tuple) else raw)

    return value


class SlideReader:
    """An open slide. Not thread-safe; one per DoFn instance (and per slide)."""

    def __init__(self, path: str, use_raw: bool = True) -> None:
        self.path = path
        check_tiff_geometry(path)
        try:
            self._slide: openslide.OpenSlide | None = openslide.OpenSlide(path)
        except openslide.OpenSlideUnsupportedFormatError:
            raise UnsupportedFormatError(unsupported_reason(path)) from None
        except (openslide.OpenSlideError, OSError) as exc:
            raise SlideReadError(
                f"OpenSlide cannot open this slide ({type(exc).__name__}); the file may be truncated or corrupt"
            ) from None
        self._tiff: Any = None
        self._tables: dict[int, TileTable] = {}  # RawLevel.page -> where its stored tiles lie
        self._tile_cache: OrderedDict[tuple[int, int, int], np.ndarray] = OrderedDict()
        # Decoded tiles kept (LRU): a band of tiles processed row by row decodes each tile once.
        self.cache_tiles = DEFAULT_CACHE_TILES
        self.info = self._read_info(use_raw)

    # -- opening ---------------------------------------------------------------------------------

    def _handle(self):  # type: ignore[no-untyped-def]
        if self._slide is None:
            raise SlideReadError("the slide handle was closed after an earlier read error")
        return self._slide

    def _read_info(self, use_raw: bool) -> SlideInfo:
        slide = self._handle()
        width, height = slide.dimensions
        properties = dict(slide.properties)
        icc = None
        try:
            profile = slide.color_profile
            if profile is not None:
                icc = profile.tobytes()
        except Exception:  # noqa: BLE001 - a broken profile only loses colour information
            icc = None
        raw_levels: tuple[RawLevel, ...] = ()
        extra_removed = 0
        vendor = properties.get("openslide.vendor", "")
        raw_levels, extra_removed = self._raw_levels(slide, use_raw and vendor in RAW_VENDORS, vendor)
        metadata = scrub(properties, width, height, icc, extra_removed)
        associated = tuple(sorted(slide.associated_images.keys()))
        return SlideInfo(
            metadata=metadata,
            raw_levels=raw_levels,
            associated=associated,
            level_downsamples=tuple(float(d) for d in slide.level_downsamples),
        )

    def _raw_levels(self, slide, use_raw: bool, vendor: str = "") -> tuple[tuple[RawLevel, ...], int]:  # type: ignore[no-untyped-def]
        if vendor in DICOM_VENDORS:
            return (self._dicom_raw_levels(slide) if use_raw else ()), 0
        try:
            tiff = tifffile.TiffFile(self.path)
        except Exception:  # noqa: BLE001 - not a TIFF (DICOM, MIRAX): no raw path
            return (), 0
        text_tags = 0
        for page in tiff_pages(tiff):
            tags = page.tags
            text_tags += sum(1 for name in TIFF_TEXT_TAGS if name in tags)
            text_tags += sum(1 for code in (700, 33723, 34377) if code in tags)  # XMP, IPTC, Photoshop
        if not use_raw:
            tiff.close()
            return (), text_tags
        try:
            found = find_tiff_levels(slide, tiff, tiff_pages(tiff), vendor, os.path.getsize(self.path))
        except Exception:  # noqa: BLE001 - a page tifffile cannot describe: OpenSlide reads the slide
            found = []
        self._tiff = tiff
        self._tables = {raw.page: tiff_table(tiff, raw.page) for _, raw in found}
        levels = self._checked(slide, found, vendor)
        if not levels or levels[0].downsample != 1:
            self._drop_raw()
            return (), text_tags
        return levels, text_tags

    def _dicom_raw_levels(self, slide) -> tuple[RawLevel, ...]:  # type: ignore[no-untyped-def]
        found, tables = find_dicom_levels(slide, self.path, lambda table: self._stored_bytes(table, 0))
        self._tables = dict(enumerate(tables))
        levels = self._checked(slide, found, "dicom")
        if not levels or levels[0].downsample != 1:
            self._drop_raw()
            return ()
        return levels

    def _checked(self, slide, found: list[tuple[int, RawLevel]], vendor: str) -> tuple[RawLevel, ...]:  # type: ignore[no-untyped-def]
        """The levels whose sample stored tiles decode as OpenSlide shows them (all, for Aperio and
        generic TIFF, where OpenSlide's layout is one tiled page per level)."""
        if vendor in TRUSTED_VENDORS:
            return tuple(raw for _, raw in found)
        kept = []
        for level_index, raw in found:
            try:
                ok = self._matches_openslide(slide, level_index, raw)
            except Exception:  # noqa: BLE001 - a tile that cannot be read or decoded here is not copied
                ok = False
            if ok:
                kept.append(raw)
            self._tile_cache.clear()
        return tuple(kept)

    def _matches_openslide(self, slide, level_index: int, raw: RawLevel) -> bool:  # type: ignore[no-untyped-def]
        table = self._tables[raw.page]
        picks = sample_tiles(raw, lambda index: bool(table.counts[index] > 0))
        scale = slide.level_downsamples[level_index]
        for c, r in picks:
            col, row = raw.col0 + c, raw.row0 + r
            w = min(raw.tile, raw.valid_width - c * raw.tile)
            h = min(raw.tile, raw.valid_height - r * raw.tile)
            if w <= 0 or h <= 0:
                continue
            stored = self.decoded_tile(raw, col, row)
            if stored is None:
                return False
            location = (round(col * raw.tile * scale), round(row * raw.tile * scale))
            shown = rgba_to_rgb(np.asarray(slide.read_region(location, level_index, (w, h))))
            if not same_pixels(stored[:h, :w], shown):
                return False
        return bool(picks)

    def _drop_raw(self) -> None:
        for table in self._tables.values():
            table.close()
        self._tables = {}
        if self._tiff is not None:
            self._tiff.close()
            self._tiff = None

    # -- pixels ----------------------------------------------------------------------------------

    def read_window(self, box: Box, grid_tile: int | None = None) -> np.ndarray:
        """Level-0 pixels of `box` as HxWx3 uint8 RGB (transparent areas white)."""
        raw = self.info.raw_level(1)
        if raw is not None and raw.page in self._tables and grid_tile in (None, raw.tile):
            return self._read_raw_window(raw, box)
        return self.read_region(box)

    def read_region(self, box: Box, level: int = 0) -> np.ndarray:
        slide = self._handle()
        downsample = slide.level_downsamples[level]
        try:
            image = slide.read_region(
                (int(box.x * downsample), int(box.y * downsample)), level, (box.width, box.height)
            )
        except (openslide.OpenSlideError, OSError) as exc:
            self.close()
            raise SlideReadError(
                f"OpenSlide failed to read a region ({type(exc).__name__}); the slide may be truncated"
            ) from None
        return rgba_to_rgb(np.asarray(image))

    def _read_raw_window(self, raw: RawLevel, box: Box) -> np.ndarray:
        """From the stored tiles; what lies outside them (an SCN collection around its main image, a
        missing tile of a sparse slide) is white, as OpenSlide's transparent pixels are."""
        t = raw.tile
        x_end = raw.col0 * t + raw.valid_width
        y_end = raw.row0 * t + raw.valid_height
        pieces = []
        covered = 0
        for row in range(box.y // t, (box.y + box.height - 1) // t + 1):
            for col in range(box.x // t, (box.x + box.width - 1) // t + 1):
                x0, y0 = max(box.x, col * t), max(box.y, row * t)
                x1 = min(box.x + box.width, (col + 1) * t, x_end)
                y1 = min(box.y + box.height, (row + 1) * t, y_end)
                if x1 <= x0 or y1 <= y0:
                    continue
                tile = self.decoded_tile(raw, col, row)
                if tile is None:
                    continue
                pieces.append((tile, row, col, x0, y0, x1, y1))
                covered += (x1 - x0) * (y1 - y0)
        # Pieces never overlap: when they cover the box, no pixel is left white.
        if covered == box.width * box.height:
            out = np.empty((box.height, box.width, 3), np.uint8)
        else:
            out = np.full((box.height, box.width, 3), 255, np.uint8)
        for tile, row, col, x0, y0, x1, y1 in pieces:
            out[y0 - box.y : y1 - box.y, x0 - box.x : x1 - box.x] = tile[
                y0 - row * t : y1 - row * t, x0 - col * t : x1 - col * t
            ]
        return out

    def has_tile(self, raw: RawLevel, col: int, row: int) -> bool:
        """Level tile (col, row) is a stored tile of `raw` (inside its grid and not missing)."""
        index = raw.stored_index(col, row)
        table = self._tables.get(raw.page)
        return index is not None and table is not None and index < table.counts.size and table.counts[index] > 0

    def decoded_tile(self, raw: RawLevel, col: int, row: int) -> np.ndarray | None:
        """The stored tile at level tile (col, row), decoded; None where no tile is stored."""
        key = (raw.page, col, row)
        cached = self._tile_cache.get(key)
        if cached is not None:
            self._tile_cache.move_to_end(key)
            return cached
        if not self.has_tile(raw, col, row):
            return None
        tile = decode_stored_tile(raw, self.raw_tile(raw, col, row))
        self._remember(key, tile)
        return tile

    def _remember(self, key: tuple[int, int, int], tile: np.ndarray) -> None:
        self._tile_cache[key] = tile
        while len(self._tile_cache) > self.cache_tiles:
            self._tile_cache.popitem(last=False)

    def prefetch_windows(self, boxes: Iterable[Box], grid_tile: int, mapper: Mapper = map) -> None:
        """Decode, through `mapper` (a thread pool's map: the decoder releases the GIL), the stored tiles
        that `read_window(box, grid_tile)` will read for these boxes and are not cached yet."""
        raw = self.info.raw_level(1)
        if raw is None or raw.page not in self._tables or grid_tile != raw.tile:
            return
        t = raw.tile
        keys = [
            (col, row)
            for box in boxes
            for row in range(box.y // t, (box.y + box.height - 1) // t + 1)
            for col in range(box.x // t, (box.x + box.width - 1) // t + 1)
        ]
        self.prefetch_tiles(raw, keys, mapper)

    def prefetch_tiles(self, raw: RawLevel, keys: Iterable[tuple[int, int]], mapper: Mapper = map) -> None:
        """Decode the stored tiles (col, row) of `raw` that are not cached yet, through `mapper`.

        The reader itself is only touched from the calling thread; `cache_tiles` must hold them all.
        """
        todo = list(
            dict.fromkeys(
                key for key in keys if (raw.page, *key) not in self._tile_cache and self.has_tile(raw, *key)
            )
        )
        if not todo:
            return
        streams = [self.raw_tile(raw, col, row) for col, row in todo]
        for (col, row), tile in zip(todo, mapper(lambda data: decode_stored_tile(raw, data), streams), strict=True):
            self._remember((raw.page, col, row), tile)

    def stored_size(self, raw: RawLevel, col: int, row: int) -> int:
        """Bytes stored for level tile (col, row) (an upper bound of `raw_tile`'s length), 0 if none."""
        index = raw.stored_index(col, row)
        table = self._tables.get(raw.page)
        if index is None or table is None or index >= table.counts.size:
            return 0
        return int(table.counts[index])

    def raw_tile(self, raw: RawLevel, col: int, row: int) -> bytes:
        """The stored JPEG stream of level tile (col, row) (abbreviated when the page has JPEGTables),
        text stripped."""
        table = self._tables.get(raw.page)
        if table is None:
            raise SlideReadError("raw tile access is not available for this slide")
        index = raw.stored_index(col, row)
        if index is None or index >= min(table.offsets.size, table.counts.size):
            raise SlideReadError(
                "the TIFF declares more tiles than it stores offsets for; the slide is damaged"
            )
        data = self._stored_bytes(table, index)
        try:
            return jpeg.strip_metadata(data)
        except ValueError:
            raise SlideReadError("a JPEG tile is malformed") from None

    @staticmethod
    def _stored_bytes(table: TileTable, index: int) -> bytes:
        offset, count = int(table.offsets[index]), int(table.counts[index])
        handle = table.handle
        handle.seek(offset)
        data = handle.read(count)
        if len(data) != count or count == 0:
            raise SlideReadError("a tile lies beyond the end of the file; the slide is truncated")
        return bytes(data)

    def thumbnail(self, max_side: int = 512) -> np.ndarray:
        """The whole slide at most `max_side` pixels a side (OpenSlide reads its smallest level)."""
        slide = self._handle()
        try:
            image = slide.get_thumbnail((max_side, max_side))
        except (openslide.OpenSlideError, OSError) as exc:
            self.close()
            raise SlideReadError(f"the slide thumbnail could not be read ({type(exc).__name__})") from None
        return rgba_to_rgb(np.asarray(image))

    def associated_image(self, name: str) -> np.ndarray:
        slide = self._handle()
        try:
            image = slide.associated_images[name]
        except (openslide.OpenSlideError, OSError, KeyError) as exc:
            self.close()
            raise SlideReadError(f"an associated image could not be read ({type(exc).__name__})") from None
        return rgba_to_rgb(np.asarray(image))

    def close(self) -> None:
        if self._slide is not None:
            self._slide.close()
            self._slide = None
        self._drop_raw()
        self._tile_cache.clear()


def decode_stored_tile(raw: RawLevel, data: bytes) -> np.ndarray:
    """A stored JPEG tile of `raw` as HxWx3 RGB (thread-safe: touches no reader state)."""
    # The tile's SOF must declare the page's tile size before libjpeg allocates what it declares.
    check_unit(data, "jpeg", Geometry(raw.tile, raw.tile, 3), f"a JPEG tile of level {raw.downsample}x")
    try:
        tile = jpeg.decode(data, raw.jpegtables, raw.rgb_samples)
    except MemoryError:
        raise InputTooLargeError("decoding a JPEG tile ran out of memory; the slide is damaged or hostile") from None
    except Exception as exc:  # noqa: BLE001 - any codec failure means an unreadable tile
        raise SlideReadError(f"a JPEG tile could not be decoded ({type(exc).__name__})") from None
    if tile.shape[0] < raw.tile or tile.shape[1] < raw.tile:
        raise SlideReadError("a JPEG tile is smaller than the declared tile size")
    return tile


def rgba_to_rgb(rgba: np.ndarray) -> np.ndarray:
    """OpenSlide's premultiplied RGBA -> RGB over white."""
    if rgba.ndim == 3 and rgba.shape[2] == 4:
        alpha = rgba[:, :, 3:4]
        if alpha.min() == 255:
            return np.ascontiguousarray(rgba[:, :, :3])
        rgb = rgba[:, :, :3].astype(np.uint16) + (255 - alpha.astype(np.uint16))
        return np.minimum(rgb, 255).astype(np.uint8)
    if rgba.ndim == 2:
        return np.repeat(rgba[:, :, None], 3, axis=2)
    return np.ascontiguousarray(rgba[:, :, :3])


def check_limits(info: SlideInfo, file_bytes: int, limits: Limits) -> None:
    if info.width * info.height > limits.max_pixels:
        raise InputTooLargeError(
            f"the slide has {info.width * info.height} pixels at level 0, more than --max_pixels "
            f"{limits.max_pixels}; raise the limit to process it"
        )
    if file_bytes > limits.max_file_bytes:
        raise InputTooLargeError(f"the slide is {file_bytes} bytes, more than --max_file_bytes {limits.max_file_bytes}")


def probe(reader: SlideReader, tile: int) -> None:
    """Read a few tiles (corners and centre) so truncated or undecodable slides fail early."""
    info = reader.info
    w, h = info.width, info.height
    size = min(tile, w, h)
    points = {(0, 0), (w - size, 0), (0, h - size), (w - size, h - size), ((w - size) // 2, (h - size) // 2)}
    for x, y in sorted(points):
        reader.read_window(Box(x, y, size, size))
        if info.raw_levels:
            reader.read_region(Box(x, y, min(size, 64), min(size, 64)))
