"""What the pyramid stages pass on: one `BlockResult` per block for the writer, one `TopTile` per block
for the next stage, and the writer's `TileIndex` over all of a slide's blocks.

A block (a band of level-0 tiles, or a block of upper levels) writes the JPEG streams of the tiles
it re-encoded, and the pyramid's top pixels if it holds the top, to ONE scratch file, its *batch*,
once. Its `BlockResult` says, for every tile it resolved, whether the tile is copied from the input
or where in the batch its stream lies (`INDEX_DTYPE` records). Its `TopTile` carries the block's top
tile's half-size pixels, compressed losslessly (zstd), to the stage that builds the levels above.
Scratch names are built from the keyed slide id and tile coordinates only.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import imagecodecs
import numpy as np

from deid.errors import DeidError, SlideReadError, UnexpectedError
from deid.redaction.confidence import Candidate
from deid.settings import Box
from deid.wsi.grid import LevelShape
from deid.wsi.scratch import pack_pixels, unpack_pixels

ORIGIN_BATCH, ORIGIN_SOURCE = 0, 1
_MISSING = 255
# One record per tile a block resolved: copied from the input (length: its stored size, for the
# BigTIFF estimate) or re-encoded into the block's batch at offset, length.
INDEX_DTYPE = np.dtype(
    [
        ("level", "u1"),
        ("col", "<u4"),
        ("row", "<u4"),
        ("origin", "u1"),
        ("redacted", "u1"),
        ("offset", "<u8"),
        ("length", "<u4"),
    ]
)
# Redacted boxes a block keeps for the QA thumbnail (the count in `boxes` is always exact).
MAX_BLOCK_BOXES = 1024
ZSTD_LEVEL = 1  # measured on tissue halves: 45 % of the raw size at ~1 ms per 256 x 256 tile


def batch_name(slide_id: str, level: int, col: int, row: int) -> str:
    """The batch of the block whose top tile is (col, row) of `level` (unique per slide)."""
    return f"{slide_id}/B{level}/{col}_{row}.bin"


def pack_lossless(pixels: np.ndarray) -> bytes:
    return bytes(imagecodecs.zstd_encode(pack_pixels(pixels), level=ZSTD_LEVEL))


def unpack_lossless(data: bytes) -> np.ndarray:
    return unpack_pixels(bytes(imagecodecs.zstd_decode(data)))


@dataclass(frozen=True)
class BlockResult:
    """The outcome of one block: levels `level` .. `top` under its top tile (col, row) of `top`."""

    slide_id: str
    level: int
    top: int
    col: int
    row: int
    batch: str = ""  # scratch name of the batch; "" when the block re-encoded nothing
    index: bytes = field(default=b"", repr=False)  # INDEX_DTYPE records
    top_pixels: tuple[int, int] = (0, 0)  # (offset, length) in the batch of the pyramid's top pixels
    boxes: int = 0
    box_list: tuple[Box, ...] = ()  # level-0 boxes redacted, at most MAX_BLOCK_BOXES
    seconds: float = 0.0  # time spent on this block (QA report stage times)
    # Level-0 text candidates below --review_threshold (at most MAX_BLOCK_BOXES): the slide is held.
    uncertain: tuple[Candidate, ...] = ()
    error_kind: str = ""
    error_message: str = ""

    @property
    def failed(self) -> bool:
        return bool(self.error_kind)

    def entries(self) -> np.ndarray:
        return np.frombuffer(self.index, INDEX_DTYPE)


@dataclass(frozen=True)
class TopTile:
    """A block's top tile, for the stage that builds its parent."""

    slide_id: str
    level: int
    col: int
    row: int
    dirty: bool = False  # a redaction changed pixels under this tile
    # pack_lossless of its half-size pixels; b"" when they were not computed (the tile is copied
    # from the input, which the next stage decodes should it need them).
    pixels: bytes = field(default=b"", repr=False)
    error_kind: str = ""
    error_message: str = ""

    @property
    def failed(self) -> bool:
        return bool(self.error_kind)


def error_parts(exc: BaseException, doing: str) -> tuple[str, str]:
    """(error kind, message): ours (DeidError), or naming only the exception type."""
    if isinstance(exc, DeidError):
        return exc.error_kind, str(exc)
    return UnexpectedError.error_kind, f"unexpected {type(exc).__name__} while {doing}"


def failed_block(
    slide_id: str, level: int, top: int, col: int, row: int, kind: str, message: str, has_parent: bool
) -> tuple[BlockResult, TopTile | None]:
    """A block that fails its slide, and the top tile that carries the failure up."""
    block = BlockResult(slide_id, level, top, col, row, error_kind=kind, error_message=message)
    tile = TopTile(slide_id, top, col, row, error_kind=kind, error_message=message) if has_parent else None
    return block, tile


