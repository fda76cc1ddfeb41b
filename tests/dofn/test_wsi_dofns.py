"""The WSI DoFns called as Beam calls them (setup(), then process()): one by one, the leak check in the
write DoFn, bands of tiles and blocks of pyramid levels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deid.classify import InputRef
from deid.keys import DeidKey
from deid.records import AuditRecord
from deid.redaction.engine import RedactionConfig
from deid.settings import RedactionSettings, RunSettings, WsiSettings
from deid.wsi.job import SlideUnit
from deid.wsi.source import SlideReader
from deid.wsi.tiles import TileRecord
from tests.support import wsi_factory

openslide = pytest.importorskip("openslide")
KEY = DeidKey(b"u" * 32)


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
    # levels 0 and 1 down to one tile, and level 2 because the input has a 4x level
    assert job.context.tile == 256 and len(job.levels) == 3
    redact = _RedactTiles(root)
    redact.setup()
    from deid.wsi.job import tile_tasks

    records: list[TileRecord] = []
    for task in tile_tasks(job):
        records.extend(redact.process(task))
    redact.teardown()
    assert all(r.origin == "source" and not r.failed for r in records)
    parents = _BuildParents(root, 1, 2)
    parents.setup()
    upper = list(parents.process(((job.slide_id, 0, 0), records), {job.slide_id: job.context}))
    assert [(r.level, r.origin) for r in upper] == [(1, "scratch"), (2, "source")]
    writer = _WriteSlide(settings, root)
    writer.setup()
    (audit,) = list(writer.process((job, [*records, *upper])))
    assert isinstance(audit, AuditRecord)
    assert audit.outputs == (f"wsi/{KEY.pseudonym('wsi', ref.sha256)}.svs",)
    assert (tmp_path / "out" / audit.outputs[0]).exists()
    assert audit.actions["tiles_passthrough"] == 5 and audit.actions["tiles_reencoded"] == 1


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
