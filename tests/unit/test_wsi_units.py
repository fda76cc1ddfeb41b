"""Pure WSI functions: grid and pyramid maths, JPEG, scratch, metadata, the reader, harvest, background."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deid.keys import DeidKey
from deid.settings import Box
from deid.wsi import jpeg
from deid.wsi.grid import TileGrid, children_of, level_count
from deid.wsi.metadata import parse_aperio_description, scrub
from deid.wsi.scratch import pack_pixels, unpack_pixels
from deid.wsi.source import SlideReader
from deid.wsi.tiles import halve
from tests.support import wsi_factory
from tests.support.env import SHARED_DATA
from transforms.slide_files import LocalScratch

openslide = pytest.importorskip("openslide")
KEY = DeidKey(b"u" * 32)
SHARED = SHARED_DATA / "wsi"


# -- grid and pyramid maths ---------------------------------------------------------------------------


def test_grid_levels_stop_at_one_tile() -> None:
    grid = TileGrid(1000, 600, 256, 64)
    levels = grid.levels()
    assert [(s.width, s.height, s.cols, s.rows) for s in levels] == [
        (1000, 600, 4, 3),
        (500, 300, 2, 2),
        (250, 150, 1, 1),
    ]
    assert level_count(1000, 600, 256) == 3 == grid.level_count
    assert level_count(100, 100, 256) == 1


def test_grid_core_window_and_children() -> None:
    grid = TileGrid(1000, 600, 256, 64)
    assert grid.core(3, 2) == Box(768, 512, 232, 88)
    assert grid.window(0, 0) == Box(0, 0, 320, 320)
    assert grid.window(1, 1) == Box(192, 192, 384, 384)
    assert grid.window(3, 2) == Box(704, 448, 296, 152)
    levels = grid.levels()
    assert children_of(levels[1], levels[0], 1, 1) == ((2, 2), (3, 2))
    assert grid.level0_area(1, 1, 1) == Box(512, 512, 488, 88)


@pytest.mark.parametrize(("w", "h"), [(1000, 600), (1025, 513), (257, 1)])
def test_halves_tile_parent_exactly(w: int, h: int) -> None:
    """Children halves of level k fill the parent at level k+1 exactly, for odd sizes too."""
    grid = TileGrid(w, h, 256)
    levels = grid.levels()
    for k in range(len(levels) - 1):
        child, parent = levels[k], levels[k + 1]
        for row in range(parent.rows):
            for col in range(parent.cols):
                core = grid.core(col, row, k + 1)
                covered = 0
                for c, r in children_of(parent, child, col, row):
                    cc = grid.core(c, r, k)
                    covered += -(-cc.width // 2) * -(-cc.height // 2)
                assert covered == core.width * core.height


def test_grid_rejects_bad_geometry() -> None:
    with pytest.raises(ValueError):
        TileGrid(100, 100, 100)
    with pytest.raises(ValueError):
        TileGrid(100, 100, 256, 128)


def test_halve_rounds_up() -> None:
    assert halve(np.zeros((5, 7, 3), np.uint8)).shape == (3, 4, 3)


# -- JPEG and scratch -----------------------------------------------------------------------------------


def test_strip_metadata_keeps_entropy_data() -> None:
    image = wsi_factory.tissue(64, 64)
    stream = jpeg.encode(image, 90)
    com = b"\xff\xfe\x00\x0e" + b"DOE^JANE PHI"
    exif = b"\xff\xe1\x00\x0a" + b"Exif\x00\x00XX"
    dirty = stream[:2] + com + exif + stream[2:]
    clean = jpeg.strip_metadata(dirty)
    assert b"DOE^JANE" not in clean and b"Exif" not in clean
    assert clean == stream
    assert np.array_equal(jpeg.decode(clean), jpeg.decode(stream))


def test_merge_tables_makes_abbreviated_tile_decodable(tmp_path: Path) -> None:
    if not (SHARED / "CMU-1-Small-Region.svs").exists():
        pytest.skip("shared data absent")
    reader = SlideReader(str(SHARED / "CMU-1-Small-Region.svs"))
    raw = reader.info.raw_level(1)
    assert raw is not None and raw.jpegtables and raw.rgb_samples
    data = reader.raw_tile(raw, 1, 1)
    full = jpeg.merge_tables(raw.jpegtables, data)
    decoded = jpeg.decode(full, None, True)
    expected = reader.read_region(Box(240, 240, 240, 240))
    assert np.array_equal(decoded, expected)
    reader.close()


def test_pack_pixels_round_trip(tmp_path: Path) -> None:
    image = wsi_factory.tissue(33, 17)
    scratch = LocalScratch(str(tmp_path))
    scratch.put("s/H0/1_2.zst", pack_pixels(image))
    assert np.array_equal(unpack_pixels(scratch.get("s/H0/1_2.zst")), image)
    scratch.delete_prefix("s")
    assert not (tmp_path / "s").exists()


# -- metadata ------------------------------------------------------------------------------------------------


def test_scrub_keeps_only_technical_fields() -> None:
    header, fields = parse_aperio_description(wsi_factory.aperio_description(100, 100, 64))
    assert fields["Filename"] == wsi_factory.PHI_FILENAME and header.startswith("Aperio")
    props = {f"aperio.{k}": v for k, v in fields.items()}
    props.update(
        {
            "openslide.vendor": "aperio",
            "openslide.mpp-x": "0.499",
            "openslide.objective-power": "20",
            "tiff.ImageDescription": "x",
            "openslide.level-count": "1",
        }
    )
    meta = scrub(props, 100, 100)
    assert (meta.mpp_x, meta.mpp_y, meta.objective_power, meta.vendor) == (0.499, 0.499, 20.0, "aperio")
    assert meta.fields_removed == len(fields) - 2 + 1  # all but AppMag and MPP, plus the description
    assert wsi_factory.PHI_FILENAME not in repr(meta)


def test_reader_counts_tiff_text_tags_and_matches_openslide(tmp_path: Path) -> None:
    path = tmp_path / "g.tiff"
    wsi_factory.write_generic_tiff(path, 512, 512, 256, text_corner=None)
    reader = SlideReader(str(path))
    # Artist, DocumentName, HostComputer, DateTime, XMP, ImageDescription (+ OpenSlide's own copy)
    assert reader.info.metadata.fields_removed >= 6
    box = Box(100, 150, 300, 200)
    assert np.array_equal(reader.read_window(box), reader.read_region(box))
    reader.close()


# -- harvest and background -----------------------------------------------------------------------------


def test_harvest_slide_values(tmp_path: Path) -> None:
    from deid.wsi.leakcheck import harvest_slide

    src = tmp_path / "in" / "Aperio-0001.svs"
    src.parent.mkdir()
    wsi_factory.write_aperio_svs(src, 512, 256, 256, text_corner=None, label=False, macro=False)
    values = harvest_slide([str(src)], "tiff", str(tmp_path / "in"))
    texts = {v.text for v in values}
    assert wsi_factory.PHI_FILENAME in texts and wsi_factory.PHI_USER in texts
    assert "Aperio" not in texts  # a word every Aperio output carries is not expected gone
    assert "Aperio-0001" in texts
    assert all(wsi_factory.PHI_USER not in repr(v) for v in values)


def test_clearly_background_is_conservative() -> None:
    from deid.wsi.tiles import clearly_background

    glass = np.full((320, 320, 3), 242, np.uint8)
    glass[::7, ::5] = 230  # JPEG-like noise
    assert clearly_background(glass)
    faint = glass.copy()
    wsi_factory.draw_text(faint, 10, 100, "MRN 1", scale=1.0)
    assert not clearly_background(faint)