def copies_from_input(blocks: Iterable[BlockResult]) -> bool:
    """Whether any tile of these blocks is copied from the input (the writer then opens it)."""
    return any(bool((block.entries()["origin"] == ORIGIN_SOURCE).any()) for block in blocks)


def error_of(kind: str, message: str) -> DeidError:
    for cls in DeidError.__subclasses__():
        if cls.error_kind == kind:
            return cls(message)
    return UnexpectedError(message or "a tile failed")


class TileIndex:
    """Where each output tile comes from, level by level, over all of a slide's blocks.

    Dense per-level arrays of a few bytes per tile (the per-tile records of the blocks are dropped
    once read). Raises the first block failure, or SlideReadError when a tile is missing.
    """

    def __init__(self, levels: tuple[LevelShape, ...], blocks: Iterable[BlockResult]) -> None:
        self.levels = levels
        self.batches: list[str] = []
        self.top_pixels: tuple[int, int, int] | None = None  # (batch number, offset, length)
        self.boxes = 0
        self.box_list: list[Box] = []
        self.tile_seconds = self.pyramid_seconds = 0.0
        shapes = [(shape.rows, shape.cols) for shape in levels]
        self.origin = [np.full(shape, _MISSING, np.uint8) for shape in shapes]
        self.redacted = [np.zeros(shape, bool) for shape in shapes]
        self.batch = [np.zeros(shape, np.int32) for shape in shapes]
        self.offset = [np.zeros(shape, np.uint64) for shape in shapes]
        self.length = [np.zeros(shape, np.uint32) for shape in shapes]
        for block in blocks:
            self._add(block)
        if any(bool((origin == _MISSING).any()) for origin in self.origin):
            raise SlideReadError("some tiles of the pyramid are missing; the slide could not be read completely")

    def _add(self, block: BlockResult) -> None:
        if block.failed:
            raise error_of(block.error_kind, block.error_message)
        number = len(self.batches)
        self.batches.append(block.batch)
        entries = block.entries()
        if block.top_pixels[1]:
            self.top_pixels = (number, *block.top_pixels)
        self.boxes += block.boxes
        self.box_list.extend(block.box_list)
        if block.level == 0:
            self.tile_seconds += block.seconds
        else:
            self.pyramid_seconds += block.seconds
        for level in np.unique(entries["level"]):
            if int(level) >= len(self.levels):
                raise SlideReadError("a pyramid block holds a level the slide does not have")
            mine = entries[entries["level"] == level]
            rows, cols = mine["row"].astype(np.intp), mine["col"].astype(np.intp)
            k = int(level)
            if (rows >= self.origin[k].shape[0]).any() or (cols >= self.origin[k].shape[1]).any():
                raise SlideReadError("a pyramid block holds a tile outside its level")
            self.origin[k][rows, cols] = mine["origin"]
            self.redacted[k][rows, cols] = mine["redacted"].astype(bool)
            self.batch[k][rows, cols] = number
            self.offset[k][rows, cols] = mine["offset"]
            self.length[k][rows, cols] = mine["length"]

    def counts(self) -> dict[str, int]:
        return {
            "tiles_passthrough": sum(int((o == ORIGIN_SOURCE).sum()) for o in self.origin),
            "tiles_reencoded": sum(int((o == ORIGIN_BATCH).sum()) for o in self.origin),
            "tiles_redacted": sum(int(r.sum()) for r in self.redacted),
        }

    def estimated_bytes(self, tile: int) -> int:
        fallback = tile * tile * 3 // 4
        return sum(int(np.where(length > 0, length, fallback).sum()) for length in self.length)


class BatchFiles:
    """Reads tile streams out of local batch files (`local_path(name)` gives a block's batch file),
    keeping a few open."""

    def __init__(self, local_path: Callable[[str], str], limit: int = 64) -> None:
        self._local_path = local_path
        self._open: OrderedDict[str, int] = OrderedDict()
        self._limit = limit

    def read(self, name: str, offset: int, length: int) -> bytes:
        fd = self._open.get(name)
        if fd is None:
            path = self._local_path(name)
            fd = os.open(path, os.O_RDONLY)
            self._open[name] = fd
            while len(self._open) > self._limit:
                _, old = self._open.popitem(last=False)
                os.close(old)
        else:
            self._open.move_to_end(name)
        data = os.pread(fd, length, offset)
        if len(data) != length:
            raise SlideReadError("a pyramid batch in scratch storage is truncated")
        return data

    def close(self) -> None:
        for fd in self._open.values():
            os.close(fd)
        self._open.clear()
