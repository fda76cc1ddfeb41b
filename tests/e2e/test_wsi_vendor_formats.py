"""Every slide format OpenSlide reads, de-identified end to end: NDPI, Philips TIFF, Leica SCN, Ventana BIF, MIRAX.

One vendor-faithful synthetic slide per format (tests/support: ndpi_factory, vendor_slides,
mirax_factory), identifying values in every text field the vendor writes, in the file names and
printed on the label or macro. After `pipeline.main.main`: one `ok` record per slide (the MIRAX
folder is part of its slide), the output opens in OpenSlide with the input's level-0 size and
MPP, label and macro are gone by default and kept blank with `--label_macro blank` (Aperio layout,
whatever the vendor), no input text value is in any output byte, and `pipeline.verify` finds the
tree clean.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.main import main
from pipeline.verify import main as verify_main
from tests.support import mirax_factory, ndpi_factory, vendor_slides
from tests.support.env import BEAM_TEST_ARGS

openslide = pytest.importorskip("openslide")

FORMATS = ("ndpi", "philips", "leica", "ventana", "mirax")
FILES = {
    "ndpi": "ZQXNDPFILE-case.ndpi",
    "philips": "ZQXPHFILE-case.tiff",
    "leica": "ZQXSCNFILE-case.scn",
    "ventana": "ZQXBIFFILE-case.bif",
    "mirax": "ZQXMRXFILE-case.mrxs",
}


def _values(fmt: str) -> list[str]:
    if fmt == "ndpi":
        found = [v for k, v in ndpi_factory.NDPI_VALUES.items() if k != "date"] + ["2019:11:12 13:14:15"]
    elif fmt == "mirax":
        found = list(mirax_factory.MIRAX_VALUES.values()) + [mirax_factory.CREATED]
    else:
        found = list(vendor_slides.VALUES[fmt].values()) + [vendor_slides.DATES[fmt]]
        # Philips and Leica store the barcode base64-encoded: that spelling must be gone too
        found.append(base64.b64encode(vendor_slides.VALUES[fmt]["barcode"].encode()).decode())
    return found + [FILES[fmt].rsplit(".", 1)[0]]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vendors") / "in"
    root.mkdir()
    paths = {"ndpi": ndpi_factory.write_ndpi(root / FILES["ndpi"])}
    for fmt in ("philips", "leica", "ventana"):
        paths[fmt] = vendor_slides.WRITERS[fmt](root / FILES[fmt])
    paths["mirax"] = mirax_factory.write_mirax(root, FILES["mirax"].removesuffix(".mrxs"))
    return paths


def _run(inputs: dict[str, Path], out: Path, *extra: str) -> tuple[dict[str, dict], list[dict]]:
    root = inputs["ndpi"].parent
    assert main(["--input", str(root), "--output", str(out), *extra, *BEAM_TEST_ARGS]) == 0
    audit = [json.loads(line) for f in (out / "audit").iterdir() for line in f.read_text().splitlines() if line]
    dead = [json.loads(line) for f in (out / "dead_letter").iterdir() for line in f.read_text().splitlines() if line]
    by_sha = {record["input_sha256"]: record for record in audit}
    return by_sha, dead


@pytest.fixture(scope="module")
def dropped(inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list]:
    out = tmp_path_factory.mktemp("dropped") / "out"
    return (out, *_run(inputs, out))


@pytest.fixture(scope="module")
def blanked(inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list]:
    out = tmp_path_factory.mktemp("blanked") / "out"
    return (out, *_run(inputs, out, "--label_macro", "blank"))


def _record(inputs: dict[str, Path], fmt: str, by_sha: dict[str, dict]) -> dict:
    sha = hashlib.sha256(inputs[fmt].read_bytes()).hexdigest()
    assert sha in by_sha, f"no record for the {fmt} input"
    return by_sha[sha]


def test_one_ok_record_per_slide_and_no_dead_letters(inputs: dict[str, Path], dropped: tuple) -> None:
    _out, by_sha, dead = dropped
    assert dead == []
    assert len(by_sha) == len(FORMATS)  # the MIRAX folder's three files are part of its slide
    for fmt in FORMATS:
        assert _record(inputs, fmt, by_sha)["status"] == "ok", fmt


@pytest.mark.parametrize("fmt", FORMATS)
def test_same_level0_size_and_mpp_label_and_macro_gone(inputs: dict[str, Path], dropped: tuple, fmt: str) -> None:
    out, by_sha, _ = dropped
    record = _record(inputs, fmt, by_sha)
    (output,) = [name for name in record["outputs"] if name.endswith((".svs", ".tiff"))]
    source = openslide.OpenSlide(str(inputs[fmt]))
    result = openslide.OpenSlide(str(out / output))
    assert result.dimensions == source.dimensions
    for axis in ("x", "y"):
        expected = float(source.properties[f"openslide.mpp-{axis}"])
        assert float(result.properties[f"openslide.mpp-{axis}"]) == pytest.approx(expected, rel=1e-4)
    assert not {"label", "macro"} & set(result.associated_images), fmt
    exposed = {"label", "macro"} & set(source.associated_images)
    assert exposed and all(record["actions"].get(f"{name}_dropped") == 1 for name in exposed)


@pytest.mark.parametrize("fmt", FORMATS)
def test_label_macro_blank_is_kept_for_every_vendor(inputs: dict[str, Path], blanked: tuple, fmt: str) -> None:
    out, by_sha, dead = blanked
    assert dead == []
    record = _record(inputs, fmt, by_sha)
    source = openslide.OpenSlide(str(inputs[fmt]))
    result = openslide.OpenSlide(str(out / record["outputs"][0]))
    exposed = {"label", "macro"} & set(source.associated_images)
    assert exposed <= set(result.associated_images), fmt  # Aperio layout, whatever the input vendor
    for name in exposed:
        assert record["actions"][f"{name}_blanked"] == 1
        assert np.asarray(result.associated_images[name].convert("RGB")).min() >= 250, name


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_input_text_value_in_any_output_byte(dropped: tuple, blanked: tuple, fmt: str) -> None:
    # values in text fields, in file names, and printed on the label or macro (pixels only in the input)
    needles = [v.lower() for v in _values(fmt)]
    encodings = ("ascii", "utf-16-le", "utf-16-be")
    for out in (dropped[0], blanked[0]):
        files = [p for p in out.rglob("*") if p.is_file()]
        assert not any("quarantine" in p.parts for p in files)
        for path in files:
            data = path.read_bytes().lower()
            assert not any(needle in path.relative_to(out).as_posix().lower() for needle in needles)
            for needle in needles:
                for encoding in encodings:
                    assert needle.encode(encoding) not in data, (fmt, path.relative_to(out).as_posix())


def test_verify_finds_the_trees_clean(inputs: dict[str, Path], dropped: tuple, blanked: tuple) -> None:
    root = inputs["ndpi"].parent
    for out in (dropped[0], blanked[0]):
        assert verify_main(["--input", str(root), "--output", str(out)]) == 0
