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
   output for them (`deid.wsi.leakcheck`), then copies each output under OUTPUT with a temporary
   name, renames it, and emits the audit record. On a hit the outputs go to OUTPUT/quarantine/
   instead and the slide becomes a dead letter with error_kind "leak".
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import posixpath
import shutil
import tempfile
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput

from deid.classify import InputRef
from deid.errors import InvalidInputError, SlideReadError
from deid.qa.report import QaEntry
from deid.records import AuditRecord
from deid.settings import RunSettings
from deid.wsi.job import (
    MAX_PYRAMID_LEVELS,
    SlideJob,
    SlideUnit,
    band_tasks,
    keep_associated,
    plan_job,
)
from deid.wsi.probe import probe_isolated
from deid.wsi.scratch import LocalScratch, Scratch
from deid.wsi.source import SlideReader, check_limits
from deid.wsi.tiles import (
    TileBand,
    TileContext,
    TileRecord,
    TileTask,
    build_parent,
    failure,
    redact_level0_tile,
    redaction_config,
)
from transforms._io import RAW
from transforms.common import (
    METRICS_NAMESPACE,
    DeidOutputs,
    ToDeadLetters,
    audit_ok,
    count_actions,
    load_run_key,
)
from transforms.qa import QA_TAG

_COPY_CHUNK = 8 * 1024 * 1024
# Pyramid levels built per stage (see the module docstring): 15 levels take 5 stages, and a block
# at level 0 is 8x8 tiles, small enough to keep a large slide's level 1 spread over many workers.
PYRAMID_LEVELS_PER_STAGE = 3


