"""Output fidelity of DeidentifyWsi (issue 13): clean JPEG tiles copied for every vendor whose tiles sit
on a regular grid, every input level kept, reduced levels rebuilt from the redacted level 0 when text
detection is on, no invented pixel spacing, and level-0 PSNR against the input and against a plain
pyvips rewrite of the same slide at the same quality, measured in the same run.

`pytest -s tests/composite/test_wsi_fidelity.py -k psnr` prints the PSNR table the README quotes.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
from pathlib import Path

import apache_beam as beam
import numpy as np
import pydicom
import pytest
import tifffile
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not collected by pytest

from deid.classify import InputRef
from deid.keys import DeidKey
from deid.settings import RedactionSettings, RunSettings, WsiSettings
from tests.support import grid_slides, wsi_factory
from tests.support.env import BEAM_TEST_ARGS, SHARED_DATA
from transforms.wsi import DeidentifyWsi

openslide = pytest.importorskip("openslide")
KEY = DeidKey(b"f" * 32)
SAMPLES = SHARED_DATA / "wsi_samples"
QUALITY = WsiSettings().jpeg_quality  # the default --jpeg_quality
MIN_PSNR = 40.0
MAX_BELOW_PYVIPS = 1.0


def ref_for(path: Path, subtype: str = "tiff") -> InputRef:
    data = path.read_bytes()
    return InputRef(str(path), len(data), hashlib.sha256(data).hexdigest(), "wsi", subtype)


def run(
    tmp: Path, refs: list[InputRef], text: str = "off", **wsi: object
) -> tuple[dict[str, dict], list[dict], Path]:  # type: ignore[type-arg]
    """The slides through DeidentifyWsi in one pipeline: (audit by input sha256, dead letters, OUTPUT)."""
    out = tmp / "out"
    settings = RunSettings(
        output=str(out),
        key_token=KEY.to_token(),
        wsi=WsiSettings(**wsi),  # type: ignore[arg-type]
        redaction=RedactionSettings(text=text),
        scratch_location=str(tmp / "scratch"),
    )
    with BeamTestPipeline(options=PipelineOptions(BEAM_TEST_ARGS)) as p:
        results = p | beam.Create(refs) | DeidentifyWsi(settings)
        results.audit | "A" >> beam.Map(lambda r: r.to_json()) | "WA" >> beam.io.WriteToText(str(tmp / "audit"))
        results.dead_letters | "D" >> beam.Map(lambda r: r.to_json()) | "WD" >> beam.io.WriteToText(str(tmp / "dead"))
    records = {
        prefix: [json.loads(line) for path in tmp.glob(f"{prefix}-*") for line in path.read_text().splitlines() if line]
        for prefix in ("audit", "dead")
    }
    return {a["input_sha256"]: a for a in records["audit"]}, records["dead"], out


def level0(path: Path | str) -> np.ndarray:
    """Level 0 as OpenSlide shows it, RGB over white."""
    slide = openslide.OpenSlide(str(path))
    try:
        rgba = np.asarray(slide.read_region((0, 0), 0, slide.dimensions))
    finally:
        slide.close()
    rgb = rgba[..., :3].astype(np.uint16) + (255 - rgba[..., 3:4].astype(np.uint16))
    return np.minimum(rgb, 255).astype(np.uint8)


def level_pixels(path: Path | str, level: int) -> np.ndarray:
    slide = openslide.OpenSlide(str(path))
    try:
        return np.asarray(slide.read_region((0, 0), level, slide.level_dimensions[level]).convert("RGB"))
    finally:
        slide.close()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def outputs_of(audit: dict, out: Path) -> dict[str, Path]:  # type: ignore[type-arg]
    """'tiff' and/or 'dicom' (its level-0 instance) -> local path."""
    found: dict[str, Path] = {}
    for rel in audit["outputs"]:
        if rel.endswith(".dcm"):
            if rel.endswith("/level-0.dcm"):
                found["dicom"] = out / rel
        else:
            found["tiff"] = out / rel
    return found


# -- clean tiles copied for every vendor with tiles on a regular grid -------------------------------------


GRID_VENDORS = {
    "leica-scn": ("a.scn", lambda p: grid_slides.write_leica_scn(p), "tiff"),
    "ventana-bif": ("a.bif", lambda p: grid_slides.write_ventana_bif(p), "tiff"),
    "philips": ("a.tiff", lambda p: grid_slides.write_philips_tiff(p), "tiff"),
    "philips-sparse": ("a.tiff", lambda p: grid_slides.write_philips_tiff(p, missing=(1, 6)), "tiff"),
    "dicom": ("dcm", lambda p: grid_slides.write_dicom_wsi(p), "dicom-wsi"),
}
# Stored level-0 tiles of each synthetic slide (the SCN main image is 4 x 3 tiles inside its collection).
STORED_LEVEL0_TILES = {"leica-scn": 12, "ventana-bif": 16, "philips": 12, "philips-sparse": 10, "dicom": 12}


@pytest.mark.parametrize("vendor", sorted(GRID_VENDORS))
def test_clean_tiles_are_copied_unchanged_for_every_grid_vendor(tmp_path: Path, vendor: str) -> None:
    name, write, subtype = GRID_VENDORS[vendor]
    src = tmp_path / "in" / name
    src.parent.mkdir()
    write(src)
    files = sorted(src.glob("*.dcm")) if subtype == "dicom-wsi" else [src]
    refs = [ref_for(path, subtype) for path in files]
    audits, dead, out = run(tmp_path, refs, output_format="both")
    assert dead == []
    (audit,) = audits.values()
    actions = audit["actions"]
    assert actions["tiles_passthrough"] >= STORED_LEVEL0_TILES[vendor], actions
    source = level0(files[0])
    for kind, path in outputs_of(audit, out).items():
        result = level0(path)
        # copied tiles decode exactly as the input's; only tiles outside the stored grid (white) are coded
        assert psnr(result, source) == math.inf or psnr(result, source) > 50, (kind, psnr(result, source))
        slide = openslide.OpenSlide(str(path))
        assert slide.dimensions == openslide.OpenSlide(str(files[0])).dimensions
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(grid_slides.MPP, rel=1e-3)
    tiff = outputs_of(audit, out)["tiff"]
    with tifffile.TiffFile(tiff) as tif:
        page = tif.pages[0]
        assert page.compression == 7 and page.tilewidth == 256  # type: ignore[union-attr]


def test_stored_grid_matches_openslide_or_nothing_is_copied(tmp_path: Path) -> None:
    """A BIF whose level-0 tiles overlap is laid out by OpenSlide with a fractional advance: not a
    regular grid, so every tile is re-encoded from OpenSlide's pixels (and still close to them)."""
    src = tmp_path / "overlap.bif"
    grid_slides.write_ventana_bif(src, overlap=8)
    audits, dead, out = run(tmp_path, [ref_for(src)])
    assert dead == []
    (audit,) = audits.values()
    assert audit["actions"]["tiles_passthrough"] == 0
    assert psnr(level0(outputs_of(audit, out)["tiff"]), level0(src)) > MIN_PSNR


