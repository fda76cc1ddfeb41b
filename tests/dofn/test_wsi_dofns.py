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
from deid.wsi.blocks import BlockResult, TopTile
from deid.wsi.job import SlideJob, SlideUnit
from deid.wsi.source import SlideReader
from tests.support import wsi_factory

openslide = pytest.importorskip("openslide")
KEY = DeidKey(b"u" * 32)


def split(outputs: list[Any]) -> tuple[list[BlockResult], list[TopTile]]:
    """A tile DoFn's outputs: its BlockResults, and the TopTiles it tagged for the next stage."""
    from apache_beam.pvalue import TaggedOutput

    blocks = [o for o in outputs if isinstance(o, BlockResult)]
    tops = [o.value for o in outputs if isinstance(o, TaggedOutput)]
    assert all(isinstance(t, TopTile) for t in tops) and len(blocks) + len(tops) == len(outputs)
    return blocks, tops


def pyramid_blocks(job: SlideJob, root: str, band_levels: int | None = None) -> list[BlockResult]:
    """Bands, then the upper stages until no top tile is left, through the DoFns as Beam runs them."""
    from deid.wsi.job import band_tasks
    from transforms.wsi import UPPER_STAGES, _ancestor_key, _BuildParents, _RedactTiles

    contexts = {job.slide_id: job.context}
    redact = _RedactTiles(root)
    redact.setup()
    blocks, tops = split([o for band in band_tasks(job, band_levels) for o in redact.process(band)])
    redact.teardown()
    for _ in range(UPPER_STAGES):
        groups: dict[Any, list[TopTile]] = {}
        for top in tops:
            key, value = _ancestor_key(top, contexts)
            groups.setdefault(key, []).append(value)
        parents = _BuildParents(root)
        parents.setup()
        built, tops = split([o for item in groups.items() for o in parents.process(item, contexts)])
        parents.teardown()
        blocks += built
    assert not tops
    return blocks


# -- DoFns via setup()/process() --------------------------------------------------------------------------


def test_dofns_one_by_one(tmp_path: Path) -> None:
    from transforms.wsi import _PrepareSlide, _RedactTiles, _WriteSlide

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
    from deid.wsi.job import band_tasks

    redact = _RedactTiles(root)
    redact.setup()
    # One band of 2 x 2 tiles builds the whole pyramid: no top tile for a next stage.
    (band,) = list(band_tasks(job))
    (block,) = list(redact.process(band))
    redact.teardown()
    assert isinstance(block, BlockResult) and not block.failed and (block.level, block.top) == (0, 2)
    entries = [(int(e["level"]), int(e["col"]), int(e["row"]), int(e["origin"])) for e in block.entries()]
    # level 0 copied; level 1 has no input copy (the input has 1x and 4x): re-encoded; level 2 copied
    assert sorted(entries) == [(0, 0, 0, 1), (0, 0, 1, 1), (0, 1, 0, 1), (0, 1, 1, 1), (1, 0, 0, 0), (2, 0, 0, 1)]
    assert [p.name for p in (Path(root) / job.slide_id).rglob("*.bin")] == ["0_0.bin"]  # one batch
    writer = _WriteSlide(settings, root)
    writer.setup()
    (audit,) = list(writer.process((job, [block])))
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
    from transforms.wsi import _PrepareSlide, _WriteSlide

    ref = InputRef(str(src), src.stat().st_size, "ef" * 32, "wsi", "tiff")
    prepare = _PrepareSlide(settings, root)
    prepare.setup()
    (job,) = list(prepare.process(SlideUnit.single(ref)))
    # Bands of 1 level: the levels above go through the upper stages.
    blocks = pyramid_blocks(job, root, band_levels=1)
    writer = _WriteSlide(settings, root)
    writer.setup()
    return list(writer.process((job, blocks)))


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
    assert not [p for p in (tmp_path / "scr").rglob("*") if p.is_file()], "scratch not cleaned"


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
    bands = list(band_tasks(job, levels=2))  # 4 x 4 tiles, on the grid of level 2
    tiles = [(t.col, t.row) for band in bands for t in band.tasks()]
    level0 = job.levels[0]
    assert sorted(tiles) == sorted((c, r) for r in range(level0.rows) for c in range(level0.cols))
    assert len(tiles) == len(set(tiles)) == 60
    assert {(b.col0 % 4, b.row0 % 4, b.levels) for b in bands} == {(0, 0, 2)}
    decoded: list[bytes] = []
    real = source.decode_stored_tile

    def counting(raw: Any, data: bytes) -> np.ndarray:
        decoded.append(data)
        return real(raw, data)

    monkeypatch.setattr(source, "decode_stored_tile", counting)
    redact = _RedactTiles(str(tmp_path / "scr"))
    redact.setup()
    (band,) = [b for b in bands if (b.col0, b.row0) == (4, 0)]  # rows 0..3, columns 4..7
    blocks, tops = split(list(redact.process(band)))
    redact.teardown()
    (block,) = blocks
    assert not block.failed
    assert [(t.level, t.col, t.row) for t in tops] == [(2, 1, 0)]  # its top tile goes to the next stage
    level0_entries = sorted((int(e["col"]), int(e["row"])) for e in block.entries() if e["level"] == 0)
    assert level0_entries == sorted((t.col, t.row) for t in band.tasks())
    assert sorted({int(e["level"]) for e in block.entries()}) == [0, 1, 2]  # the levels inside the band
    ring = {
        (c, r)
        for r in range(max(0, band.row0 - 1), min(level0.rows, band.row0 + band.rows + 1))
        for c in range(max(0, band.col0 - 1), min(level0.cols, band.col0 + band.cols + 1))
    }
    assert len(ring) == 30
    assert len(decoded) == len(set(decoded)) == len(ring), "each tile of the band and its ring decoded once"


def test_band_size_does_not_change_the_output(tmp_path: Path) -> None:
    """The same slide with bands of 1 level (the rest built by the upper stages, from compressed top
    tiles) and with bands of 3 levels: the same output bytes and audit."""
    from transforms.wsi import _PrepareSlide, _WriteSlide

    src = tmp_path / "a.svs"
    wsi_factory.write_aperio_svs(
        src, 2304, 2048, 256, text_corner=(1000, 480), downsamples=(1,), label=False, macro=False
    )
    ref = InputRef(str(src), src.stat().st_size, "ab" * 32, "wsi", "tiff")
    outputs = []
    for band_levels in (1, 3):
        out = tmp_path / f"out{band_levels}"
        settings = RunSettings(output=str(out), key_token=KEY.to_token(), redaction=RedactionSettings(text="detect"))
        root = str(tmp_path / f"scr{band_levels}")
        prepare = _PrepareSlide(settings, root)
        prepare.setup()
        (job,) = list(prepare.process(SlideUnit.single(ref)))
        assert len(job.levels) == 5
        blocks = pyramid_blocks(job, root, band_levels)
        assert {b.level for b in blocks} == ({0, 2} if band_levels == 1 else {0, 4})
        writer = _WriteSlide(settings, root)
        writer.setup()
        (audit,) = list(writer.process((job, blocks)))
        assert audit.actions["tiles_redacted"] >= 2 and audit.actions["levels_written"] == 5
        outputs.append((audit.actions, [(out / o).read_bytes() for o in audit.outputs]))
    assert outputs[0] == outputs[1]
