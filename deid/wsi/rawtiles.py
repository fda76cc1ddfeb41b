"""Where an input's JPEG tiles sit on a regular grid, so that clean tiles can be copied byte for byte.

For each OpenSlide level, `find_tiff_levels` / `find_dicom_levels` look for the stored JPEG tiles that
make it up: a tiled TIFF page (Aperio, generic TIFF, Leica SCN, Ventana BIF, Philips TIFF) or a DICOM
VL Whole Slide instance (TILED_FULL, JPEG Baseline, one frame per tile). A level qualifies when its
stored tiles are square, 128 to 2048 pixels and a multiple of 16, 8-bit 3-sample RGB or YCbCr, and
lie on the level's grid:

* Aperio and generic TIFF: the k-th tiled page is level k (OpenSlide's own rule for these formats).
* Other TIFF vendors: the one tiled JPEG page whose size is the level's (Philips pads reduced levels to
  whole tiles, which is allowed). A Leica SCN main image sits at an offset inside its collection
  (`openslide.region[0]`): the offset must be a whole number of tiles at that level, and the level's
  pixels outside the stored image are transparent, hence white, as OpenSlide shows them. Slides with
  more than one region (several SCN main images, several BIF areas OpenSlide reports) are not copied.
  A Ventana BIF level 0 whose tiles overlap is laid out by OpenSlide with a fractional tile advance:
  its size then differs from the page's and it is not copied.
* DICOM: the instance of the series whose total pixel matrix is the level's; its frames are found by
  walking the encapsulated items (one item per frame, no concatenation).

For every vendor other than Aperio and generic TIFF, a few stored tiles of each level (first, middle,
last) are decoded and compared with what OpenSlide shows at the same place, so that a layout this
module misreads (tile order, overlaps, a region it did not see) is never copied: the level is then
re-encoded from OpenSlide's pixels instead.
"""

from __future__ import annotations

import dataclasses
import math
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from deid.wsi import jpeg

MIN_RAW_TILE = 128
MAX_RAW_TILE = 2048
TRUSTED_VENDORS = ("aperio", "generic-tiff")
TIFF_VENDORS = (*TRUSTED_VENDORS, "leica", "ventana", "philips")
DICOM_VENDORS = ("dicom",)
RAW_VENDORS = (*TIFF_VENDORS, *DICOM_VENDORS)
_TIFF_JPEG = 7
_PHOTOMETRIC_RGB = 2
_PHOTOMETRIC_YCBCR = 6
VL_WSI = "1.2.840.10008.5.1.4.1.1.77.1.6"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
# Files of a DICOM slide's directory looked at for its instances (localize gives each unit its own).
MAX_DICOM_FILES = 256
# Sample tiles compared with OpenSlide: a stored tile decodes as OpenSlide shows it when both use
# libjpeg; a misplaced tile differs by tens of grey levels.
MAX_MEAN_DIFFERENCE = 1.5
MAX_PEAK_DIFFERENCE = 24


