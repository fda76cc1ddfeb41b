"""Pure WSI functions (grid, pyramid maths, JPEG, metadata, writers) and the DoFns one by one."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pytest
import tifffile
import wsi_factory
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not collected by pytest
from apache_beam.testing.util import assert_that, equal_to
from conftest import BEAM_TEST_ARGS

from deid.classify import InputRef
from deid.keys import DeidKey
from deid.records import AuditRecord
from deid.redaction.engine import RedactionConfig
from deid.settings import Box, RedactionSettings, RunSettings, WsiSettings
from deid.wsi import jpeg
from deid.wsi.grid import TileGrid, children_of, level_count
from deid.wsi.job import SlideUnit
from deid.wsi.metadata import parse_aperio_description, scrub
from deid.wsi.scratch import pack_pixels, unpack_pixels
from deid.wsi.source import SlideReader
from deid.wsi.tiles import TileRecord, halve
from transforms.files import LocalScratch
from transforms.wsi import DeidentifyWsi

openslide = pytest.importorskip("openslide")
KEY = DeidKey(b"u" * 32)
SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "wsi"


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


# -- DoFns via setup()/process() --------------------------------------------------------------------------


def test_dofns_one_by_one(tmp_path: Path) -> None:
    from transforms.wsi import _BuildParents, _PrepareSlide, _RedactTiles, _WriteSlide

    src = tmp_path / "a.svs"
    wsi_factory.write_aperio_svs(src, 512, 512, 256, text_corner=None, label=False, macro=False)
    ref = InputRef(str(src), src.stat().st_size, "cd" * 32, "wsi", "tiff")
    settings = RunSettings(output=str(tmp_path / "out"), key_token=KEY.to_token(), wsi=WsiSettings())
    root = str(tmp_path / "scr")
    prepare = _PrepareSlide(settings, root)
    prepare.setup()
    (job,) = list(prepare.process(SlideUnit.single(ref)))
    assert job.context.tile == 256 and len(job.levels) == 2
    redact = _RedactTiles(root)
    redact.setup()
    from deid.wsi.job import tile_tasks

    records: list[TileRecord] = []
    for task in tile_tasks(job):
        records.extend(redact.process(task))
    redact.teardown()
    assert all(r.origin == "source" and not r.failed for r in records)
    parents = _BuildParents(root, 1)
    parents.setup()
    (top,) = list(parents.process(((job.slide_id, 0, 0), records), {job.slide_id: job.context}))
    writer = _WriteSlide(settings, root)
    writer.setup()
    (audit,) = list(writer.process((job, [*records, top])))
    assert isinstance(audit, AuditRecord)
    assert audit.outputs == (f"wsi/{KEY.pseudonym('wsi', ref.sha256)}.svs",)
    assert (tmp_path / "out" / audit.outputs[0]).exists()
    assert audit.actions["tiles_passthrough"] == 4 and audit.actions["tiles_reencoded"] == 1


def test_prepare_rejects_too_large(tmp_path: Path) -> None:
    from deid.errors import InputTooLargeError
    from deid.settings import Limits
    from transforms.wsi import _PrepareSlide

    src = tmp_path / "a.svs"
    wsi_factory.write_aperio_svs(src, 512, 512, 256, text_corner=None, label=False, macro=False)
    ref = InputRef(str(src), src.stat().st_size, "cd" * 32, "wsi", "tiff")
    settings = RunSettings(output=str(tmp_path), key_token=KEY.to_token(), limits=Limits(max_pixels=1000))
    prepare = _PrepareSlide(settings, str(tmp_path / "scr"))
    prepare.setup()
    with pytest.raises(InputTooLargeError) as info:
        list(prepare.process(SlideUnit.single(ref)))
    assert "a.svs" not in str(info.value)


# -- leak check in the write DoFn ------------------------------------------------------------------------


def _write_slide_dofns(src: Path, settings: RunSettings, root: str) -> list:  # type: ignore[type-arg]
    """Prepare, redact, build parents and write one slide through the DoFns; the writer's outputs."""
    from transforms.wsi import _BuildParents, _PrepareSlide, _RedactTiles, _WriteSlide

    ref = InputRef(str(src), src.stat().st_size, "ef" * 32, "wsi", "tiff")
    prepare = _PrepareSlide(settings, root)
    prepare.setup()
    (job,) = list(prepare.process(SlideUnit.single(ref)))
    from deid.wsi.job import tile_tasks

    redact = _RedactTiles(root)
    redact.setup()
    records: list[TileRecord] = []
    for task in tile_tasks(job):
        records.extend(redact.process(task))
    redact.teardown()
    all_records = list(records)
    current = records
    for level in range(1, len(job.levels)):
        parents = _BuildParents(root, level)
        parents.setup()
        by_parent: dict[tuple[int, int], list[TileRecord]] = {}
        for record in current:
            by_parent.setdefault((record.col // 2, record.row // 2), []).append(record)
        current = [
            t
            for (c, r), children in by_parent.items()
            for t in parents.process(((job.slide_id, c, r), children), {job.slide_id: job.context})
        ]
        all_records += current
    writer = _WriteSlide(settings, root)
    writer.setup()
    return list(writer.process((job, all_records)))


def test_a_leaking_output_is_quarantined(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer that kept a description field: the output goes to quarantine/, the slide fails 'leak'."""
    from deid.errors import LeakDetectedError
    from deid.wsi import tiff_writer

    real = tiff_writer.aperio_level0_description
    monkeypatch.setattr(
        tiff_writer,
        "aperio_level0_description",
        lambda *a: real(*a) + f"|Filename = {wsi_factory.PHI_FILENAME}",
    )
    src = tmp_path / "in" / "slide-0001.svs"
    src.parent.mkdir()
    wsi_factory.write_aperio_svs(src, 512, 512, 256, text_corner=None, label=False, macro=False)
    out = tmp_path / "out"
    settings = RunSettings(
        output=str(out), key_token=KEY.to_token(), wsi=WsiSettings(), input_root=str(tmp_path / "in")
    )
    with pytest.raises(LeakDetectedError) as caught:
        _write_slide_dofns(src, settings, str(tmp_path / "scr"))
    assert caught.value.error_kind == "leak"
    message = str(caught.value)
    assert "ImageDescription" in message and "quarantined" in message
    for phi in wsi_factory.PHI_STRINGS:
        assert phi not in message
    assert not (out / "wsi").exists() or not list((out / "wsi").rglob("*"))
    quarantined = list((out / "quarantine").rglob("*"))
    assert [p.relative_to(out).as_posix() for p in quarantined if p.is_file()] == [f"quarantine/{'ef' * 32}/0.svs"]
    assert not [p for p in out.rglob("*") if p.is_file() and ".tmp" in p.relative_to(out).parts]
    assert not list((tmp_path / "scr").rglob("*.jpg")), "scratch not cleaned"


def test_a_path_component_in_the_output_is_a_leak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Values below --input (folder and file names) are searched too, here in a kept description."""
    from deid.errors import LeakDetectedError
    from deid.wsi import tiff_writer

    real = tiff_writer.aperio_level0_description
    monkeypatch.setattr(tiff_writer, "aperio_level0_description", lambda *a: real(*a) + "|Case = Ward7Smith")
    src = tmp_path / "in" / "Ward7Smith" / "a.svs"
    src.parent.mkdir(parents=True)
    wsi_factory.write_aperio_svs(src, 512, 256, 256, text_corner=None, label=False, macro=False)
    settings = RunSettings(output=str(tmp_path / "out"), key_token=KEY.to_token(), input_root=str(tmp_path / "in"))
    with pytest.raises(LeakDetectedError, match="path"):
        _write_slide_dofns(src, settings, str(tmp_path / "scr"))


def test_a_normal_slide_passes_the_leak_check(tmp_path: Path) -> None:
    src = tmp_path / "in" / wsi_factory.PHI_FILENAME / f"{wsi_factory.PHI_FILENAME}.svs"
    src.parent.mkdir(parents=True)
    wsi_factory.write_aperio_svs(src, 512, 512, 256, text_corner=None, label=True, macro=True)
    out = tmp_path / "out"
    settings = RunSettings(
        output=str(out), key_token=KEY.to_token(), wsi=WsiSettings(label="blank"), input_root=str(tmp_path / "in")
    )
    (audit,) = _write_slide_dofns(src, settings, str(tmp_path / "scr"))  # no QA entry without --qa_report
    assert (out / audit.outputs[0]).exists()
    assert not (out / "quarantine").exists()


def test_qa_entry_with_decodable_thumbnails(tmp_path: Path) -> None:
    import cv2
    from apache_beam.pvalue import TaggedOutput

    from deid.qa.report import BEFORE_MAX_SIDE, QaEntry
    from transforms.qa import QA_TAG

    src = tmp_path / "in" / "a.svs"
    src.parent.mkdir()
    wsi_factory.write_aperio_svs(src, 768, 512, 256, text_corner=(256, 256))
    settings = RunSettings(
        output=str(tmp_path / "out"),
        key_token=KEY.to_token(),
        wsi=WsiSettings(label="blank"),
        redaction=RedactionSettings(text="detect"),
        qa_report=True,
    )
    audit, tagged = _write_slide_dofns(src, settings, str(tmp_path / "scr"))
    assert isinstance(audit, AuditRecord)
    assert isinstance(tagged, TaggedOutput) and tagged.tag == QA_TAG
    entry = tagged.value
    assert isinstance(entry, QaEntry)
    assert entry.kind == "wsi" and entry.input_sha256 == audit.input_sha256
    assert (entry.label, entry.macro) == ("blanked", "blanked")
    assert entry.boxes == audit.actions["boxes_redacted"] >= 1
    assert entry.tiles_passthrough == audit.actions["tiles_passthrough"]
    assert entry.tiles_reencoded == audit.actions["tiles_reencoded"]
    assert {"wsi prepare", "wsi tiles", "wsi pyramid", "wsi write", "wsi leak check"} <= set(entry.stage_seconds)
    assert entry.before_png is not None and entry.after_png is not None
    before = cv2.imdecode(np.frombuffer(entry.before_png, np.uint8), cv2.IMREAD_COLOR)
    after = cv2.imdecode(np.frombuffer(entry.after_png, np.uint8), cv2.IMREAD_COLOR)
    assert before is not None and after is not None
    assert max(before.shape[:2]) <= BEFORE_MAX_SIDE
    assert after.shape[1] > after.shape[0] > 0  # the slide's aspect
    red = (after[..., 2] > 200) & (after[..., 1] < 60) & (after[..., 0] < 60)
    assert red.any(), "the redaction boxes are drawn on the after thumbnail"
    assert "_png" not in repr(entry)  # thumbnails stay out of element reprs


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


# -- bands of tiles ----------------------------------------------------------------------------------------


def test_bands_cover_the_grid_and_decode_each_tile_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deid.wsi import source
    from deid.wsi.job import band_tasks, plan_job
    from transforms.wsi import _RedactTiles

    src = tmp_path / "a.svs"
    wsi_factory.write_aperio_svs(src, 2560, 1536, 256, text_corner=(512, 256), label=False, macro=False)
    ref = InputRef(str(src), src.stat().st_size, "ab" * 32, "wsi", "tiff")
    reader = SlideReader(str(src))
    job = plan_job(ref, "P", "P", (str(src),), reader.info, WsiSettings(), RedactionConfig(text_mode="detect"))
    reader.close()
    bands = list(band_tasks(job, rows=4, cols=3))
    tiles = [(t.col, t.row) for band in bands for t in band.tasks()]
    level0 = job.levels[0]
    assert sorted(tiles) == sorted((c, r) for r in range(level0.rows) for c in range(level0.cols))
    assert len(tiles) == len(set(tiles)) == 60
    decoded: list[tuple[int, int]] = []
    real = source.SlideReader.decoded_tile

    def counting(self: SlideReader, raw: object, col: int, row: int) -> np.ndarray:
        if (raw.page, col, row) not in self._tile_cache:  # type: ignore[attr-defined]
            decoded.append((col, row))
        return real(self, raw, col, row)  # type: ignore[arg-type]

    monkeypatch.setattr(source.SlideReader, "decoded_tile", counting)
    redact = _RedactTiles(str(tmp_path / "scr"))
    redact.setup()
    (band,) = [b for b in bands if (b.col0, b.row0) == (3, 0)]  # rows 0..3, columns 3..5
    records = redact.process(band)
    redact.teardown()
    assert [(r.col, r.row) for r in records] == [(t.col, t.row) for t in band.tasks()]
    assert not any(r.failed for r in records)
    ring = {
        (c, r)
        for r in range(max(0, band.row0 - 1), min(level0.rows, band.row0 + band.rows + 1))
        for c in range(max(0, band.col0 - 1), min(level0.cols, band.col0 + band.cols + 1))
    }
    assert len(ring) == 25
    assert len(decoded) == len(set(decoded)) == len(ring), "each tile of the band and its ring decoded once"


def test_clearly_background_is_conservative() -> None:
    from deid.wsi.tiles import clearly_background

    glass = np.full((320, 320, 3), 242, np.uint8)
    glass[::7, ::5] = 230  # JPEG-like noise
    assert clearly_background(glass)
    faint = glass.copy()
    wsi_factory.draw_text(faint, 10, 100, "MRN 1", scale=1.0)
    assert not clearly_background(faint)


def test_build_parents_makes_a_block_of_levels_like_one_level_at_a_time(tmp_path: Path) -> None:
    """Three levels from one group of 64 level-0 tiles: the same records and the same tile bytes."""
    from deid.wsi.job import tile_tasks
    from transforms.wsi import _BuildParents, _PrepareSlide, _RedactTiles

    src = tmp_path / "a.svs"
    wsi_factory.write_aperio_svs(
        src, 2048, 2048, 256, text_corner=(700, 300), downsamples=(1,), label=False, macro=False
    )
    ref = InputRef(str(src), src.stat().st_size, "ab" * 32, "wsi", "tiff")
    settings = RunSettings(
        output=str(tmp_path / "out"), key_token=KEY.to_token(), redaction=RedactionSettings(text="detect")
    )

    def level0(root: str) -> tuple[Any, list[TileRecord]]:
        prepare = _PrepareSlide(settings, root)
        prepare.setup()
        (job,) = list(prepare.process(SlideUnit.single(ref)))
        redact = _RedactTiles(root)
        redact.setup()
        records = [r for task in tile_tasks(job) for r in redact.process(task)]
        redact.teardown()
        return job, records

    one_root, block_root = str(tmp_path / "one"), str(tmp_path / "block")
    job, current = level0(one_root)
    assert len(job.levels) == 4 and any(r.dirty for r in current)
    one_by_one: list[TileRecord] = []
    for level in (1, 2, 3):
        parents = _BuildParents(one_root, level)
        parents.setup()
        groups: dict[tuple[int, int], list[TileRecord]] = {}
        for record in current:
            groups.setdefault((record.col // 2, record.row // 2), []).append(record)
        contexts = {job.slide_id: job.context}
        current = [t for (c, r), g in groups.items() for t in parents.process(((job.slide_id, c, r), g), contexts)]
        one_by_one += current

    block_job, block_level0 = level0(block_root)
    block = _BuildParents(block_root, 1, levels=3)
    block.setup()
    built = list(block.process(((block_job.slide_id, 0, 0), block_level0), {block_job.slide_id: block_job.context}))

    def comparable(records: list[TileRecord]) -> list[tuple[int, int, int, bool, str]]:
        return sorted((r.level, r.col, r.row, r.dirty, r.origin) for r in records)

    assert [r.level for r in built].count(1) == 16 and [r.level for r in built].count(3) == 1
    assert comparable(built) == comparable(one_by_one)
    one_files = {p.relative_to(one_root): p.read_bytes() for p in Path(one_root).rglob("*") if p.is_file()}
    block_files = {p.relative_to(block_root): p.read_bytes() for p in Path(block_root).rglob("*") if p.is_file()}
    assert one_files and one_files == block_files
