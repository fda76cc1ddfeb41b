"""The real slides in ../shared/data/wsi_samples/: each de-identified, or dead-lettered with a reason a user can act on.

Skipped cleanly when ../shared/data is not present. The two NDPI files come from a real NanoZoomer
(C9600-12) and their macro shows the printed slide label: they must come out as pyramids of the
same size and MPP with the macro dropped, and no text value of theirs in any output byte.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pipeline.main import main
from pipeline.verify import main as verify_main
from tests.support.env import BEAM_TEST_ARGS, SHARED_DATA

openslide = pytest.importorskip("openslide")
SAMPLES = SHARED_DATA / "wsi_samples"
pytestmark = pytest.mark.skipif(not (SAMPLES / "ndpi").is_dir(), reason="../shared/data/wsi_samples is not present")

# relative path -> (status, error_kind, a phrase of the message that says what to do)
EXPECTED = {
    "ndpi/orbit-test3-DAPI-387.ndpi": ("ok", None, None),
    "ndpi/orbit-test3-TRITC-560.ndpi": ("ok", None, None),
    "tcga-cr-7395-01a-01-ts1.svs": ("ok", None, None),
    "small_HE_levels.tiff": ("ok", None, None),
    "dicom/gcp-volume-jpeg-15frames-private.dcm": ("ok", None, None),
    "dicom/gcp-volume-jpeg2000-28frames-phi.dcm": ("ok", None, None),
    "dicom/gcp-volume-native-rgb.dcm": ("ok", None, None),
    "small_vectra.qptiff": ("dead_letter", "unsupported_format", "Vectra QPTIFF"),
    "kidney-48-5.tif": ("dead_letter", "unsupported_format", "stored in strips, not tiles"),
    "broken.svs": ("dead_letter", "unsupported_format", "neither DICOM"),
    "dicom/gcp-label-datamatrix.dcm": ("dead_letter", "unsupported_format", "no VOLUME instance"),
    "dicom/gcp-label-private-tags.dcm": ("dead_letter", "unsupported_format", "no VOLUME instance"),
    "dicom/gcp-label-pdf417-barcode-CBF-1234.dcm": ("dead_letter", "unsupported_format", "no VOLUME instance"),
}
# Text of the NDPI files (tags and property map) and of their printed label, as the shared README lists it.
NDPI_TEXTS = ("950291", "950410", "2017:02:07 13:06:43", "2017:02:07 13:07:45", "DAPI 2 (387)", "TRITC 2 (560)",
              "HS12-15115", "ELB0246-0402", "TSA2_var")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict], dict[str, dict]]:
    out = tmp_path_factory.mktemp("real") / "out"
    assert main(["--input", str(SAMPLES), "--output", str(out), *BEAM_TEST_ARGS]) == 0
    audit = [json.loads(line) for f in (out / "audit").iterdir() for line in f.read_text().splitlines() if line]
    dead = [json.loads(line) for f in (out / "dead_letter").iterdir() for line in f.read_text().splitlines() if line]
    by_sha = {record["input_sha256"]: record for record in audit}
    assert len(by_sha) == len(audit), "one record per input"
    return out, by_sha, {record["input_sha256"]: record for record in dead}


def _sha(relative: str) -> str:
    return hashlib.sha256((SAMPLES / relative).read_bytes()).hexdigest()


@pytest.mark.parametrize("relative", sorted(EXPECTED))
def test_each_real_slide_is_deidentified_or_dead_lettered_with_a_reason(run: tuple, relative: str) -> None:
    _out, by_sha, dead = run
    status, error_kind, phrase = EXPECTED[relative]
    record = by_sha[_sha(relative)]
    assert (record["status"], record.get("error_kind")) == (status, error_kind)
    if phrase is not None:
        assert phrase in dead[_sha(relative)]["message"]


@pytest.mark.parametrize("relative", [r for r in EXPECTED if r.endswith(".ndpi")])
def test_real_ndpi_same_size_and_mpp_macro_dropped(run: tuple, relative: str) -> None:
    out, by_sha, _ = run
    record = by_sha[_sha(relative)]
    assert record["actions"]["macro_dropped"] == 1
    source = openslide.OpenSlide(str(SAMPLES / relative))
    result = openslide.OpenSlide(str(out / record["outputs"][0]))
    assert result.dimensions == source.dimensions == (3968, 4864)
    assert float(result.properties["openslide.mpp-x"]) == pytest.approx(float(source.properties["openslide.mpp-x"]))
    assert float(result.properties["openslide.mpp-y"]) == pytest.approx(float(source.properties["openslide.mpp-y"]))
    assert "macro" not in result.associated_images and "label" not in result.associated_images


def test_no_ndpi_text_in_any_output_byte_and_verify_is_clean(run: tuple) -> None:
    out, _, _ = run
    for path in (p for p in out.rglob("*") if p.is_file()):
        data = path.read_bytes()
        for text in NDPI_TEXTS:
            for encoding in ("ascii", "utf-16-le"):
                assert text.encode(encoding) not in data, path.relative_to(out).as_posix()
    assert verify_main(["--input", str(SAMPLES), "--output", str(out)]) == 0
