"""Per-tile work and its geometry: the slide's tile context, bands of level-0 tiles, how one level-0
tile is redacted on its overlapped window, how a tile is coded. `deid.wsi.pyramid` runs these on a
band in memory; elements (`TileBand`, `TileTask`) hold coordinates only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import cv2
import imagecodecs
import numpy as np

from deid.errors import SlideReadError
from deid.redaction.confidence import Candidate
from deid.redaction.engine import FoundText, RedactionConfig, redact_window
from deid.settings import Box
from deid.wsi.grid import LevelShape, TileGrid, core_box, intersect
from deid.wsi.jpeg import SUBSAMPLING_NAMES
from deid.wsi.source import RawLevel

# Redacted boxes kept per tile for the QA thumbnail (the count of boxes is always exact).
MAX_TILE_BOXES = 32
# A band is the square of 2**k level-0 tiles that fits this many pixels a side (at least 2 x 2 tiles):
# 16 x 16 tiles of 256 px, 8 x 8 of 512. Its reduced levels up to its one top tile lie inside it.
BAND_PIXELS = 4096
# Text is searched for on pieces of a band's row about this many pixels of cores wide, plus the
# overlap on each side (deid.wsi.pyramid): two pieces per 4096-pixel row, one task per thread on 2 cores.
PIECE_PIXELS = 2048


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


def band_levels(tile: int, level_count: int) -> int:
    """Levels above level 0 that one band builds: its side is 2**k tiles, k the largest with
    2**k * tile <= BAND_PIXELS (at least 1), and never past the pyramid's top."""
    k = max(1, (BAND_PIXELS // tile).bit_length() - 1)
    return max(0, min(k, level_count - 1))


def piece_tiles(tile: int) -> int:
    """Tiles per piece of a row that text is searched on at once (PIECE_PIXELS of cores, at least one)."""
    return max(1, PIECE_PIXELS // tile)


def row_pieces(tile: int, cols: Iterable[int]) -> list[list[int]]:
    """Consecutive columns of a row in pieces of `piece_tiles(tile)`, cut at fixed columns (multiples
    of it), so that what is searched together does not depend on bands or cores."""
    size = piece_tiles(tile)
    groups: dict[int, list[int]] = {}
    for col in cols:
        groups.setdefault(col // size, []).append(col)
    return list(groups.values())


@dataclass(frozen=True)
class TileBand:
    """A square block of level-0 tiles on the pyramid grid, redacted by one worker in one go with the
    reduced levels that lie inside it (`deid.wsi.pyramid.build_band`).

    Its side is 2**levels tiles (clipped to the slide); its top is tile (col0, row0) >> levels of
    level `levels`. Tiles are processed row by row; with a decoded-tile cache of `cache_tiles()` the
    overlapped windows decode each tile of the band and of its one-tile ring once.
    """

    context: TileContext
    col0: int
    row0: int
    cols: int
    rows: int
    levels: int = 0  # levels above 0 built inside the band; its top tile is at this level

    def tasks(self) -> list[TileTask]:
        return [
            TileTask(self.context, col, row)
            for row in range(self.row0, self.row0 + self.rows)
            for col in range(self.col0, self.col0 + self.cols)
        ]

    def cache_tiles(self) -> int:
        """A row's windows touch three tile rows of the band's width plus its ring, and the next row's
        tiles are decoded before the oldest of those three rows is done with."""
        return 4 * (self.cols + 2)


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


def copyable(codec: LevelCodec, shape: LevelShape, col: int, row: int) -> bool:
    """A clean tile can be copied when the input level covers it with the same geometry."""
    raw = codec.source
    return raw is not None and raw.copyable(shape.width, shape.height, col, row)


# A window whose samples all lie within this range holds no stroke the text detector could see
# (its stroke threshold, DetectParams.stroke_threshold, is 60 grey levels of contrast).
BACKGROUND_RANGE = 32


def clearly_background(window: np.ndarray) -> bool:
    """Uniform enough (blank glass, flat fill) that text detection cannot find anything.

    A sparse sample decides first when it already spans more than the range (tissue, nearly always):
    then so does the whole window.
    """
    if window.size == 0:
        return True
    sample = window[::8, ::8]
    if int(sample.max()) - int(sample.min()) > BACKGROUND_RANGE:
        return False
    return int(window.max()) - int(window.min()) <= BACKGROUND_RANGE


@dataclass(frozen=True)
class TilePlan:
    """What a level-0 tile needs: the pixels to read (its window with text detection, else its core),
    whether the redaction engine runs, and whether its stored tile could be copied if nothing changes."""

    col: int
    row: int
    core: Box
    read_box: Box
    engine: bool
    region_hit: bool
    copy_candidate: bool

    @property
    def needs_pixels(self) -> bool:
        """Pixels are read now when the engine runs or the tile is re-encoded whatever happens."""
        return self.engine or not self.copy_candidate


def plan_tile(ctx: TileContext, shape: LevelShape, col: int, row: int, stored: bool) -> TilePlan:
    """`stored`: the input holds the level-0 tile (col, row) of the copy source."""
    core = core_box(shape, ctx.tile, col, row)
    text_search = ctx.redaction.text_mode != "off"
    # User regions need no context: the engine cuts them to the core.
    read_box = ctx.grid.window(col, row) if text_search else core
    region_hit = any(intersect(r, read_box) for r in ctx.redaction.regions)
    candidate = stored and copyable(ctx.codecs[0], shape, col, row)
    return TilePlan(col, row, core, read_box, text_search or region_hit, region_hit, candidate)


@dataclass(frozen=True)
class Redacted:
    """A level-0 tile after the engine: its core pixels, whether they changed, the boxes redacted."""

    pixels: np.ndarray = field(repr=False)
    changed: bool
    boxes: int = 0
    box_list: tuple[Box, ...] = ()
    # Text candidates below --review_threshold that nothing redacted covers (deid/review/decision.py).
    uncertain: tuple[Candidate, ...] = ()


def redact_tile(
    plan: TilePlan,
    window: np.ndarray,
    config: RedactionConfig,
    found: Sequence[FoundText] | None = None,
) -> Redacted:
    """The tile's core from its window (`plan.read_box`), redacted when the engine runs. `window`
    may be a view into a larger array. `found`: the text already found on a piece of its row
    holding this window (`find_text`); else the window itself is searched."""
    core, box = plan.core, plan.read_box
    changed, boxes = False, 0
    box_list: tuple[Box, ...] = ()
    uncertain: tuple[Candidate, ...] = ()
    if not plan.engine:
        pixels = window
    elif found is None and not plan.region_hit and clearly_background(window):
        # No stroke can reach the detector's threshold: nothing to find, skip detection.
        top, left = core.y - box.y, core.x - box.x
        pixels = window[top : top + core.height, left : left + core.width]
    else:
        if config.fill != "black":
            window = np.ascontiguousarray(window)  # blur and inpaint work on the window itself
        outcome = redact_window(window, (box.x, box.y), core, config, found=found)
        pixels = np.asarray(outcome.pixels)
        changed = bool(outcome.changed)
        if changed:
            boxes, box_list = len(outcome.boxes), tuple(outcome.boxes[:MAX_TILE_BOXES])
        uncertain = outcome.pending[:MAX_TILE_BOXES]
    if pixels.shape[:2] != (core.height, core.width):
        raise SlideReadError("the redaction engine returned a tile of the wrong size")
    return Redacted(pixels, changed, boxes, box_list, uncertain)
