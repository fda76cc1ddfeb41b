"""Whole-slide images: fan a slide out into tiles, redact them in parallel, rebuild the pyramid.

Stages (all elements are small; pixels wait in scratch storage):

1. DICOM-WSI files are grouped into slides by a keyed hash of their SeriesInstanceUID.
2. `_PrepareSlide` first probes the slide in a spawned process (`deid.wsi.probe`), so a native
   decoder crash dead-letters the slide instead of killing the worker; then it opens the slide,
   checks limits, scrubs metadata and handles label and macro. It emits a `SlideJob`.
3. The job fans out into `TileBand`s (blocks of up to 16 rows x 8 columns of level-0 tiles), reshuffled over
   workers; `_RedactTiles` redacts each tile of a band on its overlapped window, read through a
   per-reader cache of decoded tiles (each tile decoded once), and emits a `TileRecord` per tile.
4. The further levels are built PYRAMID_LEVELS_PER_STAGE at a time: records are grouped by their
   ancestor that many levels up, and `_BuildParents` makes each parent from its 2x2 children, level
   after level inside the block (a fixed number of stages, since the level count is known only at
   run time; slides with fewer levels just stop). Fewer, larger groups than one stage per level: each
   stage costs every run a bundle round trip, even with no slides.
5. `_WriteSlide` joins a job with all its records, streams the TIFF and/or DICOM output to a local
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
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pydicom
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput

from deid.classify import InputRef
from deid.errors import InputTooLargeError, InvalidInputError, LeakDetectedError, SlideReadError
from deid.qa.report import QaEntry
from deid.records import AuditRecord
from deid.redaction.engine import RedactionConfig
from deid.settings import RunSettings
from deid.verify.scan import quarantine_relpath, summarize
from deid.wsi.formats import require_volume
from deid.wsi.job import (
    MAX_PYRAMID_LEVELS,
    SlideJob,
    SlideUnit,
    band_tasks,
    keep_associated,
    load_top,
    plan_job,
)
from deid.wsi.leakcheck import harvest_slide, scan_outputs
from deid.wsi.probe import probe_isolated
from deid.wsi.qa import INPUT_THUMBNAIL_SIDE, slide_entry
from deid.wsi.source import SlideReader, check_limits
from deid.wsi.tiles import (
    TileBand,
    TileContext,
    TileRecord,
    TileTask,
    build_parent,
    failure,
    redact_level0_tile,
)
from deid.wsi.writer import write_outputs
from transforms.common import (
    METRICS_NAMESPACE,
    DeidOutputs,
    ToDeadLetters,
    audit_ok,
    count_actions,
    load_run_key,
)
from transforms.files import (
    SlideReaders,
    localized,
    make_scratch,
    open_input,
    output_path,
    publish,
    scratch_root,
)
from transforms.qa import QA_TAG

# Pyramid levels built per stage (see the module docstring): 15 levels take 5 stages, and a block
# at level 0 is 8x8 tiles, small enough to keep a large slide's level 1 spread over many workers.
PYRAMID_LEVELS_PER_STAGE = 3


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

        # Bands of level-0 tiles: each overlapped window is read from a per-reader cache of decoded
        # tiles, so a band decodes each of its tiles (and of its one-tile ring) once.
        bands = jobs | "TileBands" >> beam.FlatMap(band_tasks) | "SpreadBands" >> beam.Reshuffle()
        level0 = bands | "RedactTiles" >> beam.ParDo(_RedactTiles(scratch))
        levels = [level0]
        current = level0
        for first in range(1, MAX_PYRAMID_LEVELS, PYRAMID_LEVELS_PER_STAGE):
            count = min(PYRAMID_LEVELS_PER_STAGE, MAX_PYRAMID_LEVELS - first)
            built = (
                current
                | f"ToBlock{first}" >> beam.FlatMap(_ancestor_key, count)
                | f"GroupBlock{first}" >> beam.GroupByKey()
                | f"BuildLevels{first}" >> beam.ParDo(_BuildParents(scratch, first, count), contexts)
            )
            levels.append(built)
            top = first + count - 1
            current = built | f"TopOfBlock{first}" >> beam.Filter(lambda record, top=top: record.level == top)
        records = (
            levels | "AllTiles" >> beam.Flatten() | "TilesBySlide" >> beam.Map(lambda record: (record.slide_id, record))
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


def _ancestor_key(record: TileRecord, levels: int) -> Iterator[tuple[tuple[str, int, int], TileRecord]]:
    """Key a tile by its ancestor `levels` levels up (its parent when levels is 1)."""
    if record.has_parent:
        yield (record.slide_id, record.col >> levels, record.row >> levels), record


def _job_with_records(item: tuple[str, dict[str, Iterable[Any]]]) -> Iterator[tuple[SlideJob, list[TileRecord]]]:
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


class _RedactTiles(beam.DoFn):
    """TileBand (or one TileTask) -> TileRecords (level 0). Pixels go to scratch; failures become
    failed records. A TileRecord input passes through unchanged."""

    def __init__(self, scratch_root: str) -> None:
        self._scratch_root = scratch_root

    def setup(self) -> None:
        self._scratch = make_scratch(self._scratch_root)
        self._readers = SlideReaders(SlideReader)
        self._configs: dict[str, RedactionConfig] = {}
        self._tiles = Metrics.counter(METRICS_NAMESPACE, "wsi_tiles_level0")

    def process(self, element: TileBand | TileTask | TileRecord) -> list[TileRecord]:
        if isinstance(element, TileRecord):
            return [element]
        tasks = element.tasks() if isinstance(element, TileBand) else [element]
        ctx = element.context
        try:
            reader = self._readers.get(ctx.slide_id, ctx.source_paths, ctx.subtype)
            config = self._configs.get(ctx.slide_id)
            if config is None and ctx.needs_engine:
                config = self._configs[ctx.slide_id] = ctx.redaction
        except Exception as exc:  # noqa: BLE001 - the slide fails in the writer, not the run
            return [failure(ctx, 0, task.col, task.row, exc, "opening the slide for a tile") for task in tasks]
        if isinstance(element, TileBand):
            reader.cache_tiles = max(reader.cache_tiles, element.cache_tiles())
        records = []
        for task in tasks:
            record = redact_level0_tile(reader, task, self._scratch, config)
            if record.failed:
                # The reader latches after an error: the band's other tiles fail the same way.
                self._readers.drop(ctx.slide_id)
                self._configs.pop(ctx.slide_id, None)
                records.append(record)
                records.extend(
                    failure(ctx, 0, t.col, t.row, SlideReadError("an earlier tile of the band failed"), "")
                    for t in tasks[len(records) :]
                )
                break
            records.append(record)
        self._tiles.inc(len(records))
        return records

    def teardown(self) -> None:
        self._readers.close_all()


class _BuildParents(beam.DoFn):
    """((slide_id, block col, block row), [TileRecord of level first-1]) -> TileRecords of levels
    first .. first+levels-1.

    A block holds the descendants (up to 4**levels tiles) of one tile `levels` levels up; parents are
    built level after level from their 2x2 children, each read back from scratch, so memory holds a
    few tiles whatever the block size.
    """

    def __init__(self, scratch_root: str, first: int, levels: int = 1) -> None:
        self._scratch_root = scratch_root
        self._first = first
        self._levels = levels

    def setup(self) -> None:
        self._scratch = make_scratch(self._scratch_root)

    def process(
        self, item: tuple[tuple[str, int, int], Iterable[TileRecord]], contexts: dict[str, TileContext]
    ) -> Iterator[TileRecord]:
        (slide_id, _col, _row), children = item
        context = contexts.get(slide_id)
        # Without a context the slide's job failed and nothing will be written for it.
        if context is None:
            return
        current = list(children)
        for level in range(self._first, self._first + self._levels):
            by_parent: dict[tuple[int, int], list[TileRecord]] = {}
            for record in current:
                if record.has_parent:
                    by_parent.setdefault((record.col // 2, record.row // 2), []).append(record)
            current = [
                build_parent(context, level, col, row, group, self._scratch)
                for (col, row), group in sorted(by_parent.items())
            ]
            yield from current


class _WriteSlide(beam.DoFn):
    """(SlideJob, [TileRecord]) -> AuditRecord, after writing the outputs under OUTPUT atomically."""

    def __init__(self, settings: RunSettings, scratch_root: str) -> None:
        self._settings = settings
        self._scratch_root = scratch_root

    def setup(self) -> None:
        self._key = load_run_key(self._settings)
        self._scratch = make_scratch(self._scratch_root)

    def process(self, item: tuple[SlideJob, list[TileRecord]]) -> Iterator[AuditRecord | TaggedOutput]:
        job, records = item
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
            if any(record.origin == "source" for record in records) or settings.qa_report:
                path = cleanup.enter_context(localized(job.context.source_paths, job.context.subtype))
                reader = SlideReader(path)
                cleanup.callback(reader.close)
            outputs, actions = write_outputs(
                job,
                records,
                reader,
                self._scratch,
                settings.wsi,
                local_out,
                lambda purpose: self._key.uid(f"wsi:{sha}:{purpose}"),
            )
            written = time.perf_counter()
            self._check_leaks(job, local_out, outputs)
            checked = time.perf_counter()
            publish(local_out, outputs, settings.output)
            if settings.qa_report:
                seconds = {"wsi write": written - start, "wsi leak check": checked - written}
                entry = self._qa_entry(job, records, actions, reader, seconds)
        count_actions(actions)
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
        self,
        job: SlideJob,
        records: list[TileRecord],
        actions: dict[str, int],
        reader: SlideReader | None,
        seconds: dict[str, float],
    ) -> QaEntry:
        """Thumbnails in memory only; a thumbnail that cannot be made is left out, the slide is fine."""
        before = top = None
        with contextlib.suppress(Exception):
            if reader is not None:
                before = reader.thumbnail(INPUT_THUMBNAIL_SIDE)
        with contextlib.suppress(Exception):
            top = np.asarray(load_top(job, self._scratch))
        return slide_entry(job, records, actions, before, top, seconds)

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
