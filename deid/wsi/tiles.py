"""Per-tile work: redact a level-0 tile on its overlapped window, build a parent from 2x2 children.

Elements stay small: `TileTask` and `TileRecord` hold coordinates, flags and scratch names. Pixels
go to scratch: each level-k tile leaves its half-size pixels (lossless) for its parent and, unless it
is copied from the input byte for byte, its JPEG stream for the writer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import cv2
import imagecodecs
import numpy as np

from deid.errors import DeidError, SlideReadError, UnexpectedError
from deid.redaction.engine import RedactionConfig, redact_window
from deid.settings import Box
from deid.wsi.grid import LevelShape, TileGrid, core_box, intersect
from deid.wsi.jpeg import SUBSAMPLING_NAMES
from deid.wsi.scratch import Scratch, pack_pixels, unpack_pixels
from deid.wsi.source import RawLevel, SlideReader

Origin = Literal["source", "scratch"]
# Redacted boxes a record carries for the QA thumbnail (the count in `boxes` is always exact).
MAX_RECORD_BOXES = 32


@dataclass(frozen=True)
class LevelCodec:
    """How the JPEG tiles of one output level are coded (all tiles of a level agree)."""

    rgb_samples: bool = False
    subsampling: tuple[int, int] = (1, 1)
    jpegtables: bytes | None = field(default=None, repr=False)  # input bytes (sanitized): never logged
    source: RawLevel | None = None  # the input level whose clean tiles are copied, if any

    @property
    def photometric(self) -> str:
        return "rgb" if self.rgb_samples else "ycbcr"


@dataclass(frozen=True)
class TileContext:
    """Everything a tile worker needs about its slide (no metadata, no associated images)."""

    slide_id: str
    source_paths: tuple[str, ...] = field(repr=False)  # input paths can carry PHI; Beam logs reprs
    width: int
    height: int
    tile: int
    overlap: int
    codecs: tuple[LevelCodec, ...]
    quality: int = 90
    min_levels: int = 1  # pyramid levels kept whatever the tile size: as many as the input has
    # This slide's redaction (its --redact_regions boxes, text mode and fill).
    redaction: RedactionConfig = field(default_factory=RedactionConfig)
    subtype: str = "tiff"  # InputRef.subtype: how the source files are laid out locally

    @property
    def grid(self) -> TileGrid:
        return TileGrid(self.width, self.height, self.tile, self.overlap, self.min_levels)

    @property
    def level_count(self) -> int:
        return len(self.codecs)

    @property
    def needs_engine(self) -> bool:
        return self.redaction.active


@dataclass(frozen=True)
class TileTask:
    context: TileContext
    col: int
    row: int


@dataclass(frozen=True)
class TileBand:
    """A block of level-0 tiles redacted by one worker in one go (fewer elements, one decode per tile).

    Tiles are processed row by row; with a decoded-tile cache of `cache_tiles()` the overlapped
    windows of a band decode each tile of the band and of its one-tile ring once.
    """

    context: TileContext
    col0: int
    row0: int
    cols: int
    rows: int

    def tasks(self) -> list[TileTask]:
        return [
            TileTask(self.context, col, row)
            for row in range(self.row0, self.row0 + self.rows)
            for col in range(self.col0, self.col0 + self.cols)
        ]

    def cache_tiles(self) -> int:
        """A row's windows touch three tile rows of the band's width plus its ring; the next row reuses
        two of them, which were last touched that many tiles ago."""
        return 3 * (self.cols + 2) + 3


@dataclass(frozen=True)
class TileRecord:
    """The outcome of one tile of one level."""

    slide_id: str
    level: int
    col: int
    row: int
    origin: Origin = "scratch"
    dirty: bool = False  # a redaction changed pixels under this tile (at this or a finer level)
    redacted: bool = False  # level 0 only: the engine changed this tile
    boxes: int = 0
    nbytes: int = 0
    error_kind: str = ""
    error_message: str = ""
    levels: int = 1  # pyramid levels of the slide, so stages know whether a parent is due
    seconds: float = 0.0  # time spent on this tile (QA report stage times)
    box_list: tuple[Box, ...] = ()  # level 0: redacted boxes, level-0 pixels, at most MAX_RECORD_BOXES

    @property
    def has_parent(self) -> bool:
        return self.level + 1 < self.levels

    @property
    def failed(self) -> bool:
        return bool(self.error_kind)


def tile_name(slide_id: str, level: int, col: int, row: int) -> str:
    return f"{slide_id}/L{level}/{col}_{row}.jpg"


def half_name(slide_id: str, level: int, col: int, row: int) -> str:
    return f"{slide_id}/H{level}/{col}_{row}.zst"


def top_name(slide_id: str) -> str:
    return f"{slide_id}/top.zst"


def level_codecs(
    levels: tuple[LevelShape, ...], tile: int, raw_levels: tuple[RawLevel, ...]
) -> tuple[LevelCodec, ...]:
    """Per output level: copy clean tiles from an input level with the same downsample and tile grid
    (a sparse input level only at level 0, where the reader says which tiles exist); its re-encoded
    tiles keep that level's coding (one TIFF page, one DICOM instance: one subsampling).

    Levels with no such input level are coded 4:4:4 as RGB samples, as a plain pyvips rewrite does.
    Measured at quality 90 on the test slides (level-0 PSNR against the input), YCbCr 4:2:0, even of a
    4:2:0 input, and YCbCr 4:4:4 were 1.2 to 6.7 dB below RGB samples (a JPEG 2000 SVS: 37.1 and
    39.9 dB against 42.4 dB), for a half to a third of the bytes. RGB is also the one unsubsampled
    coding the DICOM WSI IOD allows for JPEG Baseline (it has no YBR_FULL).
    """
    coded = LevelCodec(rgb_samples=True, subsampling=(1, 1))
    codecs = []
    for shape in levels:
        source = next(
            (
                raw
                for raw in raw_levels
                if raw.downsample == shape.downsample
                and raw.tile == tile
                and abs(raw.width - shape.width) <= 1
                and abs(raw.height - shape.height) <= 1
                and raw.subsampling in SUBSAMPLING_NAMES
                and (not raw.sparse or shape.level == 0)
            ),
            None,
        )
        if source is None:
            codecs.append(coded)
        else:
            codecs.append(
                LevelCodec(
                    rgb_samples=source.rgb_samples,
                    subsampling=(1, 1) if source.rgb_samples else source.subsampling,
                    jpegtables=source.jpegtables,
                    source=source,
                )
            )
    return tuple(codecs)


def encode_tile(pixels: np.ndarray, tile: int, codec: LevelCodec, quality: int) -> bytes:
    """A full JPEG stream of a tile padded to tile x tile, coded like the level's other tiles."""
    h, w = pixels.shape[:2]
    if h != tile or w != tile:
        pixels = np.pad(pixels, ((0, tile - h), (0, tile - w), (0, 0)), mode="edge")
    if codec.rgb_samples:
        return bytes(
            imagecodecs.jpeg8_encode(np.ascontiguousarray(pixels), level=quality, colorspace="RGB", outcolorspace="RGB")
        )
    return bytes(
        imagecodecs.jpeg8_encode(
            np.ascontiguousarray(pixels), level=quality, subsampling=SUBSAMPLING_NAMES[codec.subsampling]
        )
    )


