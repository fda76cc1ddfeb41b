"""Raw-tile geometry (deid.wsi.rawtiles), JPEG subsampling parsing and the minimum level count."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deid.wsi import jpeg
from deid.wsi.grid import TileGrid
from deid.wsi.rawtiles import RawLevel, slide_regions
from deid.wsi.source import SlideReader
from deid.wsi.tiles import level_codecs
from tests.support import grid_slides


def _raw(**kw: object) -> RawLevel:
    base: dict[str, object] = dict(
        page=0, downsample=1, width=1000, height=700, tile=256, rgb_samples=False, subsampling=(2, 2), jpegtables=None
    )
    base.update(kw)
    return RawLevel(**base)  # type: ignore[arg-type]


def test_copyable_inside_the_stored_grid_and_at_edges_that_end_together() -> None:
    raw = _raw()
    assert raw.copyable(1000, 700, 0, 0) and raw.copyable(1000, 700, 3, 2)  # edge tiles: both end at 1000 x 700
    assert not raw.copyable(1001, 700, 3, 0)  # the output level is one pixel wider: its edge is not the input's
    assert raw.copyable(1001, 700, 2, 0)  # interior tiles still are
    # an SCN main image at tile (2, 1) of a larger level, 512 x 300 pixels
    scn = _raw(width=2048, height=1024, col0=2, row0=1, page_width=512, page_height=300)
    assert scn.copyable(2048, 1024, 2, 1) and scn.copyable(2048, 1024, 3, 1)
    assert not scn.copyable(2048, 1024, 1, 1) and not scn.copyable(2048, 1024, 4, 1)  # outside the stored grid
    assert not scn.copyable(2048, 1024, 2, 2)  # the image ends at 556, inside that tile, the level does not
    assert scn.stored_index(3, 2) == 3 and scn.stored_index(1, 1) is None


def test_regions_from_openslide_properties() -> None:
    props = {f"openslide.region[0].{k}": v for k, v in dict(x="256", y="512", width="10", height="20").items()}
    assert slide_regions(props, 100, 100) == [(256, 512, 10, 20)]
    assert slide_regions({}, 100, 50) == [(0, 0, 100, 50)]


@pytest.mark.parametrize("sampling", [(1, 1), (2, 1), (2, 2)])
def test_chroma_subsampling_is_read_from_the_frame_header(sampling: tuple[int, int]) -> None:
    stream = jpeg.encode(np.full((32, 32, 3), 128, np.uint8), 90, sampling)
    assert jpeg.chroma_subsampling(stream) == sampling
    assert jpeg.chroma_subsampling(b"not a jpeg") is None


def test_grid_keeps_at_least_min_levels() -> None:
    assert len(TileGrid(300, 250, 512).levels()) == 1
    shapes = TileGrid(300, 250, 512, 0, 4).levels()
    assert [(s.width, s.height) for s in shapes] == [(300, 250), (150, 125), (75, 63), (38, 32)]
    assert len(TileGrid(2, 2, 16, 0, 5).levels()) == 2  # never past 1 x 1


def test_levels_without_a_source_are_coded_as_rgb_samples(tmp_path: Path) -> None:
    path = tmp_path / "a.scn"
    grid_slides.write_leica_scn(path)
    reader = SlideReader(str(path))
    try:
        raw = reader.info.raw_levels
        assert [(r.downsample, r.col0, r.row0) for r in raw] == [(1, 2, 2), (2, 1, 1)]  # 4x: 128 px offset
        levels = TileGrid(reader.info.width, reader.info.height, 256, 0, 3).levels()
        codecs = level_codecs(levels, 256, raw)
        assert [c.source is not None for c in codecs] == [True, True, False, False]
        assert [(c.rgb_samples, c.subsampling) for c in codecs] == [(False, (2, 2))] * 2 + [(True, (1, 1))] * 2
    finally:
        reader.close()
