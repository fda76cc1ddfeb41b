"""Whole-slide images: fan a slide out into bands of tiles, redact them in parallel, rebuild the pyramid.

Stages (all elements are small: coordinates, references, or one compressed tile):

1. DICOM-WSI files are grouped into slides by a keyed hash of their SeriesInstanceUID.
2. `_PrepareSlide` first probes the slide in a spawned process (`deid.wsi.probe`), so a native
   decoder crash dead-letters the slide instead of killing the worker; then it opens the slide,
   checks limits, scrubs metadata and handles label and macro. It emits a `SlideJob`.
3. The job fans out into `TileBand`s (squares of 2**k level-0 tiles, about 4096 pixels a side),
   reshuffled over workers. `_RedactTiles` redacts each tile of a band on its overlapped window
   (each stored tile decoded once, by a thread pool) and builds the band's reduced levels up to its
   one top tile in memory (`deid.wsi.pyramid.build_band`). It writes the band's re-encoded tiles to
   ONE scratch batch and emits a `BlockResult` (the batch's index) and a `TopTile` (the top tile's
   half-size pixels, zstd-compressed) for the next stage.
4. The levels above the bands are built PYRAMID_LEVELS_PER_STAGE at a time: top tiles are grouped by
   their ancestor that many levels up, and `_BuildParents` builds the levels in between the same way
   (a fixed number of stages, since the level count is known only at run time; slides whose bands
   reach the top just stop). Each stage costs every run a bundle round trip, even with no slides.
5. `_WriteSlide` joins a job with all its blocks, streams the TIFF and/or DICOM output to a local
   file, re-harvests the input's identifying values (tags and path only) and searches every staged
   output for them (`deid.wsi.leakcheck`), then publishes each output (`transforms.files.publish`:
   staged under OUTPUT/.tmp/, renamed into place) and emits the audit record. On a hit the outputs
   go to OUTPUT/quarantine/ instead and the slide becomes a dead letter with error_kind "leak".

Scratch storage, local copies of slides for OpenSlide, the per-worker reader cache and publishing
are in `transforms.files`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import apache_beam as beam
import numpy as np
import pydicom
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput

from deid.classify import InputRef
from deid.errors import InputTooLargeError, InvalidInputError, LeakDetectedError
from deid.qa.report import QaEntry
from deid.records import AuditRecord
from deid.redaction.engine import RedactionConfig
from deid.settings import RunSettings
from deid.verify.scan import quarantine_relpath, summarize
from deid.wsi.blocks import BlockResult, TopTile, copies_from_input, error_parts, failed_block
from deid.wsi.formats import require_volume
from deid.wsi.job import (
    MAX_PYRAMID_LEVELS,
    SlideJob,
    SlideUnit,
    band_tasks,
    keep_associated,
    plan_job,
)
from deid.wsi.leakcheck import harvest_slide, scan_outputs
from deid.wsi.probe import probe_isolated
from deid.wsi.pyramid import build_band, build_block, fetcher
from deid.wsi.qa import INPUT_THUMBNAIL_SIDE, slide_entry
from deid.wsi.source import SlideReader, check_limits
from deid.wsi.tiles import TileBand, TileContext
from deid.wsi.writer import WrittenSlide, write_outputs
from transforms.common import (
    METRICS_NAMESPACE,
    DeidOutputs,
    ToDeadLetters,
    audit_ok,
    count_actions,
    load_run_key,
)
from transforms.files import open_input, output_path, publish
from transforms.progress import level0_tiles, slide_tiles, tap
from transforms.qa import QA_TAG
from transforms.review import held_audit, hold_slide
from transforms.slide_files import SlideReaders, localized, make_scratch, scratch_root

# Pyramid levels built per stage above the bands (see the module docstring): a band builds at least
# one level, so the other 14 of at most 16 take 5 stages; a group is the 8x8 top tiles below one tile
# three levels up.
PYRAMID_LEVELS_PER_STAGE = 3
UPPER_STAGES = -(-(MAX_PYRAMID_LEVELS - 2) // PYRAMID_LEVELS_PER_STAGE)
TOPS_TAG = "tops"


class DeidentifyWsi(beam.PTransform):
    """PCollection[InputRef] (kind 'wsi') -> DeidOutputs(audit, dead_letters, linkage, qa).

    `qa` (PCollection[QaEntry], one per written slide) with --qa_report, else None.

    Outputs: OUTPUT/wsi/<pseudonym>.svs (Aperio layout) or .tiff (generic) and, with
    --wsi_output_format dicom|both, OUTPUT/wsi/<pseudonym>/level-<k>.dcm. The pseudonym is
    key.pseudonym("wsi", input sha256); for DICOM-WSI the sha256 of the unit's first file by path, for
    MIRAX the digest of all the unit's files (`InputRef.group_key`).
    """

    def __init__(self, settings: RunSettings) -> None:
        super().__init__()
        self._settings = settings
        # Scratch names of this pipeline: a fresh directory per construction.
        self._run_id = uuid.uuid4().hex[:16]

    def expand(self, refs: beam.PCollection) -> DeidOutputs:
        settings = self._settings
        scratch = scratch_root(settings.scratch_location, self._run_id)
        dicom, single = refs | "SplitDicomWsi" >> beam.Partition(_by_subtype, 2)  # type: ignore[arg-type]
        keyed_good, keyed_bad = dicom | "KeyBySeries" >> beam.ParDo(_KeyDicomSeries(settings)).with_exception_handling()
        grouped_units = (
            keyed_good
            | "GroupSeries" >> beam.GroupByKey()
            | "SeriesToUnit" >> beam.MapTuple(lambda _key, files: SlideUnit.group(files))
        )
        single_units = single | "FileToUnit" >> beam.Map(SlideUnit.single)
        units = (grouped_units, single_units) | "Units" >> beam.Flatten()

        prepared_good, prepared_bad = (
            units | "PrepareSlide" >> beam.ParDo(_PrepareSlide(settings, scratch)).with_exception_handling()
        )
        jobs = prepared_good
        contexts = beam.pvalue.AsDict(jobs | "Contexts" >> beam.Map(lambda job: (job.slide_id, job.context)))

        # Bands of level-0 tiles with the levels inside them, in memory; scratch only at band edges.
        bands = jobs | "TileBands" >> beam.FlatMap(band_tasks) | "SpreadBands" >> beam.Reshuffle()
        level0 = bands | "RedactTiles" >> beam.ParDo(_RedactTiles(scratch)).with_outputs(TOPS_TAG, main="blocks")
        tap(jobs, "ProgressSlideTiles", settings.progress_dir, slide_tiles)
        tap(level0["blocks"], "ProgressTilesDone", settings.progress_dir, level0_tiles)
        blocks = [level0["blocks"]]
        tops = level0[TOPS_TAG]
        for stage in range(1, UPPER_STAGES + 1):
            built = (
                tops
                | f"ToBlock{stage}" >> beam.Map(_ancestor_key, contexts)
                | f"GroupBlock{stage}" >> beam.GroupByKey()
                | f"BuildLevels{stage}"
                >> beam.ParDo(_BuildParents(scratch), contexts).with_outputs(TOPS_TAG, main="blocks")
            )
            blocks.append(built["blocks"])
            tops = built[TOPS_TAG]
        records = (
            blocks | "AllBlocks" >> beam.Flatten() | "BlocksBySlide" >> beam.Map(lambda block: (block.slide_id, block))
        )
        finished = (
            {"job": jobs | "JobsBySlide" >> beam.Map(lambda job: (job.slide_id, job)), "tiles": records}
            | "JoinSlide" >> beam.CoGroupByKey()
            | "SlideAndTiles" >> beam.FlatMap(_job_with_records)
        )
        written = finished | "WriteSlide" >> beam.ParDo(_WriteSlide(settings, scratch)).with_outputs(
            QA_TAG, main="audit"
        ).with_exception_handling(main_tag="audit", dead_letter_tag="failed")
        written_good, written_bad = written["audit"], written["failed"]
        dead_letters = (
            (keyed_bad, prepared_bad, written_bad)
            | "AllFailures" >> beam.Flatten()
            | "ToDeadLetters" >> ToDeadLetters()
        )
        linkage = refs.pipeline | "NoWsiLinkage" >> beam.Create([])
        qa = written[QA_TAG] if settings.qa_report else None
        return DeidOutputs(audit=written_good, dead_letters=dead_letters, linkage=linkage, qa=qa)


# -- helpers shared by the DoFns --------------------------------------------------------------------


def _by_subtype(ref: InputRef, _partitions: int) -> int:
    return 0 if ref.subtype == "dicom-wsi" else 1


def upper_block(top: TopTile, level_count: int) -> tuple[int, int, int]:
    """(top level, col, row) of the block a stage builds above `top`: PYRAMID_LEVELS_PER_STAGE levels
    up, or to the pyramid's top."""
    levels = min(PYRAMID_LEVELS_PER_STAGE, level_count - 1 - top.level)
    return top.level + levels, top.col >> levels, top.row >> levels