@dataclass(frozen=True)
class RawLevel:
    """The stored JPEG tiles of one OpenSlide level, on the level's tile grid."""

    page: int  # TIFF page index, or the index of the DICOM instance among the reader's frame tables
    downsample: int
    width: int  # the OpenSlide level's size
    height: int
    tile: int
    rgb_samples: bool  # the JPEG streams hold RGB samples (no colour transform)
    subsampling: tuple[int, int]
    jpegtables: bytes | None = field(repr=False)  # input bytes (sanitized): never in a log line
    col0: int = 0  # level tile column and row of the stored grid's first tile (SCN main image offset)
    row0: int = 0
    page_width: int = 0  # the stored image's size when it is not the level's (0: the level's)
    page_height: int = 0
    sparse: bool = False  # some stored tiles are missing; OpenSlide shows them transparent

    @property
    def stored_width(self) -> int:
        return self.page_width or self.width

    @property
    def stored_height(self) -> int:
        return self.page_height or self.height

    @property
    def cols(self) -> int:
        """Stored tiles across."""
        return -(-self.stored_width // self.tile)

    @property
    def rows(self) -> int:
        return -(-self.stored_height // self.tile)

    @property
    def valid_width(self) -> int:
        """Pixels of the stored grid OpenSlide shows, from the grid's origin (it clips to the level)."""
        return max(0, min(self.stored_width, self.width - self.col0 * self.tile))

    @property
    def valid_height(self) -> int:
        return max(0, min(self.stored_height, self.height - self.row0 * self.tile))

    def stored_index(self, col: int, row: int) -> int | None:
        """The stored tile's index for level tile (col, row), None outside the stored grid."""
        c, r = col - self.col0, row - self.row0
        if not (0 <= c < self.cols and 0 <= r < self.rows):
            return None
        return r * self.cols + c

    def copyable(self, out_width: int, out_height: int, col: int, row: int) -> bool:
        """Output tile (col, row) of a level of size out_width x out_height shows only this stored tile's
        pixels, where OpenSlide shows them: inside the stored grid, and either whole inside both the
        stored image and the output level, or at an edge where both end at the same pixel."""
        return _axis_copyable(col, self.col0, self.valid_width, self.tile, out_width) and _axis_copyable(
            row, self.row0, self.valid_height, self.tile, out_height
        )


def _axis_copyable(index: int, origin: int, valid: int, tile: int, out_size: int) -> bool:
    x0, start = index * tile, origin * tile
    if x0 < start or valid <= 0:
        return False
    end = start + valid  # where the pixels OpenSlide shows from the stored grid end
    x1 = x0 + tile
    if x1 <= min(end, out_size):
        return True
    return end == out_size and x0 < out_size <= x1


@dataclass
class TileTable:
    """Where each stored tile of a raw level lies: offsets and byte counts in one open file."""

    handle: BinaryIO | Any
    offsets: np.ndarray
    counts: np.ndarray
    owned: bool = False  # the handle is ours to close (DICOM instances)

    def close(self) -> None:
        if self.owned:
            self.handle.close()


def raw_tile_ok(tile: int) -> bool:
    return MIN_RAW_TILE <= tile <= MAX_RAW_TILE and tile % 16 == 0


# -- TIFF ------------------------------------------------------------------------------------------------


def page_ok(page: Any, file_size: int, allow_missing: bool) -> bool:
    """A tiled JPEG page of 8-bit RGB/YCbCr square tiles, every stored tile inside the file."""
    if not page.is_tiled or page.compression != _TIFF_JPEG:
        return False
    if page.tilewidth != page.tilelength or not raw_tile_ok(page.tilewidth):
        return False
    if page.samplesperpixel != 3 or page.bitspersample != 8 or page.planarconfig != 1:
        return False
    if page.photometric not in (_PHOTOMETRIC_RGB, _PHOTOMETRIC_YCBCR):
        return False
    if getattr(page, "tiledepth", 1) != 1 or getattr(page, "imagedepth", 1) != 1:
        return False
    offsets = np.asarray(page.dataoffsets, dtype=np.int64)
    counts = np.asarray(page.databytecounts, dtype=np.int64)
    cols = -(-page.imagewidth // page.tilewidth)
    rows = -(-page.imagelength // page.tilelength)
    if counts.size != cols * rows or offsets.size != counts.size:
        return False
    present = counts > 0
    if not present.any() or (not allow_missing and not present.all()):
        return False
    return bool(((offsets + counts)[present] <= file_size).all())


def _fits(stored: int, expected: int, tile: int) -> bool:
    """A stored size for a level of `expected` pixels: the same give or take one, or padded to whole tiles."""
    return abs(stored - expected) <= 1 or (expected <= stored < expected + tile and stored % tile == 0)


def _level_downsample(value: float, strict: bool = True) -> int | None:
    """The level's downsample as a power of two (within 1 % when `strict`), else None."""
    d = round(value)
    if d < 1 or d & (d - 1) or (strict and abs(value - d) > 0.01 * d):
        return None
    return d


def slide_regions(properties: Mapping[str, str], width: int, height: int) -> list[tuple[int, int, int, int]]:
    """OpenSlide's regions of a slide (level-0 x, y, width, height); the whole slide when none is given."""
    regions: list[tuple[int, int, int, int]] = []
    index = 0
    while f"openslide.region[{index}].x" in properties:
        try:
            x, y, w, h = (
                int(properties[f"openslide.region[{index}].{name}"]) for name in ("x", "y", "width", "height")
            )
        except (KeyError, ValueError):
            return []
        regions.append((x, y, w, h))
        index += 1
    return regions or [(0, 0, width, height)]


def clean_tables(tables: bytes | None) -> bytes | None:
    if not tables:
        return None
    try:
        return jpeg.strip_metadata(bytes(tables))
    except ValueError:
        return None


def _tiff_raw_level(tiff: Any, page: Any, index: int, d: int, w: int, h: int) -> RawLevel | None:
    """The RawLevel of a checked page; None when its JPEG streams use a subsampling we cannot re-encode."""
    tables = clean_tables(page.jpegtables)
    rgb = page.photometric == _PHOTOMETRIC_RGB
    counts = np.asarray(page.databytecounts, dtype=np.int64)
    first = int(np.argmax(counts > 0))
    handle = tiff.filehandle
    handle.seek(int(page.dataoffsets[first]))
    data = handle.read(min(int(counts[first]), 1 << 16))
    sampling = (1, 1) if rgb else jpeg.chroma_subsampling(jpeg.merge_tables(tables, data))
    if sampling is None:
        return None
    return RawLevel(
        page=index,
        downsample=d,
        width=w,
        height=h,
        tile=page.tilewidth,
        rgb_samples=rgb,
        subsampling=sampling,
        jpegtables=tables,
    )


def find_tiff_levels(
    slide: Any, tiff: Any, pages: list[Any], vendor: str, file_size: int
) -> list[tuple[int, RawLevel]]:
    """(OpenSlide level index, RawLevel) for each level whose stored tiles lie on its grid."""
    width0, height0 = slide.dimensions
    tiled = [index for index, page in enumerate(pages) if page.is_tiled]
    found: list[tuple[int, RawLevel]] = []
    if vendor in TRUSTED_VENDORS:
        for level_index, (w, h) in enumerate(slide.level_dimensions):
            if level_index >= len(tiled):
                break
            page = pages[tiled[level_index]]
            d = _level_downsample(slide.level_downsamples[level_index], strict=False)
            if d is None or page.imagewidth != w or page.imagelength != h or not page_ok(page, file_size, False):
                continue
            expected_w, expected_h = -(-width0 // d), -(-height0 // d)
            if abs(expected_w - w) > 1 or abs(expected_h - h) > 1:
                continue
            raw = _tiff_raw_level(tiff, page, tiled[level_index], d, w, h)
            if raw is not None:
                found.append((level_index, raw))
        return found
    regions = slide_regions(dict(slide.properties), width0, height0)
    if len(regions) != 1:
        return []
    rx, ry, rw, rh = regions[0]
    whole = (rx, ry, rw, rh) == (0, 0, width0, height0)
    used: set[int] = set()
    for level_index, (w, h) in enumerate(slide.level_dimensions):
        d = _level_downsample(slide.level_downsamples[level_index])
        if d is None or rx % d or ry % d:
            continue
        expected_w, expected_h = (w, h) if whole else (-(-rw // d), -(-rh // d))
        candidates = [
            index
            for index in tiled
            if index not in used
            and _fits(pages[index].imagewidth, expected_w, pages[index].tilewidth)
            and _fits(pages[index].imagelength, expected_h, pages[index].tilelength)
        ]
        if len(candidates) != 1:
            continue
        index = candidates[0]
        page = pages[index]
        tile = page.tilewidth
        if not page_ok(page, file_size, allow_missing=True) or (rx // d) % tile or (ry // d) % tile:
            continue
        raw = _tiff_raw_level(tiff, page, index, d, w, h)
        if raw is None:
            continue
        used.add(index)
        sparse = bool((np.asarray(page.databytecounts) == 0).any())
        raw = dataclasses.replace(
            raw,
            col0=rx // d // tile,
            row0=ry // d // tile,
            page_width=page.imagewidth,
            page_height=page.imagelength,
            sparse=sparse,
        )
        found.append((level_index, raw))
    return found


def tiff_table(tiff: Any, page_index: int) -> TileTable:
    page = tiff.pages[page_index]
    return TileTable(
        tiff.filehandle,
        np.asarray(page.dataoffsets, dtype=np.int64),
        np.asarray(page.databytecounts, dtype=np.int64),
    )


# -- DICOM -----------------------------------------------------------------------------------------------


def find_dicom_levels(
    slide: Any, path: str, first_frame: Callable[[TileTable], bytes]
) -> tuple[list[tuple[int, RawLevel]], list[TileTable]]:
    """(OpenSlide level index, RawLevel) for each level stored as a TILED_FULL JPEG Baseline instance, and
    the frame tables the RawLevels' `page` indexes."""
    import pydicom

    instances = _series_instances(path)
    found: list[tuple[int, RawLevel]] = []
    tables: list[TileTable] = []
    try:
        for level_index, (w, h) in enumerate(slide.level_dimensions):
            d = _level_downsample(slide.level_downsamples[level_index])
            if d is None:
                continue
            match = [(p, ds) for p, ds in instances if _dicom_dims(ds) == (w, h)]
            if len(match) != 1:
                continue
            file_path, ds = match[0]
            tile = int(ds.Columns)
            table = _frame_table(file_path, int(ds.NumberOfFrames), pydicom)
            if table is None:
                continue
            sampling = (1, 1) if ds.PhotometricInterpretation == "RGB" else jpeg.chroma_subsampling(first_frame(table))
            if sampling is None:
                table.close()
                continue
            tables.append(table)
            found.append(
                (
                    level_index,
                    RawLevel(
                        page=len(tables) - 1,
                        downsample=d,
                        width=w,
                        height=h,
                        tile=tile,
                        rgb_samples=ds.PhotometricInterpretation == "RGB",
                        subsampling=sampling,
                        jpegtables=None,
                    ),
                )
            )
    except BaseException:
        for table in tables:
            table.close()
        raise
    return found, tables


def _dicom_dims(ds: Any) -> tuple[int, int]:
    return int(ds.TotalPixelMatrixColumns), int(ds.TotalPixelMatrixRows)


def _series_instances(path: str) -> list[tuple[str, Any]]:
    """The VOLUME instances of `path`'s series in its directory whose frames can be copied as tiles."""
    import pydicom

    try:
        own = pydicom.dcmread(path, stop_before_pixels=True)
        series = str(own.SeriesInstanceUID)
        directory = os.path.dirname(os.path.abspath(path))
        names = sorted(os.listdir(directory))
    except Exception:  # noqa: BLE001 - unreadable here: OpenSlide reads the slide, nothing is copied
        return []
    if len(names) > MAX_DICOM_FILES:
        return []
    out = []
    for name in names:
        candidate = os.path.join(directory, name)
        try:
            if not os.path.isfile(candidate):
                continue
            ds = pydicom.dcmread(candidate, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - not a DICOM file, or a damaged one: not a tile source
            continue
        if str(ds.get("SeriesInstanceUID", "")) == series and _dicom_tiles_ok(ds):
            out.append((candidate, ds))
    return out


def _dicom_tiles_ok(ds: Any) -> bool:
    try:
        image_type = list(ds.get("ImageType", []))
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        rows, columns = int(ds.Rows), int(ds.Columns)
        width, height = _dicom_dims(ds)
    except (AttributeError, TypeError, ValueError):
        return False
    return (
        str(ds.get("SOPClassUID", "")) == VL_WSI
        and str(ds.file_meta.get("TransferSyntaxUID", "")) == JPEG_BASELINE
        and len(image_type) > 2
        and image_type[2] == "VOLUME"
        and str(ds.get("DimensionOrganizationType", "")) == "TILED_FULL"
        and "ConcatenationUID" not in ds
        and int(ds.get("TotalPixelMatrixFocalPlanes", 1) or 1) == 1
        and int(ds.get("NumberOfOpticalPaths", 1) or 1) == 1
        and int(ds.get("SamplesPerPixel", 0)) == 3
        and int(ds.get("BitsAllocated", 0)) == 8
        and str(ds.get("PhotometricInterpretation", "")) in ("RGB", "YBR_FULL_422", "YBR_FULL")
        and rows == columns
        and raw_tile_ok(rows)
        and frames == math.ceil(width / columns) * math.ceil(height / rows)
    )


def _frame_table(path: str, frames: int, pydicom: Any) -> TileTable | None:
    """Offsets and lengths of the frames of an encapsulated PixelData, one item per frame."""
    handle = open(path, "rb")  # noqa: SIM115 - kept open by the TileTable, closed by the reader
    try:
        size = os.fstat(handle.fileno()).st_size
        pydicom.dcmread(handle, stop_before_pixels=True)
        head = handle.read(12)
        if len(head) != 12 or head[:4] != b"\xe0\x7f\x10\x00" or head[4:6] != b"OB" or head[8:] != b"\xff" * 4:
            handle.close()
            return None
        offsets: list[int] = []
        counts: list[int] = []
        first = True
        while True:
            item = handle.read(8)
            if len(item) != 8:
                break
            group, element, length = struct.unpack("<HHI", item)
            if (group, element) == (0xFFFE, 0xE0DD):
                break
            if (group, element) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF:
                break
            position = handle.tell()
            if position + length > size:
                break
            if first:
                first = False  # the Basic Offset Table
            else:
                offsets.append(position)
                counts.append(length)
                if len(offsets) > frames:
                    break
            handle.seek(position + length)
        if len(offsets) != frames:
            handle.close()
            return None
        return TileTable(handle, np.asarray(offsets, np.int64), np.asarray(counts, np.int64), owned=True)
    except Exception:  # noqa: BLE001 - an unparsable file is no tile source; OpenSlide reads it
        handle.close()
        return None


# -- checking a layout against OpenSlide ----------------------------------------------------------------


def sample_tiles(raw: RawLevel, present: Callable[[int], bool]) -> list[tuple[int, int]]:
    """Stored tiles compared with OpenSlide: the first, the middle and the last present one."""
    picks = []
    for c, r in ((0, 0), (raw.cols // 2, raw.rows // 2), (raw.cols - 1, raw.rows - 1)):
        if present(r * raw.cols + c) and (c, r) not in picks:
            picks.append((c, r))
    if not picks:
        index = next((i for i in range(raw.cols * raw.rows) if present(i)), None)
        if index is not None:
            picks.append((index % raw.cols, index // raw.cols))
    return picks


def same_pixels(stored: np.ndarray, shown: np.ndarray) -> bool:
    if stored.shape != shown.shape or stored.size == 0:
        return False
    diff = np.abs(stored.astype(np.int16) - shown.astype(np.int16))
    return float(diff.mean()) <= MAX_MEAN_DIFFERENCE and int(diff.max()) <= MAX_PEAK_DIFFERENCE
