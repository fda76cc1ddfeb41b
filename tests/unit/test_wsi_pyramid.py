"""The in-memory pyramid of a band (deid.wsi.pyramid): what is decoded, threads, the writer's index."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deid.classify import InputRef
from deid.errors import SlideReadError, UnsupportedFormatError
from deid.redaction import engine
from deid.redaction.engine import RedactionConfig
from deid.redaction.geometry import boxes_mask
from deid.settings import Box, WsiSettings
from deid.wsi import source
from deid.wsi.blocks import ORIGIN_BATCH, ORIGIN_SOURCE, BlockResult, TileIndex, unpack_lossless
from deid.wsi.grid import TileGrid
from deid.wsi.job import SlideJob, band_tasks, plan_job
from deid.wsi.pyramid import build_band
from deid.wsi.source import SlideReader
from deid.wsi.tiles import piece_tiles, row_pieces
from tests.support import wsi_factory
from transforms.slide_files import LocalScratch

openslide = pytest.importorskip("openslide")


def _job(path: Path, redaction: RedactionConfig) -> tuple[SlideReader, SlideJob]:
    reader = SlideReader(str(path))
    ref = InputRef(str(path), path.stat().st_size, "ab" * 32, "wsi", "tiff")
    return reader, plan_job(ref, "P", "P", (str(path),), reader.info, WsiSettings(), redaction)


def _count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    decoded: list[int] = []
    real = source.decode_stored_tile

    def counting(raw: Any, data: bytes) -> np.ndarray:
        decoded.append(raw.downsample)
        return real(raw, data)

    monkeypatch.setattr(source, "decode_stored_tile", counting)
    return decoded


@pytest.fixture(scope="module")
def pow2_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 x 4 tiles of 256 px with input levels 1, 2 and 4: every output level has a copy to take."""
    path = tmp_path_factory.mktemp("pow2") / "a.svs"
    wsi_factory.write_aperio_svs(path, 1024, 1024, 256, text_corner=None, downsamples=(1, 2, 4), label=False)
    return path


