"""Read whole-slide images: OpenSlide for every format, tifffile for raw JPEG tiles where safe.

`SlideReader` needs a local path (OpenSlide cannot read streams). OpenSlide errors latch: after one,
the handle is closed and every later call raises `SlideReadError`; callers drop the reader.

Raw tiles: for Aperio SVS and generic tiled TIFF, each OpenSlide level is one tiled TIFF page, so
its JPEG tiles can be read and decoded directly (faster than `read_region`, same pixels: OpenSlide
decodes with libjpeg the same way, RGB streams as RGB and YCbCr streams as YCbCr) and copied to
the output byte for byte when no redaction touches them.
"""

from __future__ import annotations

import os
import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import openslide
import tifffile

from deid.codestream import Geometry, check_unit
from deid.errors import InputTooLargeError, InvalidInputError, SlideReadError, UnsupportedFormatError
from deid.settings import Box, Limits
from deid.wsi import jpeg
from deid.wsi.metadata import TIFF_TEXT_TAGS, SlideMetadata, scrub

RAW_VENDORS = ("aperio", "generic-tiff")
MIN_RAW_TILE = 128
MAX_RAW_TILE = 2048
_TIFF_JPEG = 7
DEFAULT_CACHE_TILES = 12
_PHOTOMETRIC_RGB = 2
_PHOTOMETRIC_YCBCR = 6


