"""The DeidentifyWsi composite end to end on TestPipeline (FnApiRunner, no credentials)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from deid.classify import InputRef
from deid.keys import DeidKey
from deid.settings import Box, RedactionSettings, RedactRegions, RunSettings, WsiSettings
from tests.support import wsi_factory
from tests.support.env import SHARED_DATA
from transforms.wsi import DeidentifyWsi

openslide = pytest.importorskip("openslide")

KEY = DeidKey(b"k" * 32)
SHARED = SHARED_DATA / "wsi"
OPTIONS = ["--runner=FnApiRunner", "--no_auth"]



def split_redaction(options: dict[str, object]) -> tuple[dict[str, object], RedactionSettings]:
    """Test keyword options -> (WsiSettings kwargs, RedactionSettings): redact_text, redact_fill and
    regions belong to the run's one redaction configuration, not to the slide settings."""
    wsi = dict(options)
    redaction = RedactionSettings(
        text=str(wsi.pop("redact_text", "off")),
        fill=str(wsi.pop("redact_fill", "black")),
        regions=wsi.pop("regions", RedactRegions()),  # type: ignore[arg-type]
    )
    return wsi, redaction

def ref_for(path: Path, subtype: str = "tiff", companions: tuple[str, ...] = ()) -> InputRef:
    data = path.read_bytes()
    return InputRef(str(path), len(data), hashlib.sha256(data).hexdigest(), "wsi", subtype, companions=companions)


def run(
    refs: list[InputRef],
    out: Path,
    tmp: Path,
    input_root: str | None = None,
    qa_report: bool = False,
    **wsi: object,
) -> tuple[list, list]:
    slide, redaction = split_redaction(wsi)
    settings = RunSettings(
        output=str(out),
        key_token=KEY.to_token(),
        wsi=WsiSettings(**slide),  # type: ignore[arg-type]
        redaction=redaction,
        scratch_location=str(tmp / "scratch"),
        input_root=input_root,
        qa_report=qa_report,
    )
    audits: list = []
    dead: list = []
    with TestPipeline(options=PipelineOptions(OPTIONS)) as p:
        outputs = p | beam.Create(refs) | DeidentifyWsi(settings)
        outputs.audit | "A" >> beam.Map(lambda r: r.to_json()) | "WA" >> beam.io.WriteToText(str(tmp / "audit"))
        outputs.dead_letters | "D" >> beam.Map(lambda r: r.to_json()) | "WD" >> beam.io.WriteToText(str(tmp / "dead"))
        assert_that(outputs.linkage, equal_to([]), label="NoLinkage")
        if qa_report:
            assert outputs.qa is not None
            outputs.qa | "Q" >> beam.Map(_qa_json) | "WQ" >> beam.io.WriteToText(str(tmp / "qa"))
        else:
            assert outputs.qa is None
    for prefix, into in (("audit", audits), ("dead", dead)):
        for name in os.listdir(tmp):
            if name.startswith(prefix):
                into.extend(json.loads(line) for line in (tmp / name).read_text().splitlines() if line)
    return audits, dead


def _qa_json(entry: object) -> str:
    import cv2

    from deid.qa.report import QaEntry

    assert isinstance(entry, QaEntry)
    decoded = [
        cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR) is not None
        for png in (entry.before_png, entry.after_png)
        if png
    ]
    return json.dumps({"sha": entry.input_sha256, "pngs": decoded, "label": entry.label, "boxes": entry.boxes})


def read_qa(tmp: Path) -> list[dict]:  # type: ignore[type-arg]
    return [
        json.loads(line)
        for name in os.listdir(tmp)
        if name.startswith("qa")
        for line in (tmp / name).read_text().splitlines()
        if line
    ]


def all_output_bytes(out: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file())


