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
from deid.settings import WsiSettings
from deid.wsi.grid import TileGrid
from deid.wsi.tiles import piece_tiles, row_pieces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=16384)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--rows", type=int, default=16, help="rows of tiles timed (spread over the slide)")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "deid-wsi-bench"))
    args = parser.parse_args()
    cv2.setNumThreads(1)
    slide = openslide.OpenSlide(str(make_slide(Path(args.workdir), args.side, args.tile)))
    side, tile = args.side, args.tile
    grid = TileGrid(side, side, tile, WsiSettings().tile_overlap)
    config = RedactionConfig(text_mode="detect", review_threshold=0.8)
    cols = rows = grid.level(0).cols
    picked = sorted({round(i * (rows - 1) / max(1, args.rows - 1)) for i in range(args.rows)})
    seconds = {"tiles": 0.0, "pieces": 0.0}
    found = {"tiles": 0, "pieces": 0}
    for row in picked:
        strip = grid.piece(row, 0, cols - 1)[0]
        pixels = np.asarray(slide.read_region((strip.x, strip.y), 0, (strip.width, strip.height)).convert("RGB"))
        gray = np.ascontiguousarray(to_gray(pixels))
        jobs = {
            "tiles": [(grid.window(col, row), grid.core(col, row)) for col in range(cols)],
            "pieces": [grid.piece(row, group[0], group[-1]) for group in row_pieces(tile, range(cols))],
        }
        for kind, boxes in jobs.items():
            start = time.perf_counter()
            for box, span in boxes:
                view = gray[:, box.x - strip.x : box.x - strip.x + box.width]
                found[kind] += len(find_text(view, (box.x, box.y), span, config, gray=view))
            seconds[kind] += time.perf_counter() - start
    scale = rows / len(picked)
    print(f"{side}x{side}, {tile}-px tiles, {len(picked)} of {rows} rows timed, one core:")
    tiles, pieces = seconds["tiles"], seconds["pieces"]
    print(f"  one window per tile: {tiles * scale:.2f} s for the slide ({found['tiles']} candidates in the rows timed)")
    print(f"  pieces of {piece_tiles(tile)} tiles: {pieces * scale:.2f} s for the slide ({found['pieces']} candidates)")
    print(f"  pieces / windows: {pieces / tiles:.2f}")


if __name__ == "__main__":
    main()
