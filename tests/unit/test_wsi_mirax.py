"""MIRAX: the synthetic slide is what OpenSlide reads, the pre-open guard, and the local layout for OpenSlide."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from deid.errors import InputTooLargeError, InvalidInputError
from deid.verify.harvest import harvest_slidedat
from deid.wsi import mirax
from deid.wsi.leakcheck import harvest_slide
from tests.support import mirax_factory
from transforms.slide_files import localize

openslide = pytest.importorskip("openslide")


@pytest.fixture()
def slide(tmp_path: Path) -> Path:
    return mirax_factory.write_mirax(tmp_path / "in")


def test_openslide_reads_the_synthetic_mirax_as_the_truth_image(slide: Path) -> None:
    s = openslide.OpenSlide(str(slide))
    assert s.properties["openslide.vendor"] == "mirax"
    assert s.level_dimensions == ((992, 992), (496, 496), (248, 248))
    assert sorted(s.associated_images) == ["label", "macro", "thumbnail"]
    assert float(s.properties["openslide.mpp-x"]) == pytest.approx(mirax_factory.MPP)
    truth = mirax_factory.truth_image()
    for level, (width, height) in enumerate(s.level_dimensions):
        painted = np.asarray(s.read_region((0, 0), level, (width, height)))[..., :3].astype(int)
        expected = truth if level == 0 else cv2.resize(truth, (width, height), interpolation=cv2.INTER_AREA)
        # overlapping camera photos are placed by the position buffer: no seam, JPEG error only
        assert np.abs(painted - expected.astype(int)).mean() < 3, level


def test_the_guard_passes_a_sound_slide(slide: Path) -> None:
    mirax.check_mirax(str(slide))
    mirax.check_mirax(str(slide.with_suffix(".svs")))  # not MIRAX: nothing to check


def _rewrite_slidedat(slide: Path, old: str, new: str) -> None:
    ini = mirax.unit_folder(str(slide)) + "/Slidedat.ini"
    text = Path(ini).read_bytes().decode("utf-8")
    assert old in text
    Path(ini).write_bytes(text.replace(old, new).encode("utf-8"))


def test_an_image_whose_sof_claims_more_than_its_level_is_a_bomb(slide: Path) -> None:
    data_path = Path(mirax.unit_folder(str(slide))) / "Data0000.dat"
    data = bytearray(data_path.read_bytes())
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, 65000, 65000)
    data_path.write_bytes(bytes(data))
    with pytest.raises(InputTooLargeError, match="larger image"):
        mirax.check_mirax(str(slide))


def test_huge_declared_images_are_refused_before_openslide_allocates_them(slide: Path) -> None:
    _rewrite_slidedat(
        slide, "DIGITIZER_WIDTH = 256\r\nDIGITIZER_HEIGHT = 256", "DIGITIZER_WIDTH = 60000\r\nDIGITIZER_HEIGHT = 60000"
    )
    with pytest.raises(InputTooLargeError, match="60000 x 60000"):
        mirax.check_mirax(str(slide))


def test_file_names_outside_the_folder_are_refused(slide: Path) -> None:
    _rewrite_slidedat(slide, "FILE_0 = Data0000.dat", "FILE_0 = ../../etc/passwd")
    with pytest.raises(InvalidInputError, match="outside the slide's folder"):
        mirax.check_mirax(str(slide))


def test_a_missing_data_file_is_named_as_a_missing_folder_file(slide: Path) -> None:
    os.remove(Path(mirax.unit_folder(str(slide))) / "Data0000.dat")
    with pytest.raises(InvalidInputError, match="missing from the slide's folder"):
        mirax.check_mirax(str(slide))


def test_an_index_of_another_slide_is_refused(slide: Path) -> None:
    _rewrite_slidedat(slide, mirax_factory.MIRAX_VALUES["slide_id"], "0" * 32)
    with pytest.raises(InvalidInputError, match="SLIDE_ID"):
        mirax.check_mirax(str(slide))


def test_a_lone_mrxs_file_has_no_slidedat(tmp_path: Path) -> None:
    lone = tmp_path / "lone.mrxs"
    lone.write_bytes(b"x")
    with pytest.raises(InvalidInputError, match="no readable Slidedat.ini"):
        mirax.check_mirax(str(lone))


def test_localize_gives_openslide_the_mirax_layout_without_input_names(slide: Path) -> None:
    folder = Path(mirax.unit_folder(str(slide)))
    companions = sorted(str(p) for p in folder.iterdir())
    path, tmp = localize((str(slide), *companions), "mrxs")
    try:
        assert tmp is not None and path == os.path.join(tmp, "slide.mrxs")
        assert sorted(os.listdir(os.path.join(tmp, "slide"))) == ["Data0000.dat", "Index.dat", "Slidedat.ini"]
        assert "ZQX" not in path
        assert openslide.OpenSlide(path).dimensions == (992, 992)
    finally:
        import shutil

        if tmp:
            shutil.rmtree(tmp)


def test_slidedat_values_are_harvested_for_the_unit(slide: Path) -> None:
    folder = Path(mirax.unit_folder(str(slide)))
    values = harvest_slide([str(slide), *sorted(str(p) for p in folder.iterdir())], "mrxs", str(slide.parent))
    texts = {value.text for value in values}
    for value in ("name", "barcode", "project"):
        assert mirax_factory.MIRAX_VALUES[value] in texts, value
    assert harvest_slidedat((folder / "Slidedat.ini").read_bytes()) <= values
