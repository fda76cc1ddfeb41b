"""The WSI writers through the production composite: DeidentifyWsi on an in-process TestPipeline."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
import tifffile
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not collected by pytest
from apache_beam.testing.util import assert_that, equal_to

from deid.classify import InputRef
from deid.keys import DeidKey
from deid.settings import RunSettings, WsiSettings
from tests.support import wsi_factory
from tests.support.env import BEAM_TEST_ARGS
from transforms.wsi import DeidentifyWsi

openslide = pytest.importorskip("openslide")
KEY = DeidKey(b"u" * 32)


# -- writers through the production composite (DeidentifyWsi on a TestPipeline) ---------------------------

PSEUDO = KEY.pseudonym("wsi", "ab" * 32)


def _local(tmp_path: Path, src: Path, **wsi: object) -> tuple[list[str], dict[str, int], Path]:
    """One slide through DeidentifyWsi in-process: (relative outputs, audit actions, OUTPUT)."""
    ref = InputRef(str(src), src.stat().st_size, "ab" * 32, "wsi", "tiff")
    out = tmp_path / "out"
    settings = RunSettings(
        output=str(out),
        key_token=KEY.to_token(),
        wsi=WsiSettings(**wsi),  # type: ignore[arg-type]
        scratch_location=str(tmp_path / "scr"),
    )
    audit_prefix = tmp_path / "audit"
    with BeamTestPipeline(options=PipelineOptions(BEAM_TEST_ARGS)) as p:
        results = p | beam.Create([ref]) | DeidentifyWsi(settings)
        assert_that(results.dead_letters, equal_to([]), label="NoDeadLetters")
        (
            results.audit
            | "AuditJson" >> beam.Map(lambda record: record.to_json())
            | "WriteAudit" >> beam.io.WriteToText(str(audit_prefix))
        )
    lines = [line for path in tmp_path.glob("audit*") for line in path.read_text().splitlines() if line]
    (audit,) = [json.loads(line) for line in lines]
    assert not list((tmp_path / "scr").rglob("*.*")), "scratch not cleaned"
    return audit["outputs"], audit["actions"], out


def test_writer_aperio_layout_and_label_blank(tmp_path: Path) -> None:
    src = tmp_path / "a.svs"
    wsi_factory.write_aperio_svs(src, 768, 512, 256, text_corner=None)
    outputs, actions, out = _local(tmp_path, src, label="blank")
    assert outputs == [f"wsi/{PSEUDO}.svs"]
    assert actions["label_blanked"] == 1 and actions["macro_blanked"] == 1
    assert actions["tiles_reencoded"] == 2  # level 1 (no 2x level in the input); level 2 = input 4x
    slide = openslide.OpenSlide(str(out / outputs[0]))
    assert set(slide.associated_images) == {"label", "macro", "thumbnail"}
    label = np.asarray(slide.associated_images["label"].convert("RGB"))
    assert label.min() == 255
    with tifffile.TiffFile(out / outputs[0]) as tif:
        for page in tif.pages:
            for name in ("Artist", "DateTime", "DocumentName", "HostComputer", "XMP", "Software"):
                assert name not in page.tags  # type: ignore[union-attr]


def test_writer_psnr_when_reencoded(tmp_path: Path) -> None:
    src = tmp_path / "lzw.tiff"
    wsi_factory.write_generic_tiff(src, 600, 400, 256, text_corner=None, compression="lzw")
    outputs, actions, out = _local(tmp_path, src, tile_size=256)
    assert actions["tiles_passthrough"] == 0
    a = np.asarray(openslide.OpenSlide(str(out / outputs[0])).read_region((0, 0), 0, (600, 400)).convert("RGB"))
    b = np.asarray(openslide.OpenSlide(str(src)).read_region((0, 0), 0, (600, 400)).convert("RGB"))
    mse = ((a.astype(float) - b) ** 2).mean()
    assert 10 * np.log10(255**2 / mse) > 40


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy not installed")
def test_dicom_output_passes_dciodvfy(tmp_path: Path) -> None:
    src = tmp_path / "a.svs"
    wsi_factory.write_aperio_svs(src, 600, 500, 256, text_corner=None)
    outputs, actions, out = _local(tmp_path, src, output_format="dicom")
    assert actions["dicom_instances_written"] == len(outputs) == 3
    for rel in outputs:
        run = subprocess.run(["dciodvfy", str(out / rel)], capture_output=True, text=True, check=False)
        report = run.stdout + run.stderr
        assert "Error" not in report, report
    slide = openslide.OpenSlide(str(out / outputs[0]))
    assert slide.dimensions == (600, 500)
    assert slide.properties["openslide.objective-power"] == "20"
    assert slide.properties["openslide.mpp-x"].startswith("0.499")
