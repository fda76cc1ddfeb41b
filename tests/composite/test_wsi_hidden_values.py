"""WSI passthrough tiles, JPEGTables and ICC profiles carry no hidden value through DeidentifyWsi.

Two generic tiled TIFFs hide ZQXWARBLE QUINTESSA (and ZQXWARBLE^QUINTESSA) in every JPEG tile (COM,
APP1, APP13, APP0 or APP14 payload, COM between scan data and EOI, bytes after EOI), in the
JPEGTables tag and in the ICC profile's text; their Artist and HostComputer tags hold the name too, so
the run's leak check is looking for it. Clean tiles are still copied (passthrough), the outputs hold
no spelling of the name, decode to the same pixels, keep the colours, and are published.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.composite.test_wsi_pipeline import KEY, all_output_bytes, ref_for, run
from tests.support import hidden_values as hv

openslide = pytest.importorskip("openslide")


def _pixels(path: Path, level: int = 0) -> np.ndarray:
    slide = openslide.OpenSlide(str(path))
    width, height = slide.level_dimensions[level]
    return np.asarray(slide.read_region((0, 0), level, (width, height)).convert("RGB"))


def test_passthrough_tiles_tables_and_icc_lose_hidden_values_and_are_published(tmp_path: Path) -> None:
    sources = {}
    for rgb in (True, False):
        src = tmp_path / "in" / f"slide-{'rgb' if rgb else 'ycbcr'}.tiff"
        src.parent.mkdir(exist_ok=True)
        hv.write_hostile_slide(src, rgb)
        hv.assert_present(src.read_bytes())
        sources[ref_for(src).sha256] = src
    refs = [ref_for(path) for path in sources.values()]
    out = tmp_path / "out"
    audits, dead = run(refs, out, tmp_path, input_root=str(tmp_path / "in"), redact_text="detect", output_format="both")
    assert dead == []
    assert len(audits) == 2
    assert not (out / "quarantine").exists()
    hv.assert_absent(all_output_bytes(out), "published outputs")
    for audit in audits:
        src = sources[audit["input_sha256"]]
        actions = audit["actions"]
        # level 0 is copied; with text detection on, level 1 is rebuilt from it (README, Whole-slide images)
        assert actions["tiles_passthrough"] == 4 and actions["tiles_reencoded"] == 1, actions
        pseudonym = KEY.pseudonym("wsi", audit["input_sha256"])
        tiff = out / f"wsi/{pseudonym}.tiff"
        dicom = out / f"wsi/{pseudonym}/level-0.dcm"
        assert sorted(audit["outputs"])[0] == f"wsi/{pseudonym}.tiff"
        assert np.array_equal(_pixels(tiff, 0), _pixels(src, 0)), "level 0 pixels changed"
        rebuilt, reduced = _pixels(tiff, 1).astype(np.float64), _pixels(src, 1).astype(np.float64)
        assert 10 * np.log10(255**2 / max(((rebuilt - reduced) ** 2).mean(), 1e-9)) > 35, "level 1 far from the input's"
        assert np.array_equal(_pixels(dicom), _pixels(src))
        with tifffile.TiffFile(str(tiff)) as result:
            page = result.pages[0]
            icc = page.tags[34675].value
            hv.assert_absent(bytes(icc), "ICC tag")
            if page.jpegtables is not None:
                hv.assert_absent(bytes(page.jpegtables), "JPEGTables tag")
        tissue = np.ascontiguousarray(_pixels(src)[:64, :64])
        assert np.array_equal(hv.colour_through(bytes(icc), tissue), hv.colour_through(hv.icc_with_values(), tissue))
        assert openslide.OpenSlide(str(tiff)).color_profile is not None
        assert openslide.OpenSlide(str(dicom)).color_profile is not None
