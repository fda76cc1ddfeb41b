"""Text detection on a slide's rows: one window per tile against a few wide pieces per row.

    python bench/text_pieces.py [--side 16384] [--tile 256] [--rows 16]

On the synthetic JPEG-tiled SVS of bench/wsi_throughput.py (made and cached the same way), reads
`--rows` rows of level-0 tiles spread over the slide and times, on one core (OpenCV limited to one
thread), `deid.redaction.engine.find_text` on every tile's overlapped window (what a band did
before) and on the pieces `deid.wsi.pyramid` searches now (`piece_tiles` tiles' cores with the
overlap on each side), with the run's default review threshold (near misses searched). Prints both
times, scaled to the whole slide, and their ratio. Not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np
import openslide

from bench.wsi_throughput import make_slide
from deid.redaction.detect import to_gray
from deid.redaction.engine import RedactionConfig, find_text
from deid.settings import Box, WsiSettings
from deid.wsi.tiles import piece_tiles


def _window(side: int, tile: int, overlap: int, row: int, c0: int, c1: int) -> tuple[Box, Box]:
    """The overlapped window of the cores of tiles c0 .. c1 - 1 of `row`, and those cores' box."""
    x0, x1 = max(0, c0 * tile - overlap), min(side, c1 * tile + overlap)
    y0, y1 = max(0, row * tile - overlap), min(side, row * tile + tile + overlap)
    cx1, cy1 = min(side, c1 * tile), min(side, row * tile + tile)
    return Box(x0, y0, x1 - x0, y1 - y0), Box(c0 * tile, row * tile, cx1 - c0 * tile, cy1 - row * tile)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=16384)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--rows", type=int, default=16, help="rows of tiles timed (spread over the slide)")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "deid-wsi-bench"))
    args = parser.parse_args()
    cv2.setNumThreads(1)
    slide = openslide.OpenSlide(str(make_slide(Path(args.workdir), args.side, args.tile)))
    side, tile, overlap = args.side, args.tile, WsiSettings().tile_overlap
    config = RedactionConfig(text_mode="detect", review_threshold=0.8)
    size = piece_tiles(tile)
    cols = -(-side // tile)
    rows = -(-side // tile)
    picked = sorted({round(i * (rows - 1) / max(1, args.rows - 1)) for i in range(args.rows)})
    per_tile = per_piece = 0.0
    found_tiles = found_pieces = 0
    for row in picked:
        y0, y1 = max(0, row * tile - overlap), min(side, row * tile + tile + overlap)
        pixels = np.asarray(slide.read_region((0, y0), 0, (side, y1 - y0)).convert("RGB"))
        gray = np.ascontiguousarray(to_gray(pixels))

        start = time.perf_counter()
        for col in range(cols):
            box, core = _window(side, tile, overlap, row, col, col + 1)
            view = gray[:, box.x : box.x + box.width]
            found_tiles += len(find_text(view, (box.x, box.y), core, config, gray=view))
        per_tile += time.perf_counter() - start
        start = time.perf_counter()
        for col in range(0, cols, size):
            box, span = _window(side, tile, overlap, row, col, min(cols, col + size))
            view = gray[:, box.x : box.x + box.width]
            found_pieces += len(find_text(view, (box.x, box.y), span, config, gray=view))
        per_piece += time.perf_counter() - start
    scale = rows / len(picked)
    print(f"{side}x{side}, {tile}-px tiles, {len(picked)} of {rows} rows timed, one core:")
    print(f"  one window per tile: {per_tile * scale:.2f} s for the slide ({found_tiles} candidates in the rows timed)")
    print(f"  pieces of {size} tiles: {per_piece * scale:.2f} s for the slide ({found_pieces} candidates)")
    print(f"  pieces / windows: {per_piece / per_tile:.2f}")


if __name__ == "__main__":
    main()