def level_region(slide, level: int, box: Box) -> np.ndarray:  # type: ignore[no-untyped-def]
    ds = 2**level
    x0, y0 = box.x // ds, box.y // ds
    x1, y1 = -(-(box.x + box.width) // ds), -(-(box.y + box.height) // ds)
    return np.asarray(slide.read_region((box.x, box.y), level, (x1 - x0, y1 - y0)).convert("RGB"))


def redacted_fraction(region: np.ndarray) -> float:
    """Share of pixels that are black fill (JPEG and downsampling blur the edges a little)."""
    return float((region.max(axis=2) < 60).mean())


def test_aperio_text_redacted_every_level_clean_tiles_pass_through(tmp_path: Path) -> None:
    src = tmp_path / "in" / "JaneDoe-S12-34567.svs"
    src.parent.mkdir()
    text = wsi_factory.write_aperio_svs(src, width=1024, height=768, tile=256, text_corner=(512, 256))
    assert text is not None
    ref = ref_for(src)
    out = tmp_path / "out"
    audits, dead = run([ref], out, tmp_path, redact_text="detect")
    assert dead == []
    assert len(audits) == 1
    audit = audits[0]
    pseudonym = KEY.pseudonym("wsi", ref.sha256)
    assert audit["outputs"] == [f"wsi/{pseudonym}.svs"]
    actions = audit["actions"]
    assert actions["tiles_redacted"] >= 4  # the text crosses a corner: four tiles
    assert actions["tiles_passthrough"] > 0 and actions["tiles_reencoded"] > 0
    assert actions["label_dropped"] == 1 and actions["macro_dropped"] == 1
    assert actions["metadata_fields_removed"] > 5
    result = openslide.OpenSlide(str(out / audit["outputs"][0]))
    source = openslide.OpenSlide(str(src))
    assert result.dimensions == source.dimensions
    assert result.properties["openslide.mpp-x"] == source.properties["openslide.mpp-x"]
    assert result.properties["openslide.objective-power"] == "20"
    assert set(result.associated_images) == {"thumbnail"}
    box = Box(text.x, text.y, text.width, text.height)
    for level in range(result.level_count):
        region = level_region(result, level, box)
        assert redacted_fraction(region) > 0.9, f"text visible at level {level}"
    # a clean area far from the text is byte-identical (copied JPEG tiles decode identically)
    clean = Box(0, 512, 256, 256)
    assert np.array_equal(level_region(result, 0, clean), level_region(source, 0, clean))
    blob = all_output_bytes(out)
    for phi in wsi_factory.PHI_STRINGS:
        assert phi.encode() not in blob
    assert b"JaneDoe" not in "".join(audit["outputs"]).encode()
    assert not list((tmp_path / "scratch").rglob("*.zst")), "scratch not cleaned"


def test_generic_tiff_regions_and_dicom_output(tmp_path: Path) -> None:
    src = tmp_path / "generic.tiff"
    wsi_factory.write_generic_tiff(src, width=800, height=600, tile=256, text_corner=None)
    ref = ref_for(src)
    region = Box(100, 100, 200, 120)
    out = tmp_path / "out"
    regions = RedactRegions(by_input=((ref.sha256, (region,)),))
    audits, dead = run([ref], out, tmp_path, qa_report=True, regions=regions, output_format="both")
    assert dead == []
    (entry,) = read_qa(tmp_path)
    assert entry == {"sha": ref.sha256, "pngs": [True, True], "label": "absent", "boxes": 2}
    (audit,) = audits
    pseudonym = KEY.pseudonym("wsi", ref.sha256)
    assert audit["outputs"][0] == f"wsi/{pseudonym}.tiff"
    assert any(o.endswith("level-0.dcm") for o in audit["outputs"])
    assert audit["actions"]["tiles_redacted"] == 2  # the box crosses x = 256
    assert "thumbnail_regenerated" not in audit["actions"]  # the generic layout carries no thumbnail
    for rel in audit["outputs"]:
        if rel.endswith(".dcm"):
            continue
        slide = openslide.OpenSlide(str(out / rel))
        assert slide.properties["openslide.vendor"] == "generic-tiff"
        for level in range(slide.level_count):
            assert redacted_fraction(level_region(slide, level, region)) > 0.9
    dicom = openslide.OpenSlide(str(out / f"wsi/{pseudonym}/level-0.dcm"))
    assert dicom.dimensions == (800, 600)
    assert redacted_fraction(level_region(dicom, 0, region)) > 0.9
    blob = all_output_bytes(out)
    for phi in wsi_factory.PHI_STRINGS:
        assert phi.encode() not in blob


def test_bad_slides_go_to_dead_letter(tmp_path: Path) -> None:
    bad = tmp_path / "truncated.svs"
    wsi_factory.write_aperio_svs(bad, width=512, height=512, tile=256, label=False, macro=False)
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    junk = tmp_path / "junk.tiff"
    junk.write_bytes(b"II*\x00" + b"\x00" * 100)
    refs = [ref_for(bad), ref_for(junk)]
    for name in ("openslide-fixture-unopenable.tiff", "openslide-fixture-unreadable.svs"):
        if (SHARED / name).exists():
            refs.append(ref_for(SHARED / name))
    audits, dead = run(refs, tmp_path / "out", tmp_path, qa_report=True)
    assert audits == []
    assert read_qa(tmp_path) == []  # no entry for a dead letter
    assert sorted(d["input_sha256"] for d in dead) == sorted(r.sha256 for r in refs)
    assert all(d["kind"] == "wsi" for d in dead)
    for record in dead:
        assert record["error_kind"] in {"slide_unreadable", "unsupported_format", "invalid_input"}, record
        assert "truncated" not in record["message"] or "slide" in record["message"]
    assert not (tmp_path / "out" / "wsi").exists() or not list((tmp_path / "out" / "wsi").iterdir())


@pytest.mark.skipif(not (SHARED / "openslide-fixture-boxes_0.dcm").exists(), reason="shared data absent")
def test_dicom_wsi_unit_and_shared_fixtures(tmp_path: Path) -> None:
    dcm = [ref_for(SHARED / f"openslide-fixture-boxes_{i}.dcm", "dicom-wsi") for i in (1, 0)]
    svs = ref_for(SHARED / "CMU-1-Small-Region.svs")
    boxes = ref_for(SHARED / "openslide-fixture-boxes.tiff")
    audits, dead = run([*dcm, svs, boxes], tmp_path / "out", tmp_path)
    assert dead == []
    by_sha = {a["input_sha256"]: a for a in audits}
    first = min(dcm, key=lambda r: r.path)
    assert set(by_sha) == {first.sha256, svs.sha256, boxes.sha256}
    cmu = by_sha[svs.sha256]
    assert cmu["actions"]["tiles_passthrough"] > 0
    slide = openslide.OpenSlide(str(tmp_path / "out" / cmu["outputs"][0]))
    assert slide.dimensions == (2220, 2967)
    assert slide.properties["openslide.objective-power"] == "20"
    blob = all_output_bytes(tmp_path / "out")
    for phi in (b"CPAPERIOCS", b"b414003d-95c6", b"Filename = CMU-1", b"PixelMed", b"Bangor"):
        assert phi not in blob


def test_a_leaking_slide_is_quarantined_and_dead_lettered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer is made to keep a description field: the leak check catches it before publishing."""
    from deid.wsi import tiff_writer

    real = tiff_writer.aperio_level0_description
    monkeypatch.setattr(
        tiff_writer, "aperio_level0_description", lambda *a: real(*a) + f"|User = {wsi_factory.PHI_USER}"
    )
    src = tmp_path / "in" / "a.svs"
    src.parent.mkdir()
    wsi_factory.write_aperio_svs(src, width=512, height=512, tile=256, text_corner=None, label=False, macro=False)
    ref = ref_for(src)
    out = tmp_path / "out"
    audits, dead = run([ref], out, tmp_path, input_root=str(tmp_path / "in"))
    assert audits == []
    (record,) = dead
    assert record["error_kind"] == "leak" and record["input_sha256"] == ref.sha256
    assert wsi_factory.PHI_USER not in json.dumps(record)
    assert not (out / "wsi").exists() or not [p for p in (out / "wsi").rglob("*") if p.is_file()]
    assert [p.name for p in (out / "quarantine" / ref.sha256).iterdir()] == ["0.svs"]