# -- every input level kept ---------------------------------------------------------------------------


def _small_deflate_pyramid(path: Path) -> None:
    image = wsi_factory.tissue(300, 250)
    with tifffile.TiffWriter(path) as tif:
        for index, level in enumerate(grid_slides.pyramid(image, 4)):
            tif.write(
                level,
                tile=(64, 64),
                compression="zlib",
                photometric="rgb",
                subfiletype=0 if index == 0 else 1,
                metadata=None,
                software=False,
            )


@pytest.mark.parametrize("sample", ["synthetic", "small_HE_levels.tiff"])
def test_every_input_level_is_kept(tmp_path: Path, sample: str) -> None:
    if sample == "synthetic":
        src = tmp_path / "deflate.tiff"
        _small_deflate_pyramid(src)
    else:
        src = SAMPLES / sample
        if not src.exists():
            pytest.skip(f"{src} is not present")
    source = openslide.OpenSlide(str(src))
    assert source.level_count == 4
    audits, dead, out = run(tmp_path, [ref_for(src)])
    assert dead == []
    (audit,) = audits.values()
    assert audit["actions"]["levels_written"] == audit["details"]["levels"] == 4
    result = openslide.OpenSlide(str(outputs_of(audit, out)["tiff"]))
    assert result.level_count == 4
    for (w, h), (sw, sh) in zip(result.level_dimensions, source.level_dimensions, strict=True):
        assert abs(w - sw) <= 1 and abs(h - sh) <= 1


# -- text present only in a reduced level ---------------------------------------------------------------


def _dark_fraction(region: np.ndarray) -> float:
    return float((region.max(axis=2) < 80).mean())