def test_without_detection_clean_tiles_under_copied_parents_are_never_decoded(
    pow2_slide: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded = _count_decodes(monkeypatch)
    reader, job = _job(pow2_slide, RedactionConfig())
    (band,) = list(band_tasks(job))
    block, top = build_band(reader, band, LocalScratch(str(tmp_path)))
    reader.close()
    assert top is None and not block.failed
    entries = block.entries()
    assert len(entries) == 16 + 4 + 1 and set(entries["origin"]) == {ORIGIN_SOURCE}
    # Only the top is decoded (the input's own 4x tile): the thumbnail needs its pixels.
    assert decoded == [4]
    offset, length = block.top_pixels
    top_pixels = unpack_lossless((tmp_path / block.batch).read_bytes()[offset : offset + length])
    assert top_pixels.shape == (256, 256, 3)


def test_a_region_decodes_only_the_tiles_its_parents_are_built_from(
    pow2_slide: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded = _count_decodes(monkeypatch)
    reader, job = _job(pow2_slide, RedactionConfig(regions=(Box(10, 10, 100, 50),)))
    (band,) = list(band_tasks(job))
    block, _ = build_band(reader, band, LocalScratch(str(tmp_path)))
    reader.close()
    origin = {(int(e["level"]), int(e["col"]), int(e["row"])): int(e["origin"]) for e in block.entries()}
    assert [key for key, value in sorted(origin.items()) if value == ORIGIN_BATCH] == [(0, 0, 0), (1, 0, 0), (2, 0, 0)]
    # Level 0: the redacted tile and its 3 siblings; level 1: the 3 clean siblings of the dirty parent.
    assert sorted(decoded) == [1, 1, 1, 1, 2, 2, 2]
    assert block.boxes == 1


def test_a_thread_pool_gives_the_same_block_as_map(tmp_path: Path) -> None:
    path = tmp_path / "a.svs"
    wsi_factory.write_aperio_svs(path, 1280, 1024, 256, text_corner=(300, 500), label=False, macro=False)
    results = []
    for name, pool in (("serial", None), ("threads", ThreadPoolExecutor(4))):
        reader, job = _job(path, RedactionConfig(text_mode="detect"))
        scratch = tmp_path / name
        blocks = [
            build_band(reader, band, LocalScratch(str(scratch)), pool.map if pool else map)[0]
            for band in band_tasks(job, 1)
        ]
        reader.close()
        if pool is not None:
            pool.shutdown()
        assert all(not b.failed for b in blocks) and sum(b.boxes for b in blocks) >= 1
        results.append([(b.index, (scratch / b.batch).read_bytes() if b.batch else b"") for b in blocks])
    assert results[0] == results[1]


def test_the_index_raises_a_failed_block_and_a_missing_tile(pow2_slide: Path, tmp_path: Path) -> None:
    reader, job = _job(pow2_slide, RedactionConfig())
    (band,) = list(band_tasks(job))
    block, _ = build_band(reader, band, LocalScratch(str(tmp_path)))
    reader.close()
    index = TileIndex(job.levels, [block])
    assert index.counts() == {"tiles_passthrough": 21, "tiles_reencoded": 0, "tiles_redacted": 0}
    failed = BlockResult("P", 0, 2, 0, 0, error_kind="unsupported_format", error_message="a reason")
    with pytest.raises(UnsupportedFormatError, match="a reason"):
        TileIndex(job.levels, [block, failed])
    partial = BlockResult("P", 0, 2, 0, 0, index=block.entries()[:-1].tobytes())
    with pytest.raises(SlideReadError, match="missing"):
        TileIndex(job.levels, [partial])


LONG_LINE = "PATIENT DOE JANE MRN 123456 DOB 1961"


def test_a_row_is_searched_for_text_piece_by_piece_and_a_long_line_is_redacted_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line about 900 px long over four 256-px tiles: each row of the band is one detection call
    (a piece is piece_tiles(256) = 8 tiles wide, more than the row), not one per tile, and the
    redacted boxes hold every pixel of its ink."""
    path = tmp_path / "long.svs"
    placement = wsi_factory.write_aperio_svs(
        path, 1024, 512, 256, text_corner=(512, 256), label=False, macro=False, text=LONG_LINE
    )
    assert placement is not None and placement.width > 3 * 256 and piece_tiles(256) == 8
    calls: list[tuple[int, ...]] = []
    real = engine.detect_text_lines

    def counting(image: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        calls.append(image.shape)
        return real(image, *args, **kwargs)

    monkeypatch.setattr(engine, "detect_text_lines", counting)
    reader, job = _job(path, RedactionConfig(text_mode="detect"))
    (band,) = list(band_tasks(job))
    block, _ = build_band(reader, band, LocalScratch(str(tmp_path)))
    reader.close()
    assert not block.failed and band.rows == 2 and band.cols == 4
    # One call per row, on the row's whole width (the cores plus the overlap inside the slide).
    assert len(calls) == 2 and all(shape[1] >= 1024 - 8 for shape in calls)
    clean, _ = wsi_factory.level0_image(1024, 512, None)
    drawn, _ = wsi_factory.level0_image(1024, 512, (512, 256), LONG_LINE)
    ink = np.abs(drawn.astype(np.int16) - clean.astype(np.int16)).max(axis=2) > 60
    covered = boxes_mask(list(block.box_list), 512, 1024)
    assert ink.sum() > 1000 and (ink & covered).sum() / ink.sum() >= 0.99


def test_pieces_are_cut_at_fixed_columns_and_span_their_tiles_windows() -> None:
    # 5 columns from column 6, pieces of 8 (256-px tiles): 6-7 | 8-10, whatever band they came from.
    assert row_pieces(256, range(6, 11)) == [[6, 7], [8, 9, 10]]
    grid = TileGrid(2700, 600, 256, 64)  # the last column is 140 px wide
    window, cores = grid.piece(1, 8, 10)
    assert window == Box(8 * 256 - 64, 256 - 64, 2700 - (8 * 256 - 64), 256 + 128)
    assert cores == Box(8 * 256, 256, 2700 - 8 * 256, 256)
    assert grid.piece(0, 3, 3) == (grid.window(3, 0), grid.core(3, 0))