class DeidentifyWsi(beam.PTransform):
    """PCollection[InputRef] (kind 'wsi') -> DeidOutputs(audit, dead_letters, linkage, qa).

    `qa` (PCollection[QaEntry], one per written slide) with --qa_report, else None.

    Outputs: OUTPUT/wsi/<pseudonym>.svs (Aperio layout) or .tiff (generic) and, with
    --wsi_output_format dicom|both, OUTPUT/wsi/<pseudonym>/level-<k>.dcm. The pseudonym is
    key.pseudonym("wsi", input sha256); for DICOM-WSI the sha256 of the unit's first file by path.
    """

    def __init__(self, settings: RunSettings) -> None:
        super().__init__()
        self._settings = settings
        # Scratch names of this pipeline: a fresh directory per construction.
        self._run_id = uuid.uuid4().hex[:16]

    def expand(self, refs: beam.PCollection) -> DeidOutputs:
        settings = self._settings
        scratch_root = _scratch_root(settings, self._run_id)
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
            units | "PrepareSlide" >> beam.ParDo(_PrepareSlide(settings, scratch_root)).with_exception_handling()
        )
        jobs = prepared_good
        contexts = beam.pvalue.AsDict(jobs | "Contexts" >> beam.Map(lambda job: (job.slide_id, job.context)))

        # Bands of level-0 tiles: each overlapped window is read from a per-reader cache of decoded
        # tiles, so a band decodes each of its tiles (and of its one-tile ring) once.
        bands = jobs | "TileBands" >> beam.FlatMap(band_tasks) | "SpreadBands" >> beam.Reshuffle()
        level0 = bands | "RedactTiles" >> beam.ParDo(_RedactTiles(scratch_root))
        levels = [level0]
        current = level0
        for first in range(1, MAX_PYRAMID_LEVELS, PYRAMID_LEVELS_PER_STAGE):
            count = min(PYRAMID_LEVELS_PER_STAGE, MAX_PYRAMID_LEVELS - first)
            built = (
                current
                | f"ToBlock{first}" >> beam.FlatMap(_ancestor_key, count)
                | f"GroupBlock{first}" >> beam.GroupByKey()
                | f"BuildLevels{first}" >> beam.ParDo(_BuildParents(scratch_root, first, count), contexts)
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
        written = finished | "WriteSlide" >> beam.ParDo(_WriteSlide(settings, scratch_root)).with_outputs(
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


def _scratch_root(settings: RunSettings, run_id: str) -> str:
    base = settings.scratch_location or os.path.join(tempfile.gettempdir(), "deid-wsi-scratch")
    return FileSystems.join(base, f"wsi-{run_id}") if "://" in base else os.path.join(base, f"wsi-{run_id}")


class _FileSystemsScratch:
    """Scratch on any Beam filesystem (gs:// on Dataflow, where workers share no local disk)."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def put(self, name: str, data: bytes) -> None:
        with FileSystems.create(self._path(name), compression_type=RAW) as handle:
            handle.write(data)

    def get(self, name: str) -> bytes:
        with FileSystems.open(self._path(name), compression_type=RAW) as handle:
            return handle.read()

    def delete(self, name: str) -> None:
        with contextlib.suppress(Exception):  # a leftover scratch file is harmless
            FileSystems.delete([self._path(name)])

    def delete_prefix(self, prefix: str) -> None:
        pattern = f"{self._path(prefix.rstrip('/'))}/**"
        try:
            matched = FileSystems.match([pattern])[0].metadata_list
            if matched:
                FileSystems.delete([m.path for m in matched])
        except (OSError, BeamIOError):
            pass  # best-effort cleanup of scratch: a leftover file must not fail a finished slide


def make_scratch(root: str) -> Scratch:
    return _FileSystemsScratch(root) if "://" in root else LocalScratch(root)


def localize(paths: tuple[str, ...], subtype: str) -> tuple[str, str | None]:
    """(local path OpenSlide can open, temporary directory to remove afterwards or None).

    Local single files and MIRAX units are used in place. DICOM-WSI units get a directory of
    symlinks (or copies) holding only their own instances, so OpenSlide sees exactly one slide.
    Remote objects are copied with FileSystems; names keep only the extension (NDPI, MRXS need it)
    or, for MIRAX, the layout relative to the index file.
    """
    remote = any("://" in path for path in paths)
    if not remote and (len(paths) == 1 or subtype == "mrxs"):
        return paths[0], None
    tmp = tempfile.mkdtemp(prefix="deid-wsi-")
    try:
        base = posixpath.dirname(paths[0])
        targets = []
        for index, path in enumerate(paths):
            if subtype == "dicom-wsi":
                name = f"{index:05d}.dcm"
            elif subtype == "mrxs":
                name = posixpath.relpath(path, base) if index else posixpath.basename(path)
            else:
                ext = os.path.splitext(path)[1].lower()[:8] if index == 0 else ""
                name = f"slide{ext}" if index == 0 else posixpath.relpath(path, base)
            target = os.path.join(tmp, name)
            if ".." in name.split("/"):
                raise InvalidInputError("a file of a slide unit lies outside its index file's directory")
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if remote:
                with FileSystems.open(path, compression_type=RAW) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, _COPY_CHUNK)
            else:
                os.symlink(os.path.abspath(path), target)
            targets.append(target)
        return targets[0], tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class _Readers:
    """A few open slides per DoFn instance; a reader is dropped after any error (OpenSlide latches)."""

    def __init__(self, limit: int = 2) -> None:
        self._limit = limit
        self._open: OrderedDict[str, tuple[SlideReader, str | None]] = OrderedDict()

    def get(self, context: TileContext) -> SlideReader:
        entry = self._open.get(context.slide_id)
        if entry is not None:
            self._open.move_to_end(context.slide_id)
            return entry[0]
        path, tmp = localize(context.source_paths, context.subtype)
        try:
            reader = SlideReader(path)
        except BaseException:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._open[context.slide_id] = (reader, tmp)
        while len(self._open) > self._limit:
            self.drop(next(iter(self._open)))
        return reader

    def drop(self, slide_id: str) -> None:
        entry = self._open.pop(slide_id, None)
        if entry is not None:
            reader, tmp = entry
            reader.close()
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)

    def close_all(self) -> None:
        for slide_id in list(self._open):
            self.drop(slide_id)


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
        import pydicom

        with FileSystems.open(ref.path, compression_type=RAW) as handle:
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
        if settings.wsi.redact_text == "ocr" or settings.wsi.label == "redact":
            from deid.redaction.engine import RedactionConfig

            RedactionConfig(text_mode=settings.wsi.redact_text).check_tools()
        start = time.perf_counter()
        path, tmp = localize(unit.paths, ref.subtype)
        reader: SlideReader | None = None
        pseudonym = self._key.pseudonym("wsi", ref.sha256)
        slide_id = f"{pseudonym}-{self._key.pseudonym('wsi-scratch', ref.path, 8)}"
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
                settings.wsi.regions.for_input(ref.sha256),
            )
            job = keep_associated(job, reader, settings.wsi, self._scratch)
            job = dataclasses.replace(job, prepare_seconds=time.perf_counter() - start)
        except BaseException:
            self._scratch.delete_prefix(slide_id)
            raise
        finally:
            if reader is not None:
                reader.close()
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
        Metrics.counter(METRICS_NAMESPACE, "wsi_slides_prepared").inc()
        yield job


def check_limits_size(size: int, settings: RunSettings) -> None:
    from deid.errors import InputTooLargeError

    raise InputTooLargeError(f"the slide is {size} bytes, more than --max_file_bytes {settings.limits.max_file_bytes}")


class _RedactTiles(beam.DoFn):
    """TileBand (or one TileTask) -> TileRecords (level 0). Pixels go to scratch; failures become
    failed records. A TileRecord input passes through unchanged."""

    def __init__(self, scratch_root: str, edges: bool = False) -> None:
        self._scratch_root = scratch_root
        self._edges = edges

    def setup(self) -> None:
        self._scratch = make_scratch(self._scratch_root)
        self._readers = _Readers()
        self._configs: dict[str, object] = {}
        self._tiles = Metrics.counter(METRICS_NAMESPACE, "wsi_tiles_level0")

    def process(self, element: TileBand | TileTask | TileRecord) -> list[TileRecord]:
        if isinstance(element, TileRecord):
            return [element]
        tasks = element.tasks() if isinstance(element, TileBand) else [element]
        ctx = element.context
        try:
            reader = self._readers.get(ctx)
            config = self._configs.get(ctx.slide_id)
            if config is None and ctx.needs_engine:
                config = self._configs[ctx.slide_id] = redaction_config(ctx)
        except Exception as exc:  # noqa: BLE001 - the slide fails in the writer, not the run
            return [failure(ctx, 0, task.col, task.row, exc, "opening the slide for a tile") for task in tasks]
        if isinstance(element, TileBand):
            reader.cache_tiles = max(reader.cache_tiles, element.cache_tiles())
        records = []
        for task in tasks:
            record = redact_level0_tile(reader, task, self._scratch, config, edges=self._edges)
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
        from deid.wsi.writer import write_outputs

        job, records = item
        settings = self._settings
        local_out = tempfile.mkdtemp(prefix="deid-wsi-out-")
        reader: SlideReader | None = None
        tmp: str | None = None
        sha = job.ref.sha256
        entry: QaEntry | None = None
        try:
            start = time.perf_counter()
            if any(record.origin == "source" for record in records) or settings.qa_report:
                path, tmp = localize(job.context.source_paths, job.context.subtype)
                reader = SlideReader(path)
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
        finally:
            if reader is not None:
                reader.close()
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(local_out, ignore_errors=True)
            self._scratch.delete_prefix(job.slide_id)
        count_actions(actions)
        yield audit_ok(
            job.ref,
            outputs,
            actions,
            layout="aperio" if job.aperio else "generic-tiff",
            tile_size=job.context.tile,
            levels=len(job.levels),
            width=job.metadata.width,
            height=job.metadata.height,
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
        from deid.wsi.job import load_top
        from deid.wsi.qa import INPUT_THUMBNAIL_SIDE, slide_entry

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
        from deid.errors import LeakDetectedError
        from deid.verify.leaks import quarantine_relpath, summarize
        from deid.wsi.leakcheck import harvest_slide, scan_outputs

        settings = self._settings
        values = harvest_slide(
            job.context.source_paths, job.context.subtype, settings.input_root, settings.profile, _open_input
        )
        hits = scan_outputs(local_out, outputs, values)
        del values
        if not hits:
            return
        moved = [quarantine_relpath(job.ref.sha256, relative, index) for index, relative in enumerate(outputs)]
        publish(local_out, outputs, settings.output, moved)
        # An earlier run with the same key may have published these names: never leave them in wsi/.
        for relative in outputs:
            final = FileSystems.join(settings.output, *relative.split("/"))
            with contextlib.suppress(Exception):
                if FileSystems.exists(final):
                    FileSystems.delete([final])
        Metrics.counter(METRICS_NAMESPACE, "wsi_outputs_quarantined").inc(len(moved))
        raise LeakDetectedError(summarize(hits))


def _open_input(path: str) -> Any:
    return FileSystems.open(path, compression_type=RAW)


def publish(
    local_root: str, relative_paths: Iterable[str], output: str, destinations: Iterable[str] | None = None
) -> None:
    """Copy each local file to OUTPUT/<relative> under a temporary name, then rename it into place.

    `destinations`: other relative paths under OUTPUT, one per file (quarantine).
    """
    sources = list(relative_paths)
    targets = list(destinations) if destinations is not None else sources
    for relative, target in zip(sources, targets, strict=True):
        final = FileSystems.join(output, *target.split("/"))
        directory, name = posixpath.split(final) if "://" in final else os.path.split(final)
        temporary = FileSystems.join(directory, f".tmp-{uuid.uuid4().hex[:12]}-{name}")
        if "://" not in final:
            os.makedirs(directory, exist_ok=True)
        with (
            open(os.path.join(local_root, relative), "rb") as src,
            FileSystems.create(temporary, compression_type=RAW) as dst,
        ):
            shutil.copyfileobj(src, dst, _COPY_CHUNK)
        FileSystems.rename([temporary], [final])