@pytest.mark.parametrize("text", ["detect", "off"])
def test_text_only_in_a_reduced_level(tmp_path: Path, text: str) -> None:
    """With text detection on, reduced levels are rebuilt from the (searched, redacted) level 0, so text
    that only an input's reduced level holds is gone; with it off, clean reduced levels are copied."""
    src = tmp_path / "reduced-text.tiff"
    x, y, w, h = grid_slides.write_text_in_reduced_level(src)
    assert _dark_fraction(level_pixels(src, 1)[y : y + h, x : x + w]) > 0.05
    assert _dark_fraction(level0(src)) == 0.0
    audits, dead, out = run(tmp_path, [ref_for(src)], text=text)
    assert dead == []
    (audit,) = audits.values()
    result = outputs_of(audit, out)["tiff"]
    region = level_pixels(result, 1)[y : y + h, x : x + w]
    actions = audit["actions"]
    if text == "detect":
        assert _dark_fraction(region) == 0.0, "text of the input's level 1 reached the output"
        assert actions["tiles_passthrough"] == 16  # level 0 (clean) is still copied ...
        assert actions["tiles_reencoded"] == 5  # ... and levels 1 and 2 rebuilt from it
    else:
        assert _dark_fraction(region) > 0.05  # documented: copied as the input has it
        assert actions["tiles_passthrough"] == 21


# -- no invented pixel spacing ----------------------------------------------------------------------------