@dataclass(frozen=True)
class RawLevel:
    """A tiled TIFF page of the input holding the JPEG tiles of one OpenSlide level."""

    page: int
    downsample: int
    width: int
    height: int
    tile: int
    rgb_samples: bool  # photometric RGB: the JPEG streams hold RGB samples (no colour transform)
    subsampling: tuple[int, int]
    jpegtables: bytes | None = field(repr=False)  # input bytes (sanitized): never in a log line

    @property
    def cols(self) -> int:
        return -(-self.width // self.tile)

    @property
    def rows(self) -> int:
        return -(-self.height // self.tile)


@dataclass(frozen=True)
class SlideInfo:
    """What the pipeline needs to know about a slide, small enough to travel in an element."""

    metadata: SlideMetadata
    raw_levels: tuple[RawLevel, ...]
    associated: tuple[str, ...]

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
    """Refuse TIFF pages whose declared tile, strip or image size would force a hostile allocation."""
    with open(path, "rb") as handle:
        if handle.read(4) not in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
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
            raise UnsupportedFormatError(
                "OpenSlide does not recognise this slide format; convert it to a supported format"
            ) from None
        except (openslide.OpenSlideError, OSError) as exc:
            raise SlideReadError(
                f"OpenSlide cannot open this slide ({type(exc).__name__}); the file may be truncated or corrupt"
            ) from None
        self._tiff: Any = None
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
        raw_levels, extra_removed = self._raw_levels(slide, use_raw and vendor in RAW_VENDORS)
        metadata = scrub(properties, width, height, icc, extra_removed)
        associated = tuple(sorted(slide.associated_images.keys()))
        return SlideInfo(metadata=metadata, raw_levels=raw_levels, associated=associated)

    def _raw_levels(self, slide, use_raw: bool) -> tuple[tuple[RawLevel, ...], int]:  # type: ignore[no-untyped-def]
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
        tiled = [i for i, page in enumerate(tiff_pages(tiff)) if page.is_tiled]
        file_size = os.path.getsize(self.path)
        levels: list[RawLevel] = []
        width0, height0 = slide.dimensions
        for level_index, (w, h) in enumerate(slide.level_dimensions):
            if level_index >= len(tiled):
                break
            page = tiff.pages[tiled[level_index]]
            downsample = round(slide.level_downsamples[level_index])
            if downsample & (downsample - 1) or not _raw_page_ok(page, w, h, file_size):
                continue
            expected_w, expected_h = width0, height0
            d = 1
            while d < downsample:
                expected_w, expected_h, d = -(-expected_w // 2), -(-expected_h // 2), d * 2
            if abs(expected_w - w) > 1 or abs(expected_h - h) > 1:
                continue
            levels.append(
                RawLevel(
                    page=tiled[level_index],
                    downsample=downsample,
                    width=w,
                    height=h,
                    tile=page.tilewidth,  # type: ignore[union-attr]
                    rgb_samples=page.photometric == _PHOTOMETRIC_RGB,  # type: ignore[union-attr]
                    subsampling=tuple(page.subsampling or (1, 1)),  # type: ignore[union-attr]
                    jpegtables=_clean_tables(page.jpegtables),
                )
            )
        if not levels or levels[0].downsample != 1:
            tiff.close()
            return (), text_tags
        self._tiff = tiff
        return tuple(levels), text_tags

    # -- pixels ----------------------------------------------------------------------------------

    def read_window(self, box: Box, grid_tile: int | None = None) -> np.ndarray:
        """Level-0 pixels of `box` as HxWx3 uint8 RGB (transparent areas white)."""
        raw = self.info.raw_level(1)
        if raw is not None and self._tiff is not None and grid_tile in (None, raw.tile):
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
        out = np.empty((box.height, box.width, 3), np.uint8)
        t = raw.tile
        for row in range(box.y // t, (box.y + box.height - 1) // t + 1):
            for col in range(box.x // t, (box.x + box.width - 1) // t + 1):
                tile = self.decoded_tile(raw, col, row)
                x0, y0 = max(box.x, col * t), max(box.y, row * t)
                x1 = min(box.x + box.width, (col + 1) * t, raw.width)
                y1 = min(box.y + box.height, (row + 1) * t, raw.height)
                out[y0 - box.y : y1 - box.y, x0 - box.x : x1 - box.x] = tile[
                    y0 - row * t : y1 - row * t, x0 - col * t : x1 - col * t
                ]
        return out

    def decoded_tile(self, raw: RawLevel, col: int, row: int) -> np.ndarray:
        key = (raw.page, col, row)
        cached = self._tile_cache.get(key)
        if cached is not None:
            self._tile_cache.move_to_end(key)
            return cached
        data = self.raw_tile(raw, col, row)
        # The tile's SOF must declare the page's tile size before libjpeg allocates what it declares.
        check_unit(data, "jpeg", Geometry(raw.tile, raw.tile, 3), f"a JPEG tile of level {raw.downsample}x")
        try:
            tile = jpeg.decode(data, raw.jpegtables, raw.rgb_samples)
        except MemoryError:
            raise InputTooLargeError(
                "decoding a JPEG tile ran out of memory; the slide is damaged or hostile"
            ) from None
        except Exception as exc:  # noqa: BLE001 - any codec failure means an unreadable tile
            raise SlideReadError(f"a JPEG tile could not be decoded ({type(exc).__name__})") from None
        if tile.shape[0] < raw.tile or tile.shape[1] < raw.tile:
            raise SlideReadError("a JPEG tile is smaller than the declared tile size")
        self._tile_cache[key] = tile
        while len(self._tile_cache) > self.cache_tiles:
            self._tile_cache.popitem(last=False)
        return tile

    def raw_tile(self, raw: RawLevel, col: int, row: int) -> bytes:
        """The tile's JPEG stream as stored (abbreviated when the page has JPEGTables), text stripped."""
        if self._tiff is None:
            raise SlideReadError("raw tile access is not available for this slide")
        page = self._tiff.pages[raw.page]
        index = row * raw.cols + col
        offsets, counts = page.dataoffsets, page.databytecounts
        if index >= min(len(offsets), len(counts)):
            raise SlideReadError(
                "the TIFF declares more tiles than it stores offsets for; the slide is damaged"
            )
        offset, count = offsets[index], counts[index]
        handle = self._tiff.filehandle
        handle.seek(offset)
        data = handle.read(count)
        if len(data) != count or count == 0:
            raise SlideReadError("a tile lies beyond the end of the file; the slide is truncated")
        try:
            return jpeg.strip_metadata(data)
        except ValueError:
            raise SlideReadError("a JPEG tile is malformed") from None

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
        if self._tiff is not None:
            self._tiff.close()
            self._tiff = None
        self._tile_cache.clear()


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


def _raw_page_ok(page, width: int, height: int, file_size: int) -> bool:  # type: ignore[no-untyped-def]
    if not page.is_tiled or page.compression != _TIFF_JPEG:
        return False
    if page.imagewidth != width or page.imagelength != height:
        return False
    if page.tilewidth != page.tilelength or page.tilewidth % 16:
        return False
    if not MIN_RAW_TILE <= page.tilewidth <= MAX_RAW_TILE:
        return False
    if page.samplesperpixel != 3 or page.bitspersample != 8 or page.planarconfig != 1:
        return False
    if page.photometric not in (_PHOTOMETRIC_RGB, _PHOTOMETRIC_YCBCR):
        return False
    if getattr(page, "tiledepth", 1) != 1 or getattr(page, "imagedepth", 1) != 1:
        return False
    offsets = np.asarray(page.dataoffsets, dtype=np.int64)
    counts = np.asarray(page.databytecounts, dtype=np.int64)
    return bool(counts.size) and bool((counts > 0).all()) and bool(((offsets + counts) <= file_size).all())


def _clean_tables(tables: bytes | None) -> bytes | None:
    if not tables:
        return None
    try:
        return jpeg.strip_metadata(bytes(tables))
    except ValueError:
        return None


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
