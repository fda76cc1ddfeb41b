"""Dead-letter reasons for slides OpenSlide will not read say what the file is and what to do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from deid.errors import UnsupportedFormatError
from deid.wsi.formats import GENERIC, require_volume, unsupported_reason
from deid.wsi.source import SlideReader

openslide = pytest.importorskip("openslide")


def test_a_stripped_tiff_photo_is_named_and_the_conversion_suggested(tmp_path: Path) -> None:
    path = tmp_path / "photo.tif"
    tifffile.imwrite(path, np.zeros((90, 150, 3), np.uint8), photometric="rgb")
    with pytest.raises(UnsupportedFormatError, match=r"150 x 90 pixels.*strips, not tiles.*--tile --pyramid"):
        SlideReader(str(path))


def test_a_vectra_qptiff_is_named(tmp_path: Path) -> None:
    path = tmp_path / "scan.qptiff"
    root = "PerkinElmer-QPI-ImageDescription"
    description = f'<?xml version="1.0"?><{root}><DescriptionVersion>2</DescriptionVersion></{root}>'
    tifffile.imwrite(path, np.zeros((64, 64), np.uint8), description=description)
    assert "Vectra QPTIFF" in unsupported_reason(str(path))


def test_other_files_keep_the_generic_reason(tmp_path: Path) -> None:
    path = tmp_path / "notes.svs"
    path.write_bytes(b"plain text")
    assert unsupported_reason(str(path)) == GENERIC


def test_a_dicom_series_needs_a_volume_instance() -> None:
    require_volume([["ORIGINAL", "PRIMARY", "LABEL", "NONE"], ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]])
    with pytest.raises(UnsupportedFormatError, match=r"no VOLUME instance \(only LABEL, OVERVIEW images\)"):
        require_volume([["ORIGINAL", "PRIMARY", "LABEL", "NONE"], ["ORIGINAL", "PRIMARY", "OVERVIEW", "NONE"]])
    with pytest.raises(UnsupportedFormatError, match="no recognised ImageType"):
        require_volume([[]])
