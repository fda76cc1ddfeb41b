"""NDPI at scanner size: the format-aware geometry guard and the plan, in constant memory, no pixels decoded."""

from __future__ import annotations

import hashlib
import tracemalloc
from pathlib import Path

import pytest

from deid.classify import InputRef
from deid.errors import InputTooLargeError, InvalidInputError
from deid.redaction.engine import RedactionConfig
from deid.settings import Limits, WsiSettings
from deid.wsi import ndpi
from deid.wsi.job import band_tasks, plan_job
from deid.wsi.metadata import SlideMetadata
from deid.wsi.source import MAX_TIFF_BUFFER_BYTES, SlideInfo, check_limits, check_tiff_geometry
from deid.wsi.units import check_tiff_units
from tests.support import ndpi_factory
from tests.support.env import SHARED_DATA

REAL_NDPI = sorted((SHARED_DATA / "wsi_samples" / "ndpi").glob("*.ndpi"))


def _guard(path: Path) -> list[ndpi.NdpiLevel]:
    """What the probe child runs before OpenSlide opens the file, then the plan."""
    check_tiff_geometry(str(path))
    check_tiff_units(str(path))
    return ndpi.plan_levels(str(path))


def test_scanner_size_level_is_not_refused_as_a_huge_strip(tmp_path: Path) -> None:
    # 10240 x 9216 x 3 = 283 MB in one strip: the generic TIFF rule refused this level as too_large.
    path = ndpi_factory.write_header_only_ndpi(tmp_path / "scan.ndpi", 10240, 9216, strip_size=30_000_000)
    assert MAX_TIFF_BUFFER_BYTES < 10240 * 9216 * 3
    (level,) = _guard(path)
    assert (level.width, level.height) == (10240, 9216)
    # OpenSlide decodes one restart interval (one MCU row here) at a time: 655 KB, not 377 MB.
    assert (level.unit_width, level.unit_height, level.units) == (10240, 16, 576)


def test_a_100k_by_80k_ndpi_is_planned_in_constant_memory(tmp_path: Path) -> None:
    path = ndpi_factory.write_header_only_ndpi(tmp_path / "huge.ndpi", 100_000, 80_000)
    assert path.stat().st_size > 2 * 10**9 and path.stat().st_blocks * 512 < 8 * 10**6  # sparse: no pixel data
    tracemalloc.start()
    try:
        (level,) = _guard(path)
        metadata = SlideMetadata(width=level.width, height=level.height, vendor="hamamatsu", mpp_x=0.2275,
                                 mpp_y=0.2275, objective_power=level.source_lens)
        info = SlideInfo(metadata=metadata, raw_levels=(), associated=("macro",), level_downsamples=(1.0,))
        check_limits(info, path.stat().st_size, Limits())
        ref = InputRef(str(path), path.stat().st_size, hashlib.sha256(b"huge").hexdigest(), "wsi", "tiff")
        job = plan_job(ref, "PSEUDONYM", "slide-1", (str(path),), info, WsiSettings(), RedactionConfig())
        tiles = sum(band.cols * band.rows for band in band_tasks(job))
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The SOF cannot hold 100000 or 80000 (16 bits): NDPI writes 0 and the TIFF tags give the size.
    assert (level.width, level.height) == (100_000, 80_000)
    assert (level.unit_width, level.unit_height, level.units) == (2000, 16, 250_000)
    assert [(s.width, s.height) for s in job.levels][0] == (100_000, 80_000)
    assert tiles == -(-100_000 // 512) * -(-80_000 // 512)
    assert peak < 4 * 1024**2, peak  # a full level would be 32 GB of RGBA; the MCU-starts table alone is 1 MB on disk


def test_a_level_without_restart_markers_is_refused_when_it_would_be_decoded_whole(tmp_path: Path) -> None:
    path = ndpi_factory.write_header_only_ndpi(tmp_path / "norst.ndpi", 20_000, 16_000, restart_interval=0)
    with pytest.raises(InputTooLargeError, match="without usable restart markers"):
        _guard(path)
    small = ndpi_factory.write_header_only_ndpi(tmp_path / "small.ndpi", 2048, 1024, restart_interval=0,
                                                strip_size=100_000)
    (level,) = _guard(small)
    assert (level.unit_width, level.unit_height, level.units) == (2048, 1024, 1)


def test_a_sof_larger_than_the_page_is_a_bomb(tmp_path: Path) -> None:
    path = ndpi_factory.write_header_only_ndpi(tmp_path / "bomb.ndpi", 1024, 1024, strip_size=100_000)
    data = bytearray(path.read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (65000).to_bytes(2, "big") * 2
    path.write_bytes(bytes(data))
    with pytest.raises(InputTooLargeError, match="larger image"):
        _guard(path)


def test_a_zero_sof_side_is_accepted_only_past_65535(tmp_path: Path) -> None:
    path = ndpi_factory.write_header_only_ndpi(tmp_path / "zero.ndpi", 4096, 4096, strip_size=1_000_000)
    data = bytearray(path.read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = b"\x00\x00\x00\x00"
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidInputError, match="different size"):
        _guard(path)


def test_an_mcu_starts_table_that_disagrees_is_damage(tmp_path: Path) -> None:
    path = ndpi_factory.write_header_only_ndpi(tmp_path / "starts.ndpi", 4096, 4096, strip_size=1_000_000)
    (page,) = ndpi.read_pages(str(path))
    assert page.mcu_starts is not None and page.mcu_starts[0] == 256  # 256 MCU rows, one interval each
    data = bytearray(path.read_bytes())
    ifd = int.from_bytes(data[4:12], "little")
    entries = int.from_bytes(data[ifd : ifd + 2], "little")
    for index in range(entries):
        entry = ifd + 2 + 12 * index
        if int.from_bytes(data[entry : entry + 2], "little") == ndpi.NDPI_MCU_STARTS:
            count = int.from_bytes(data[entry + 4 : entry + 8], "little")
            data[entry + 4 : entry + 8] = (count - 1).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidInputError, match="MCU-starts table"):
        _guard(path)


def test_a_synthetic_ndpi_plans_the_levels_openslide_reads(tmp_path: Path) -> None:
    openslide = pytest.importorskip("openslide")
    path = ndpi_factory.write_ndpi(tmp_path / "slide.ndpi")
    levels = _guard(path)
    slide = openslide.OpenSlide(str(path))
    assert slide.properties["openslide.vendor"] == "hamamatsu"
    assert [(lv.width, lv.height) for lv in levels] == list(slide.level_dimensions[: len(levels)])
    assert all(lv.unit_height == 8 and lv.unit_width == lv.width for lv in levels)  # one interval per MCU row
    assert list(slide.associated_images) == ["macro"]


@pytest.mark.skipif(not REAL_NDPI, reason="../shared/data/wsi_samples/ndpi is not present")
@pytest.mark.parametrize("path", REAL_NDPI, ids=lambda p: p.name)
def test_real_scanner_ndpi_passes_the_guard(path: Path) -> None:
    levels = _guard(path)
    assert [(lv.width, lv.height) for lv in levels] == [(3968, 4864), (1984, 2432), (992, 1216), (496, 608)]
    assert levels[0].units == 608 and levels[0].unit_height == 8