def _ancestor_key(
    top: TopTile, contexts: dict[str, TileContext]
) -> tuple[tuple[str, int, int, int, int], TopTile]:
    """Key a top tile by the block above it (a slide without a context failed: any key will do)."""
    context = contexts.get(top.slide_id)
    level, col, row = upper_block(top, context.level_count) if context is not None else (top.level, 0, 0)
    return (top.slide_id, top.level, level, col, row), top


def _job_with_records(item: tuple[str, dict[str, Iterable[Any]]]) -> Iterator[tuple[SlideJob, list[BlockResult]]]:
    _slide_id, grouped = item
    jobs = list(grouped["job"])
    if jobs:
        yield jobs[0], list(grouped["tiles"])


# -- DoFns --------------------------------------------------------------------------------------------


class _KeyDicomSeries(beam.DoFn):
    """InputRef (subtype dicom-wsi) -> (keyed series hash, InputRef)."""

    def __init__(self, settings: RunSettings) -> None:
        self._settings = settings

    def setup(self) -> None:
        self._key = load_run_key(self._settings)

    def process(self, ref: InputRef) -> list[tuple[str, InputRef]]:
        if ref.group_key:
            return [(ref.group_key, ref)]
        with open_input(ref.path) as handle:
            ds = pydicom.dcmread(handle, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        if not uid:
            raise InvalidInputError("a DICOM whole-slide file has no SeriesInstanceUID to group it by")
        return [(self._key.pseudonym("wsi-series", uid, 24), ref)]


# The series rule, also used by the event mode to wait for a series' instances (transforms/events.py).
KeyDicomSeries = _KeyDicomSeries


class _PrepareSlide(beam.DoFn):
    """SlideUnit -> SlideJob. Opening and probing exercise native decoders: a spawned probe goes first.

    Not Beam's `use_subprocess`: that forks the worker, which hosts gRPC threads, and under the
    multi-processing DirectRunner (and any gRPC SDK harness) the forked child dies.
    """

    def __init__(self, settings: RunSettings, scratch_root: str) -> None:
        self._settings = settings
        self._scratch_root = scratch_root

    def setup(self) -> None:
        self._key = load_run_key(self._settings)
        self._scratch = make_scratch(self._scratch_root)

    def process(self, unit: SlideUnit) -> Iterator[SlideJob]:
        settings = self._settings
        ref = unit.ref
        if ref.size > settings.limits.max_file_bytes:
            check_limits_size(ref.size, settings)
        if settings.redaction.text == "ocr" or settings.wsi.label == "redact":
            RedactionConfig(text_mode=settings.redaction.text).check_tools()
        start = time.perf_counter()
        reader: SlideReader | None = None
        # A MIRAX unit is named by the digest of all its files (its .mrxs file alone may be generic).
        pseudonym = self._key.pseudonym("wsi", ref.group_key if ref.subtype == "mrxs" and ref.group_key else ref.sha256)
        slide_id = f"{pseudonym}-{self._key.pseudonym('wsi-scratch', ref.path, 8)}"
        if ref.subtype == "dicom-wsi":
            require_volume(_image_types(unit.paths))
        with localized(unit.paths, ref.subtype) as path:
            try:
                probe_isolated(path, settings.wsi.tile_size)
                reader = SlideReader(path)
                check_limits(reader.info, ref.size, settings.limits)
                job = plan_job(
                    ref,
                    pseudonym,
                    slide_id,
                    unit.paths,
                    reader.info,
                    settings.wsi,
                    RedactionConfig.for_input(settings.redaction, ref.sha256),
                )
                job = keep_associated(job, reader, settings.wsi, settings.redaction, self._scratch)
                job = dataclasses.replace(job, prepare_seconds=time.perf_counter() - start)
            except BaseException:
                self._scratch.delete_prefix(slide_id)
                raise
            finally:
                if reader is not None:
                    reader.close()
        Metrics.counter(METRICS_NAMESPACE, "wsi_slides_prepared").inc()
        yield job


def _image_types(paths: Iterable[str]) -> Iterator[list[str]]:
    """ImageType (0008,0008) of each instance of a DICOM-WSI unit, read from its header only."""
    for path in paths:
        with open_input(path) as handle:
            ds = pydicom.dcmread(handle, stop_before_pixels=True, specific_tags=["ImageType"])
        value = ds.get("ImageType")
        yield [str(v) for v in value] if value is not None else []


def check_limits_size(size: int, settings: RunSettings) -> None:
    raise InputTooLargeError(f"the slide is {size} bytes, more than --max_file_bytes {settings.limits.max_file_bytes}")


def pool_threads() -> int:
    """Threads a tile DoFn runs its pixel work on: the cores this process may use (JPEG coding,
    resizing and OpenCV's morphology release the GIL)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


class _RedactTiles(beam.DoFn):
    """TileBand -> BlockResult, and a TopTile (tag "tops") unless the band holds the pyramid's top.
    Failures become failed blocks (the slide fails in the writer)."""

    def __init__(self, scratch_root: str) -> None:
        self._scratch_root = scratch_root

    def setup(self) -> None:
        self._scratch = make_scratch(self._scratch_root)
        self._readers = SlideReaders(SlideReader)
        self._pool = ThreadPoolExecutor(pool_threads(), thread_name_prefix="wsi-band")
        self._tiles = Metrics.counter(METRICS_NAMESPACE, "wsi_tiles_level0")

    def process(self, band: TileBand) -> Iterator[BlockResult | TaggedOutput]:
        ctx = band.context
        try:
            reader = self._readers.get(ctx.slide_id, ctx.source_paths, ctx.subtype)
        except Exception as exc:  # noqa: BLE001 - the slide fails in the writer, not the run
            kind, message = error_parts(exc, "opening the slide for a band of tiles")
            col, row = band.col0 >> band.levels, band.row0 >> band.levels
            block, top = failed_block(
                ctx.slide_id, 0, band.levels, col, row, kind, message, band.levels < ctx.level_count - 1
            )
        else:
            block, top = build_band(reader, band, self._scratch, self._pool.map)
            if block.failed:
                # The reader latches after an error: drop it.
                self._readers.drop(ctx.slide_id)
        self._tiles.inc(band.cols * band.rows)
        yield block
        if top is not None:
            yield TaggedOutput(TOPS_TAG, top)

    def teardown(self) -> None:
        self._readers.close_all()
        self._pool.shutdown()


class _BuildParents(beam.DoFn):
    """((slide_id, level, top level, col, row), [TopTile of level]) -> the BlockResult of the levels
    level+1 .. top level under tile (col, row) of the top level, and its TopTile (tag "tops").

    Children arrive as compressed half-size tiles; a block holds at most 8x8 of them. A child copied
    from the input whose pixels are needed (a dirty sibling) is decoded from the input here.
    """

    def __init__(self, scratch_root: str) -> None:
        self._scratch_root = scratch_root

    def setup(self) -> None:
        self._scratch = make_scratch(self._scratch_root)
        self._readers = SlideReaders(SlideReader)
        self._pool = ThreadPoolExecutor(pool_threads(), thread_name_prefix="wsi-levels")

    def process(
        self, item: tuple[tuple[str, int, int, int, int], Iterable[TopTile]], contexts: dict[str, TileContext]
    ) -> Iterator[BlockResult | TaggedOutput]:
        (slide_id, level, top, col, row), children = item
        context = contexts.get(slide_id)
        # Without a context the slide's job failed and nothing will be written for it.
        if context is None:
            return
        ctx = context

        def reader() -> SlideReader:
            return self._readers.get(ctx.slide_id, ctx.source_paths, ctx.subtype)

        fetch = fetcher(reader, ctx, self._pool.map)
        block, above = build_block(ctx, level, top, col, row, children, self._scratch, fetch, self._pool.map)
        if block.failed:
            self._readers.drop(slide_id)
        yield block
        if above is not None:
            yield TaggedOutput(TOPS_TAG, above)

    def teardown(self) -> None:
        self._readers.close_all()
        self._pool.shutdown()


class _WriteSlide(beam.DoFn):
    """(SlideJob, [BlockResult]) -> AuditRecord, after writing the outputs under OUTPUT atomically."""

    def __init__(self, settings: RunSettings, scratch_root: str) -> None:
        self._settings = settings
        self._scratch_root = scratch_root

    def setup(self) -> None:
        self._key = load_run_key(self._settings)
        self._scratch = make_scratch(self._scratch_root)

    def process(self, item: tuple[SlideJob, list[BlockResult]]) -> Iterator[AuditRecord | TaggedOutput]:
        job, blocks = item
        settings = self._settings
        reader: SlideReader | None = None
        sha = job.ref.sha256
        entry: QaEntry | None = None
        with contextlib.ExitStack() as cleanup:
            # Run on exit, last first: close the reader, remove its local copy, the local outputs, scratch.
            cleanup.callback(self._scratch.delete_prefix, job.slide_id)
            local_out = cleanup.enter_context(
                tempfile.TemporaryDirectory(prefix="deid-wsi-out-", ignore_cleanup_errors=True)
            )
            start = time.perf_counter()
            if copies_from_input(blocks) or settings.qa_report:
                path = cleanup.enter_context(localized(job.context.source_paths, job.context.subtype))
                reader = SlideReader(path)
                cleanup.callback(reader.close)
            slide = write_outputs(
                job,
                blocks,
                reader,
                self._scratch,
                settings.wsi,
                local_out,
                lambda purpose: self._key.uid(f"wsi:{sha}:{purpose}"),
            )
            outputs, actions = slide.outputs, slide.actions
            written = time.perf_counter()
            self._check_leaks(job, local_out, outputs)
            checked = time.perf_counter()
            # Held for review (transforms/review.py) instead of published when the rule says so.
            uncertain = [c for block in blocks for c in block.uncertain]
            size = (job.metadata.width, job.metadata.height)
            held = hold_slide(settings, self._key, job.ref, uncertain, local_out, outputs, actions, slide.top, size)
            if held is None:
                publish(local_out, outputs, settings.output)
            if settings.qa_report:
                seconds = {"wsi write": written - start, "wsi leak check": checked - written}
                entry = self._qa_entry(job, slide, reader, seconds)
        count_actions(actions)
        if held is not None:
            yield held_audit(held, job.ref.kind)
            if entry is not None:
                yield TaggedOutput(QA_TAG, entry)
            return
        # An input that states no microns per pixel gets outputs that state no physical size either.
        unknown_size = {"pixel_spacing": "unknown"} if job.metadata.mpp_x is None else {}
        yield audit_ok(
            job.ref,
            outputs,
            actions,
            layout="aperio" if job.aperio else "generic-tiff",
            tile_size=job.context.tile,
            levels=len(job.levels),
            width=job.metadata.width,
            height=job.metadata.height,
            **unknown_size,
        )
        if entry is not None:
            yield TaggedOutput(QA_TAG, entry)

    def _qa_entry(
        self, job: SlideJob, slide: WrittenSlide, reader: SlideReader | None, seconds: dict[str, float]
    ) -> QaEntry:
        """Thumbnails in memory only; a thumbnail that cannot be made is left out, the slide is fine."""
        before = None
        with contextlib.suppress(Exception):
            if reader is not None:
                before = reader.thumbnail(INPUT_THUMBNAIL_SIDE)
        return slide_entry(job, slide, before, np.asarray(slide.top), seconds)

    def _check_leaks(self, job: SlideJob, local_out: str, outputs: list[str]) -> None:
        """Search the staged outputs for the input's identifying values (re-harvested here, so they
        never cross a stage); on a hit publish them under quarantine/ and fail the slide."""
        settings = self._settings
        values = harvest_slide(
            job.context.source_paths, job.context.subtype, settings.input_root, settings.profile, open_input
        )
        hits = scan_outputs(local_out, outputs, values)
        del values
        if not hits:
            return
        moved = [quarantine_relpath(job.ref.sha256, relative, index) for index, relative in enumerate(outputs)]
        publish(local_out, outputs, settings.output, moved)
        # An earlier run with the same key may have published these names: never leave them in wsi/.
        for relative in outputs:
            final = output_path(settings.output, relative)
            with contextlib.suppress(Exception):
                if FileSystems.exists(final):
                    FileSystems.delete([final])
        Metrics.counter(METRICS_NAMESPACE, "wsi_outputs_quarantined").inc(len(moved))
        raise LeakDetectedError(summarize(hits))
