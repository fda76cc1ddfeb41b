"""Tile grid and pyramid geometry: pure integer arithmetic, no pixels.

The level-0 grid cuts a slide into square tiles of `tile` pixels (the last column and row may be
smaller). Each tile is processed on a window that adds `overlap` pixels of context on every side,
clipped to the slide. Level k+1 halves level k (rounding up) and tile (c, r) of level k+1 is built
from tiles (2c..2c+1, 2r..2r+1) of level k. The pyramid stops at the first level that fits one tile,
or later when `min_levels` asks for more (an input whose own pyramid goes further, with smaller tiles).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from deid.settings import Box


@dataclass(frozen=True)
class LevelShape:
    """One pyramid level: its size in pixels and in tiles."""

    level: int
    width: int
    height: int
    cols: int
    rows: int

    @property
    def downsample(self) -> int:
        return 1 << self.level

    @property
    def tile_count(self) -> int:
        return self.cols * self.rows


@dataclass(frozen=True)
class TileGrid:
    """The level-0 grid of a slide and the pyramid built over it."""

    width: int
    height: int
    tile: int
    overlap: int = 0
    min_levels: int = 1

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError("slide dimensions must be positive")
        if self.tile <= 0 or self.tile % 16:
            raise ValueError("tile edge must be a positive multiple of 16")
        if self.overlap < 0 or 2 * self.overlap >= self.tile:
            raise ValueError("overlap must be at least 0 and less than half a tile")

    def levels(self) -> tuple[LevelShape, ...]:
        """Level 0 down to the first level no larger than one tile, and at least `min_levels` levels
        (never past a 1 x 1 level)."""
        return _levels(self.width, self.height, self.tile, self.min_levels)

    @property
    def level_count(self) -> int:
        return len(self.levels())

    def level(self, level: int) -> LevelShape:
        return self.levels()[level]

    def core(self, col: int, row: int, level: int = 0) -> Box:
        """The pixels tile (col, row) of `level` owns, in that level's coordinates."""
        return core_box(self.levels()[level], self.tile, col, row)

    def window(self, col: int, row: int) -> Box:
        """The level-0 core of (col, row) grown by the overlap on each side, clipped to the slide."""
        core = self.core(col, row)
        x0 = max(0, core.x - self.overlap)
        y0 = max(0, core.y - self.overlap)
        x1 = min(self.width, core.x + core.width + self.overlap)
        y1 = min(self.height, core.y + core.height + self.overlap)
        return Box(x0, y0, x1 - x0, y1 - y0)

    def piece(self, row: int, first: int, last: int) -> tuple[Box, Box]:
        """Level-0 tiles first .. last of `row` taken together: the union of their windows, and of
        their cores (a piece of a row that text is searched on at once, `deid.wsi.pyramid`)."""
        a, b = self.window(first, row), self.window(last, row)
        ca, cb = self.core(first, row), self.core(last, row)
        return Box(a.x, a.y, b.x + b.width - a.x, a.height), Box(ca.x, ca.y, cb.x + cb.width - ca.x, ca.height)

    def level0_area(self, level: int, col: int, row: int) -> Box:
        """The level-0 pixels under tile (col, row) of `level`, clipped to the slide."""
        scale = 1 << level
        x0, y0 = col * self.tile * scale, row * self.tile * scale
        x1 = min(self.width, x0 + self.tile * scale)
        y1 = min(self.height, y0 + self.tile * scale)
        return Box(x0, y0, x1 - x0, y1 - y0)


@lru_cache(maxsize=256)
def _levels(width: int, height: int, tile: int, min_levels: int = 1) -> tuple[LevelShape, ...]:
    """Computed once per geometry: every tile of a slide asks for them."""
    shapes = []
    level = 0
    while True:
        shapes.append(LevelShape(level, width, height, _ceil_div(width, tile), _ceil_div(height, tile)))
        fits = width <= tile and height <= tile
        if (fits and len(shapes) >= min_levels) or (width == 1 and height == 1):
            return tuple(shapes)
        width, height, level = _ceil_div(width, 2), _ceil_div(height, 2), level + 1


def core_box(shape: LevelShape, tile: int, col: int, row: int) -> Box:
    if not (0 <= col < shape.cols and 0 <= row < shape.rows):
        raise ValueError("tile index outside the level")
    x, y = col * tile, row * tile
    return Box(x, y, min(tile, shape.width - x), min(tile, shape.height - y))


def level_count(width: int, height: int, tile: int) -> int:
    """Levels from full size down to one tile: 1 + ceil(log2(max side / tile)), at least 1."""
    count = 1
    while width > tile or height > tile:
        width, height, count = _ceil_div(width, 2), _ceil_div(height, 2), count + 1
    return count


def parent_of(col: int, row: int) -> tuple[int, int]:
    return col // 2, row // 2


def children_of(parent: LevelShape, child: LevelShape, col: int, row: int) -> tuple[tuple[int, int], ...]:
    """The (col, row) tiles of `child` level (one level finer) that build tile (col, row) of `parent`."""
    del parent
    return tuple(
        (c, r) for r in (2 * row, 2 * row + 1) for c in (2 * col, 2 * col + 1) if c < child.cols and r < child.rows
    )


def intersect(a: Box, b: Box) -> Box | None:
    x0, y0 = max(a.x, b.x), max(a.y, b.y)
    x1, y1 = min(a.x + a.width, b.x + b.width), min(a.y + a.height, b.y + b.height)
    if x1 <= x0 or y1 <= y0:
        return None
    return Box(x0, y0, x1 - x0, y1 - y0)


def max_levels_for(max_side: int, tile: int) -> int:
    return max(1, math.ceil(math.log2(max(1, max_side) / tile)) + 1) if max_side > tile else 1


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)
