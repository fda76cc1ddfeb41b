"""The pyramid in memory, one block at a time (`deid.wsi.blocks` says what leaves a block).

`build_band`: the level-0 tiles of a `TileBand` are redacted row by row on their overlapped windows,
each stored tile decoded once, into the reader's cache, by the thread pool behind `mapper`; each
parent is built from its 2x2 children as soon as both child rows are done, level after level up to
the band's one top tile. The reduced levels inside the band never leave memory. `build_block` does
the same for the levels above, from the `TopTile`s of one group of blocks.

Decode once: the pixels a level-0 tile was redacted on are the ones that go up the pyramid. A tile
copied from the input whose pixels nothing needs is never decoded. They are fetched (the input's own
tile at that level, decoded) only when a parent must be built from it (a dirty sibling, or a parent
level the input has no copy of) or it is the pyramid's top; when its children were computed anyway,
they are taken from them instead (the bytes a full rebuild gives). With text detection on, reduced
levels are never copied (`deid.wsi.job.copy_sources`), so every level is built from redacted level 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from deid.errors import SlideReadError
from deid.redaction.confidence import Candidate
from deid.redaction.detect import to_gray
from deid.redaction.engine import FoundText, find_text
from deid.settings import Box
from deid.wsi.blocks import (
    INDEX_DTYPE,
    MAX_BLOCK_BOXES,
    ORIGIN_BATCH,
    ORIGIN_SOURCE,
    BlockResult,
    TopTile,
    batch_name,
    error_parts,
    failed_block,
    pack_lossless,
    unpack_lossless,
)
from deid.wsi.grid import core_box
from deid.wsi.scratch import Scratch
from deid.wsi.source import Mapper, SlideReader
from deid.wsi.tiles import (
    Redacted,
    TileBand,
    TileContext,
    TilePlan,
    copyable,
    encode_tile,
    halve,
    plan_tile,
    redact_tile,
    row_pieces,
)

# (level, [(col, row)]) -> the input's own tiles there, decoded, cut to the output tile's size.
Fetch = Callable[[int, list[tuple[int, int]]], list[np.ndarray]]


@dataclass
class _Tile:
    """A resolved tile waiting for its parent; `half` is filled in if it has to be fetched."""

    col: int
    row: int
    dirty: bool
    half: np.ndarray | None = None  # half-size pixels for the parent, when computed
    pixels: np.ndarray | None = None  # whole pixels: the pyramid's top only (the thumbnail)


@dataclass(frozen=True)
class _Parent:
    col: int
    children: tuple[_Tile, ...]
    dirty: bool
    copied: bool


class _Block:
    """Levels base+1 .. top under the top tile (col, row), built from rows of level-`base` tiles,
    and the block's batch of re-encoded tile streams."""

    def __init__(self, ctx: TileContext, base: int, top: int, col: int, row: int, fetch: Fetch, mapper: Mapper):
        self.ctx = ctx
        self.shapes = ctx.grid.levels()
        self.last = len(self.shapes) - 1
        self.base, self.top, self.col, self.row = base, top, col, row
        self.fetch, self.mapper = fetch, mapper
        self.pending: dict[int, list[_Tile]] = {}
        self.parts: list[bytes] = []
        self.size = 0
        self.entries: list[tuple[int, int, int, int, int, int, int]] = []
        self.final: _Tile | None = None
        self.uncertain: list[Candidate] = []  # level-0 text candidates left for review

    def cols(self, level: int) -> range:
        shift = self.top - level
        return range(self.col << shift, min(self.shapes[level].cols, (self.col + 1) << shift))

    def rows(self, level: int) -> range:
        shift = self.top - level
        return range(self.row << shift, min(self.shapes[level].rows, (self.row + 1) << shift))

    def record(self, level: int, col: int, row: int, data: bytes | None, redacted: bool, stored: int = 0) -> None:
        """A resolved tile: copied from the input (`data` None) or re-encoded into the batch."""
        if data is None:
            self.entries.append((level, col, row, ORIGIN_SOURCE, int(redacted), 0, stored))
            return
        self.entries.append((level, col, row, ORIGIN_BATCH, int(redacted), self.size, len(data)))
        self.parts.append(data)
        self.size += len(data)

    def add_row(self, level: int, row: int, tiles: list[_Tile]) -> None:
        """One whole row of the block at `level`; builds the parents a finished row pair completes."""
        if level == self.top:
            (self.final,) = tiles
            return
        pending = self.pending.setdefault(level, [])
        pending.extend(tiles)
        if row % 2 == 1 or row == self.rows(level)[-1]:
            self.pending[level] = []
            self.add_row(level + 1, row // 2, self._parents(level + 1, row // 2, pending))

    def _parents(self, level: int, row: int, children: list[_Tile]) -> list[_Tile]:
        shape, codec = self.shapes[level], self.ctx.codecs[level]
        below = self.shapes[level - 1]
        groups: dict[int, list[_Tile]] = {}
        for child in children:
            groups.setdefault(child.col // 2, []).append(child)
        parents = []
        for col in self.cols(level):
            group = tuple(groups.pop(col, ()))
            expected = {
                (c, r)
                for r in (2 * row, 2 * row + 1)
                for c in (2 * col, 2 * col + 1)
                if c < below.cols and r < below.rows
            }
            if len(group) != len(expected) or {(t.col, t.row) for t in group} != expected:
                raise SlideReadError("a pyramid tile is missing some of its children")
            dirty = any(t.dirty for t in group)
            parents.append(_Parent(col, group, dirty, not dirty and copyable(codec, shape, col, row)))
        if groups:
            raise SlideReadError("a pyramid block received a tile outside it")
        # A parent that is built needs all its children's pixels: fetch the copied ones nobody computed.
        missing = [t for p in parents if not p.copied for t in p.children if t.half is None]
        if missing:
            fetched = self.fetch(level - 1, [(t.col, t.row) for t in missing])
            for tile, half in zip(missing, self.mapper(halve, fetched), strict=True):
                tile.half = half
        # The pyramid's top is needed whole (the thumbnail): from its children, else the input's own.
        own: dict[int, np.ndarray] = {}
        if level == self.last:
            need = [p.col for p in parents if p.copied and any(t.half is None for t in p.children)]
            if need:
                own = dict(zip(need, self.fetch(level, [(col, row) for col in need]), strict=True))
        made = list(self.mapper(lambda p: self._make(level, row, p, own.get(p.col)), parents))
        out = []
        for parent, (tile, data) in zip(parents, made, strict=True):
            self.record(level, parent.col, row, None if parent.copied else data, False)
            out.append(tile)
        return out

    def _make(self, level: int, row: int, parent: _Parent, own: np.ndarray | None) -> tuple[_Tile, bytes | None]:
        """Runs in the pool: assemble, encode (unless copied), halve."""
        tile = self.ctx.tile
        core = core_box(self.shapes[level], tile, parent.col, row)
        pixels = own
        if all(t.half is not None for t in parent.children):
            pixels = np.empty((core.height, core.width, 3), np.uint8)
            half = tile // 2
            for child in parent.children:
                part = child.half
                assert part is not None
                x0, y0 = (child.col - 2 * parent.col) * half, (child.row - 2 * row) * half
                h = min(part.shape[0], core.height - y0)
                w = min(part.shape[1], core.width - x0)
                pixels[y0 : y0 + h, x0 : x0 + w] = part[:h, :w]
        data = None
        if not parent.copied:
            if pixels is None:
                raise SlideReadError("a pyramid tile to re-encode has no pixels")
            data = encode_tile(pixels, tile, self.ctx.codecs[level], self.ctx.quality)
        if level == self.last:
            return _Tile(parent.col, row, parent.dirty, pixels=pixels), data
        return _Tile(parent.col, row, parent.dirty, half=halve(pixels) if pixels is not None else None), data

    def finish(
        self, scratch: Scratch, boxes: int, box_list: list[Box], seconds: float
    ) -> tuple[BlockResult, TopTile | None]:
        final = self.final
        if final is None:
            raise SlideReadError("a pyramid block did not reach its top tile")
        slide_id = self.ctx.slide_id
        top_pixels = (0, 0)
        top_tile = None
        if self.top == self.last:
            pixels = final.pixels
            if pixels is None:
                (pixels,) = self.fetch(self.top, [(self.col, self.row)])
            packed = pack_lossless(pixels)
            top_pixels = (self.size, len(packed))
            self.parts.append(packed)
            self.size += len(packed)
        else:
            half = pack_lossless(final.half) if final.half is not None else b""
            top_tile = TopTile(slide_id, self.top, self.col, self.row, final.dirty, half)
        batch = ""
        if self.parts:
            batch = batch_name(slide_id, self.top, self.col, self.row)
            scratch.put(batch, b"".join(self.parts))
        index = np.array(self.entries, INDEX_DTYPE).tobytes()
        level = self.base if self.base == 0 else self.base + 1
        block = BlockResult(
            slide_id,
            level,
            self.top,
            self.col,
            self.row,
            batch=batch,
            index=index,
            top_pixels=top_pixels,
            boxes=boxes,
            box_list=tuple(box_list[:MAX_BLOCK_BOXES]),
            seconds=seconds,
            uncertain=tuple(self.uncertain[:MAX_BLOCK_BOXES]),
        )
        return block, top_tile


def fetcher(reader_of: Callable[[], SlideReader], ctx: TileContext, mapper: Mapper) -> Fetch:
    """Fetch for a block: the input's own stored tiles of a level, decoded through `mapper`."""
    shapes = ctx.grid.levels()

    def fetch(level: int, keys: list[tuple[int, int]]) -> list[np.ndarray]:
        raw = ctx.codecs[level].source
        if raw is None:
            raise SlideReadError("a copied tile has no input level to read it from")
        reader = reader_of()
        reader.cache_tiles = max(reader.cache_tiles, len(keys))
        reader.prefetch_tiles(raw, keys, mapper)
        out = []
        for col, row in keys:
            stored = reader.decoded_tile(raw, col, row)
            if stored is None:
                raise SlideReadError("a tile to copy is missing from the input slide")
            core = core_box(shapes[level], ctx.tile, col, row)
            out.append(stored[: core.height, : core.width])
        return out

    return fetch


def build_band(
    reader: SlideReader, band: TileBand, scratch: Scratch, mapper: Mapper = map
) -> tuple[BlockResult, TopTile | None]:
    """Redact a band's level-0 tiles and build the levels inside it; failures become failed blocks."""
    ctx = band.context
    col, row = band.col0 >> band.levels, band.row0 >> band.levels
    start = time.perf_counter()
    try:
        block = _Block(ctx, 0, band.levels, col, row, fetcher(lambda: reader, ctx, mapper), mapper)
        boxes, box_list = _redact_band(reader, band, block, mapper)
        return block.finish(scratch, boxes, box_list, time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - one band's failure fails its slide, not the run
        kind, message = error_parts(exc, "redacting a band of tiles")
        return failed_block(
            ctx.slide_id, 0, band.levels, col, row, kind, message, band.levels < ctx.level_count - 1
        )


def _redact_band(reader: SlideReader, band: TileBand, block: _Block, mapper: Mapper) -> tuple[int, list[Box]]:
    ctx = band.context
    shape = ctx.grid.levels()[0]
    source = ctx.codecs[0].source
    single = ctx.level_count == 1  # the one tile is the top: its pixels make the thumbnail
    reader.cache_tiles = max(reader.cache_tiles, band.cache_tiles())
    boxes = 0
    box_list: list[Box] = []
    for row in range(band.row0, band.row0 + band.rows):
        plans = [
            plan_tile(ctx, shape, col, row, source is not None and reader.has_tile(source, col, row))
            for col in range(band.col0, band.col0 + band.cols)
        ]
        todo = [plan for plan in plans if plan.needs_pixels or single]
        # Pixels are read here (the reader is not thread-safe) and handed to the pool as they come.
        windows: Iterable[tuple[TilePlan, np.ndarray, tuple[FoundText, ...] | None]]
        if todo and len(todo) == len(plans):
            # The whole row is read: one strip (and its grey copy for text detection) holds every
            # window, as a view. The same pixels as window by window, copied and converted once.
            strip = _union([plan.read_box for plan in todo])
            reader.prefetch_windows([strip], ctx.tile, mapper)
            pixels = reader.read_window(strip, ctx.tile)
            gray = to_gray(pixels) if ctx.redaction.text_mode != "off" else None
            # With text detection on, each tile takes the text of its piece of the row (no detection of its own).
            found = _find_in_pieces(ctx, todo, pixels, gray, strip, mapper) if gray is not None else {}
            windows = ((plan, _crop(pixels, strip, plan.read_box), found.get(plan.col)) for plan in todo)
        else:
            reader.prefetch_windows([plan.read_box for plan in todo], ctx.tile, mapper)
            windows = ((plan, reader.read_window(plan.read_box, ctx.tile), None) for plan in todo)
        done = {tile.col: (tile, data, red) for tile, data, red in mapper(lambda job: _level0(ctx, *job), windows)}
        tiles = []
        for plan in plans:
            tile, data, red = done.get(plan.col, (_Tile(plan.col, row, False), None, None))
            stored = reader.stored_size(source, plan.col, row) if data is None and source is not None else 0
            block.record(0, plan.col, row, data, red is not None and red.changed, stored)
            if red is not None and red.changed:
                boxes += red.boxes
                box_list.extend(red.box_list)
            if red is not None and red.uncertain:
                block.uncertain.extend(red.uncertain)
            tiles.append(tile)
        block.add_row(0, row, tiles)
    return boxes, box_list


def _find_in_pieces(
    ctx: TileContext, plans: list[TilePlan], pixels: np.ndarray, gray: np.ndarray, strip: Box, mapper: Mapper
) -> dict[int, tuple[FoundText, ...]]:
    """The text of a whole row of windows (`plans`, every tile of the row, read as `strip`), found
    piece by piece (`row_pieces`: their cores with the overlap on each side), one piece per pool
    task. A few wide windows cost 0.4 of one window per tile (`python bench/text_pieces.py`: the
    overlap is searched once, not twice), and a line across a tile edge inside a piece is seen
    whole. Returns each tile's column -> the text of its piece."""
    grid, row = ctx.grid, plans[0].row
    pieces = row_pieces(ctx.tile, [plan.col for plan in plans])

    def search(cols: list[int]) -> tuple[FoundText, ...]:
        box, span = grid.piece(row, cols[0], cols[-1])
        return find_text(_crop(pixels, strip, box), (box.x, box.y), span, ctx.redaction, gray=_crop(gray, strip, box))

    return {col: texts for cols, texts in zip(pieces, mapper(search, pieces), strict=True) for col in cols}


def _union(boxes: list[Box]) -> Box:
    x0, y0 = min(b.x for b in boxes), min(b.y for b in boxes)
    x1, y1 = max(b.x + b.width for b in boxes), max(b.y + b.height for b in boxes)
    return Box(x0, y0, x1 - x0, y1 - y0)


def _crop(pixels: np.ndarray, strip: Box, box: Box) -> np.ndarray:
    """The part of `pixels` (read for `strip`) under `box`, as a view."""
    x, y = box.x - strip.x, box.y - strip.y
    return pixels[y : y + box.height, x : x + box.width]


def _level0(
    ctx: TileContext, plan: TilePlan, window: np.ndarray, found: tuple[FoundText, ...] | None
) -> tuple[_Tile, bytes | None, Redacted]:
    """Runs in the pool: redact one tile (with its piece's text, if found already), encode it
    unless it is copied, halve it for its parent."""
    red = redact_tile(plan, window, ctx.redaction, found)
    copied = plan.copy_candidate and not red.changed
    data = None if copied else encode_tile(red.pixels, ctx.tile, ctx.codecs[0], ctx.quality)
    if ctx.level_count == 1:
        return _Tile(plan.col, plan.row, red.changed, pixels=red.pixels), data, red
    return _Tile(plan.col, plan.row, red.changed, half=halve(red.pixels)), data, red


def build_block(
    ctx: TileContext,
    level: int,
    top: int,
    col: int,
    row: int,
    tops: Iterable[TopTile],
    scratch: Scratch,
    fetch: Fetch,
    mapper: Mapper = map,
) -> tuple[BlockResult, TopTile | None]:
    """Levels level+1 .. top under tile (col, row) of `top`, from the top tiles of level `level` below it."""
    start = time.perf_counter()
    has_parent = top < ctx.level_count - 1
    try:
        children = sorted(tops, key=lambda t: (t.row, t.col))
        failed = next((t for t in children if t.failed), None)
        if failed is not None:
            return failed_block(
                ctx.slide_id, level + 1, top, col, row, failed.error_kind, failed.error_message, has_parent
            )
        block = _Block(ctx, level, top, col, row, fetch, mapper)
        rows, cols = block.rows(level), block.cols(level)
        if [(t.col, t.row) for t in children] != [(c, r) for r in rows for c in cols]:
            raise SlideReadError("a pyramid tile is missing some of its children")
        for index, r in enumerate(rows):
            line = children[index * len(cols) : (index + 1) * len(cols)]
            block.add_row(level, r, [_child(t) for t in line])
        return block.finish(scratch, 0, [], time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - one block's failure fails its slide, not the run
        kind, message = error_parts(exc, "building pyramid tiles")
        return failed_block(ctx.slide_id, level + 1, top, col, row, kind, message, has_parent)


def _child(top: TopTile) -> _Tile:
    return _Tile(top.col, top.row, top.dirty, half=unpack_lossless(top.pixels) if top.pixels else None)