def halve(pixels: np.ndarray) -> np.ndarray:
    """Half size, rounding up, by area averaging."""
    h, w = pixels.shape[:2]
    size = (-(-w // 2), -(-h // 2))
    if size == (w, h):
        return pixels
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)


def _copyable(codec: LevelCodec, shape: LevelShape, col: int, row: int) -> bool:
    """A clean tile can be copied when the input level covers it with the same geometry."""
    raw = codec.source
    return raw is not None and raw.copyable(shape.width, shape.height, col, row)


# A window whose samples all lie within this range holds no stroke the text detector could see
# (its stroke threshold, DetectParams.stroke_threshold, is 60 grey levels of contrast).
BACKGROUND_RANGE = 32


def clearly_background(window: np.ndarray) -> bool:
    """Uniform enough (blank glass, flat fill) that text detection cannot find anything."""
    return window.size == 0 or int(window.max()) - int(window.min()) <= BACKGROUND_RANGE


def failure(ctx: TileContext, level: int, col: int, row: int, exc: BaseException, doing: str) -> TileRecord:
    """A record that fails its slide; the message is ours (DeidError) or names only the exception type."""
    if isinstance(exc, DeidError):
        kind, message = exc.error_kind, str(exc)
    else:
        kind, message = UnexpectedError.error_kind, f"unexpected {type(exc).__name__} while {doing}"
    return TileRecord(ctx.slide_id, level, col, row, error_kind=kind, error_message=message, levels=ctx.level_count)


def redact_level0_tile(
    reader: SlideReader, task: TileTask, scratch: Scratch, config: RedactionConfig | None = None
) -> TileRecord:
    """Read the overlapped window, redact its core, store the results; failures become records."""
    try:
        return _redact_level0_tile(reader, task, scratch, config)
    except Exception as exc:  # noqa: BLE001 - one tile's failure fails its slide, not the run
        return failure(task.context, 0, task.col, task.row, exc, "redacting a tile")


def _redact_level0_tile(
    reader: SlideReader, task: TileTask, scratch: Scratch, config: RedactionConfig | None
) -> TileRecord:
    start = time.perf_counter()
    ctx = task.context
    grid = ctx.grid
    levels = grid.levels()
    shape = levels[0]
    core = core_box(shape, ctx.tile, task.col, task.row)
    window_box = grid.window(task.col, task.row)
    changed = False
    boxes = 0
    box_list: tuple[Box, ...] = ()
    text_search = ctx.redaction.text_mode != "off"
    if not text_search:
        window_box = core  # user regions need no context: the engine cuts them to the core
    region_hit = any(intersect(r, window_box) for r in ctx.redaction.regions)
    engine_needed = text_search or region_hit
    if engine_needed:
        window = reader.read_window(window_box, ctx.tile)
        if not region_hit and clearly_background(window):
            # No stroke can reach the detector's threshold: nothing to find, skip detection.
            top, left = core.y - window_box.y, core.x - window_box.x
            pixels = window[top : top + core.height, left : left + core.width]
        else:
            outcome = redact_window(window, (window_box.x, window_box.y), core, config or ctx.redaction)
            pixels = np.asarray(outcome.pixels)
            changed = bool(outcome.changed)
            boxes = len(outcome.boxes) if changed else 0
            box_list = tuple(outcome.boxes[:MAX_RECORD_BOXES]) if changed else ()
    else:
        pixels = reader.read_window(core, ctx.tile)
    if pixels.shape[:2] != (core.height, core.width):
        raise SlideReadError("the redaction engine returned a tile of the wrong size")
    codec = ctx.codecs[0]
    origin: Origin = "scratch"
    nbytes = 0
    if (
        not changed
        and _copyable(codec, shape, task.col, task.row)
        and codec.source is not None
        and reader.has_tile(codec.source, task.col, task.row)
    ):
        origin = "source"
        nbytes = len(reader.raw_tile(codec.source, task.col, task.row))
    else:
        data = encode_tile(pixels, ctx.tile, codec, ctx.quality)
        scratch.put(tile_name(ctx.slide_id, 0, task.col, task.row), data)
        nbytes = len(data)
    if ctx.level_count > 1:
        scratch.put(half_name(ctx.slide_id, 0, task.col, task.row), pack_pixels(halve(pixels)))
    else:
        scratch.put(top_name(ctx.slide_id), pack_pixels(pixels))
    return TileRecord(
        ctx.slide_id,
        0,
        task.col,
        task.row,
        origin=origin,
        dirty=changed,
        redacted=changed,
        boxes=boxes,
        nbytes=nbytes,
        levels=ctx.level_count,
        seconds=time.perf_counter() - start,
        box_list=box_list,
    )


def build_parent(
    ctx: TileContext, level: int, col: int, row: int, children: list[TileRecord], scratch: Scratch
) -> TileRecord:
    """Tile (col, row) of `level` from the half-size pixels of its children at `level - 1`."""
    failed = next((child for child in children if child.failed), None)
    if failed is not None:
        return TileRecord(
            ctx.slide_id,
            level,
            col,
            row,
            error_kind=failed.error_kind,
            error_message=failed.error_message,
            levels=ctx.level_count,
        )
    try:
        return _build_parent(ctx, level, col, row, children, scratch)
    except Exception as exc:  # noqa: BLE001 - one parent's failure fails its slide, not the run
        return failure(ctx, level, col, row, exc, "building a pyramid tile")


def _build_parent(
    ctx: TileContext, level: int, col: int, row: int, children: list[TileRecord], scratch: Scratch
) -> TileRecord:
    start = time.perf_counter()
    levels = ctx.grid.levels()
    shape = levels[level]
    child_shape = levels[level - 1]
    core = core_box(shape, ctx.tile, col, row)
    expected = {
        (c, r)
        for r in (2 * row, 2 * row + 1)
        for c in (2 * col, 2 * col + 1)
        if c < child_shape.cols and r < child_shape.rows
    }
    got = {(child.col, child.row) for child in children}
    if got != expected:
        raise SlideReadError("a pyramid tile is missing some of its children")
    half = ctx.tile // 2
    pixels = np.empty((core.height, core.width, 3), np.uint8)
    for child in children:
        name = half_name(ctx.slide_id, level - 1, child.col, child.row)
        part = unpack_pixels(scratch.get(name))
        x0, y0 = (child.col - 2 * col) * half, (child.row - 2 * row) * half
        h = min(part.shape[0], core.height - y0)
        w = min(part.shape[1], core.width - x0)
        pixels[y0 : y0 + h, x0 : x0 + w] = part[:h, :w]
    dirty = any(child.dirty for child in children)
    codec = ctx.codecs[level]
    origin: Origin = "scratch"
    nbytes = 0
    if not dirty and _copyable(codec, shape, col, row):
        origin = "source"
    else:
        data = encode_tile(pixels, ctx.tile, codec, ctx.quality)
        scratch.put(tile_name(ctx.slide_id, level, col, row), data)
        nbytes = len(data)
    if level + 1 < ctx.level_count:
        scratch.put(half_name(ctx.slide_id, level, col, row), pack_pixels(halve(pixels)))
    else:
        scratch.put(top_name(ctx.slide_id), pack_pixels(pixels))
    for child in children:
        scratch.delete(half_name(ctx.slide_id, level - 1, child.col, child.row))
    return TileRecord(
        ctx.slide_id,
        level,
        col,
        row,
        origin=origin,
        dirty=dirty,
        nbytes=nbytes,
        levels=ctx.level_count,
        seconds=time.perf_counter() - start,
    )