def test_dicom_output_of_a_slide_without_mpp_states_no_size(tmp_path: Path) -> None:
    src = tmp_path / "no-mpp.tiff"
    image = wsi_factory.tissue(600, 500)
    tifffile.imwrite(src, image, tile=(256, 256), compression="jpeg", photometric="rgb", metadata=None)
    assert "openslide.mpp-x" not in openslide.OpenSlide(str(src)).properties
    audits, dead, out = run(tmp_path, [ref_for(src)], output_format="dicom")
    assert dead == []
    (audit,) = audits.values()
    assert audit["details"]["pixel_spacing"] == "unknown"
    instances = [out / rel for rel in audit["outputs"]]
    for path in instances:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
        assert "PixelSpacing" not in measures and "PixelSpacing" not in ds
        assert "ImagedVolumeWidth" not in ds and "ImagedVolumeHeight" not in ds
    slide = openslide.OpenSlide(str(instances[0]))
    assert slide.dimensions == (600, 500) and "openslide.mpp-x" not in slide.properties
    if shutil.which("dciodvfy") is None:
        return
    # The VL WSI IOD makes these Type 1C for VOLUME images; without a known size they stay absent.
    allowed = {
        "Error - Missing attribute Type 1C Conditional Element=<PixelSpacing> Module=<PixelMeasuresMacro>",
        "Error - Missing attribute Type 1C Conditional Element=<ImagedVolumeWidth> Module=<WholeSlideMicroscopyImage>",
        "Error - Missing attribute Type 1C Conditional Element=<ImagedVolumeHeight> Module=<WholeSlideMicroscopyImage>",
    }
    for path in instances:
        report = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
        errors = {line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")}
        assert errors <= allowed, errors


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy not installed")
def test_dicom_output_of_copied_and_reencoded_levels_passes_dciodvfy(tmp_path: Path) -> None:
    """Levels copied from the input keep its coding (the SCN's YCbCr 4:2:0: YBR_FULL_422); levels with no
    input level to copy from (the SCN's level 2, whose offset is no whole tile; a deflate slide) are
    coded as RGB samples."""
    scn = tmp_path / "a.scn"
    grid_slides.write_leica_scn(scn)
    deflate = tmp_path / "deflate.tiff"
    wsi_factory.write_generic_tiff(deflate, 600, 500, 256, text_corner=None, compression="zlib")
    expected = {
        ref_for(scn).sha256: ["YBR_FULL_422", "YBR_FULL_422", "RGB", "RGB"],
        ref_for(deflate).sha256: ["RGB", "RGB", "RGB"],
    }
    audits, dead, out = run(tmp_path, [ref_for(scn), ref_for(deflate)], output_format="dicom")
    assert dead == []
    for sha, photometric in expected.items():
        found = []
        for rel in sorted(audits[sha]["outputs"]):
            ds = pydicom.dcmread(out / rel, stop_before_pixels=True)
            found.append(str(ds.PhotometricInterpretation))
            report = subprocess.run(["dciodvfy", str(out / rel)], capture_output=True, text=True, check=False)
            assert "Error" not in report.stdout + report.stderr, report.stdout + report.stderr
        assert found == photometric


# -- level-0 PSNR against the input and against pyvips ------------------------------------------------


def _fidelity_inputs(folder: Path) -> list[tuple[str, list[Path], str]]:
    """(label, files, subtype): synthetic slides of each layout, then the real samples present."""
    folder.mkdir()
    made: list[tuple[str, list[Path], str]] = []
    svs = folder / "aperio-jpeg.svs"
    wsi_factory.write_aperio_svs(svs, 1024, 768, 256, text_corner=None)
    made.append(("synthetic Aperio JPEG (copied)", [svs], "tiff"))
    deflate = folder / "generic-deflate.tiff"
    wsi_factory.write_generic_tiff(deflate, 1024, 768, 256, text_corner=None, compression="zlib")
    made.append(("synthetic generic deflate", [deflate], "tiff"))
    small = folder / "generic-jpeg-64px.tiff"
    tifffile.imwrite(
        small, wsi_factory.tissue(1000, 700), tile=(64, 64), compression="jpeg", photometric="rgb",
        compressionargs={"level": 85}, metadata=None,
    )
    made.append(("synthetic generic JPEG 4:2:0, 64 px tiles", [small], "tiff"))
    for label, name, write in (
        ("synthetic Leica SCN", "a.scn", grid_slides.write_leica_scn),
        ("synthetic Ventana BIF", "a.bif", grid_slides.write_ventana_bif),
        ("synthetic Philips TIFF", "philips.tiff", grid_slides.write_philips_tiff),
    ):
        write(folder / name)
        made.append((label, [folder / name], "tiff"))
    made.append(("synthetic DICOM WSI", grid_slides.write_dicom_wsi(folder / "dicom"), "dicom-wsi"))
    for label, rel, subtype in (
        ("small_HE_levels.tiff (deflate, 4 levels)", "small_HE_levels.tiff", "tiff"),
        ("tcga-cr-7395 SVS (JPEG 2000)", "tcga-cr-7395-01a-01-ts1.svs", "tiff"),
        ("gcp DICOM WSI (JPEG)", "dicom/gcp-volume-jpeg-15frames-private.dcm", "dicom-wsi"),
        ("gcp DICOM WSI (JPEG 2000)", "dicom/gcp-volume-jpeg2000-28frames-phi.dcm", "dicom-wsi"),
        ("NDPI DAPI", "ndpi/orbit-test3-DAPI-387.ndpi", "tiff"),
        ("NDPI TRITC", "ndpi/orbit-test3-TRITC-560.ndpi", "tiff"),
    ):
        if (SAMPLES / rel).exists():
            made.append((label, [SAMPLES / rel], subtype))
    return made


def _pyvips_rewrite(pyvips, pixels: np.ndarray, path: Path) -> np.ndarray:  # type: ignore[no-untyped-def]
    """A plain pyvips rewrite of the slide's level 0: tiled JPEG pyramid at the same quality, read back."""
    image = pyvips.Image.new_from_array(pixels)
    image.tiffsave(str(path), tile=True, tile_width=256, tile_height=256, pyramid=True, compression="jpeg", Q=QUALITY)
    back = pyvips.Image.new_from_file(str(path), page=0)
    return np.asarray(back.numpy())[..., :3]


def test_level0_psnr_against_the_input_and_a_pyvips_rewrite(tmp_path: Path) -> None:
    try:
        import pyvips
    except (ImportError, OSError) as exc:  # OSError: the Python binding without libvips
        pytest.skip(f"pyvips is not importable ({type(exc).__name__}); pip install 'pyvips[binary]'")
    inputs = _fidelity_inputs(tmp_path / "in")
    refs = {label: [ref_for(path, subtype) for path in files] for label, files, subtype in inputs}
    audits, dead, out = run(tmp_path, [ref for group in refs.values() for ref in group], output_format="both")
    assert dead == [], dead
    rows = []
    failures = []
    for label, files, _subtype in inputs:
        first = min(refs[label], key=lambda r: r.path)
        audit = audits[first.sha256]
        source = level0(files[0])
        reference = psnr(_pyvips_rewrite(pyvips, source, tmp_path / f"vips-{len(rows)}.tiff"), source)
        for kind, path in sorted(outputs_of(audit, out).items()):
            ours = psnr(level0(path), source)
            rows.append((label, kind, ours, reference, audit["actions"]["tiles_passthrough"]))
            if not (ours >= MIN_PSNR and ours >= reference - MAX_BELOW_PYVIPS):
                failures.append((label, kind, ours, reference))
    print(f"\nlevel-0 PSNR at --jpeg_quality {QUALITY} (dB; inf = identical pixels)")
    print(f"{'input':58} {'output':6} {'ours':>7} {'pyvips':>7} {'copied tiles':>12}")
    for label, kind, ours, reference, copied in rows:
        print(f"{label:58} {kind:6} {ours:7.2f} {reference:7.2f} {copied:12d}")
    assert not failures, failures
