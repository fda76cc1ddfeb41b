"""One slide from opening to output files, as pure functions the Beam layer calls step by step.

`plan_job` turns an opened slide into a `SlideJob` (geometry, codecs, metadata kept); `keep_associated`
handles label and macro; `tile_tasks` lists the level-0 work; `write_outputs` streams the finished
tiles into the output files. `transforms.wsi.DeidentifyWsi` runs these steps as Beam stages.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from deid.classify import InputRef
from deid.errors import DeidError, InputTooLargeError, SlideReadError, UnexpectedError
from deid.redaction.engine import RedactionConfig, redact_image
from deid.settings import RedactionSettings, WsiSettings
from deid.wsi import jpeg
from deid.wsi.grid import LevelShape, TileGrid
from deid.wsi.metadata import SlideMetadata
from deid.wsi.scratch import Scratch, pack_pixels, unpack_pixels
from deid.wsi.source import MAX_RAW_TILE, MIN_RAW_TILE, RawLevel, SlideInfo, SlideReader
from deid.wsi.tiles import (
    TileBand,
    TileContext,
    TileRecord,
    TileTask,
    level_codecs,
    tile_name,
    top_name,
)

MAX_PYRAMID_LEVELS = 16
ASSOCIATED_KINDS = ("label", "macro")


@dataclass(frozen=True)
class SlideUnit:
    """One slide: its first file's InputRef (sorted by path) and all its files (first one opened)."""

    ref: InputRef
    paths: tuple[str, ...] = field(repr=False)  # input paths can carry PHI; Beam logs reprs

    @property
    def input_ref(self) -> InputRef:
        return self.ref

    @classmethod
    def single(cls, ref: InputRef) -> SlideUnit:
        return cls(ref, (ref.path, *ref.companions))

    @classmethod
    def group(cls, refs: Iterable[InputRef]) -> SlideUnit:
        """DICOM-WSI: the instances of one series, one unit named after the first file by path."""
        ordered = sorted(refs, key=lambda r: r.path)
        if not ordered:
            raise ValueError("a slide unit needs at least one file")
        return cls(ordered[0], tuple(r.path for r in ordered))


@dataclass(frozen=True)
class SlideJob:
    """A slide ready for tiling: small and picklable (no pixels)."""

    ref: InputRef
    pseudonym: str
    context: TileContext
    metadata: SlideMetadata
    aperio: bool
    associated: tuple[str, ...] = ()  # label/macro kept (blanked or redacted), pixels in scratch
    actions: tuple[tuple[str, int], ...] = ()
    prepare_seconds: float = 0.0  # QA report stage times

    @property
    def slide_id(self) -> str:
        return self.context.slide_id

    @property
    def levels(self) -> tuple[LevelShape, ...]:
        return self.context.grid.levels()

    @property
    def input_ref(self) -> InputRef:
        return self.ref


def choose_tile(info: SlideInfo, settings: WsiSettings) -> int:
    """The source's JPEG tile edge when clean tiles can be copied on it, else --tile_size.

    Input levels stored on another tile edge than level 0's are re-encoded (their tiles cannot be
    copied into the output's one grid); inputs whose tiles are not square JPEG of 128 to 2048 pixels
    (a multiple of 16) are re-encoded whole on the --tile_size grid.
    """
    raw = info.raw_level(1)
    if raw is not None and MIN_RAW_TILE <= raw.tile <= MAX_RAW_TILE and raw.tile % 16 == 0:
        return raw.tile
    return settings.tile_size


def input_level_count(info: SlideInfo) -> int:
    """Output levels needed to keep every level the input has: 1 + log2 of its largest downsample."""
    largest = max(1.0, *info.level_downsamples)
    return 1 + round(math.log2(largest))


def copy_sources(info: SlideInfo, redaction: RedactionConfig) -> tuple[RawLevel, ...]:
    """The input levels clean tiles may be copied from. With text detection on, only level 0: text
    is searched for there, so reduced levels are rebuilt from the redacted level 0 rather than copied
    from the input's own reduced levels, which could hold text level 0 does not."""
    if redaction.text_mode != "off":
        return tuple(raw for raw in info.raw_levels if raw.downsample == 1)
    return info.raw_levels


def aperio_layout(info: SlideInfo) -> bool:
    """The Aperio layout is the one that carries an objective power, a thumbnail, a label and a macro:
    Aperio inputs, inputs stating an objective power, and any vendor whose label or macro OpenSlide
    exposes (Philips, NDPI, SCN, BIF, MIRAX), so `--label_macro blank|redact` keep them for every vendor."""
    if info.metadata.vendor == "aperio" or info.metadata.objective_power is not None:
        return True
    return any(name in ASSOCIATED_KINDS for name in info.associated)


def plan_job(
    ref: InputRef,
    pseudonym: str,
    slide_id: str,
    source_paths: tuple[str, ...],
    info: SlideInfo,
    settings: WsiSettings,
    redaction: RedactionConfig,
) -> SlideJob:
    tile = choose_tile(info, settings)
    overlap = min(settings.tile_overlap, tile // 2 - 1)
    min_levels = input_level_count(info)
    grid = TileGrid(info.width, info.height, tile, overlap, min_levels)
    levels = grid.levels()
    if len(levels) > MAX_PYRAMID_LEVELS:
        raise InputTooLargeError(
            f"the slide needs {len(levels)} pyramid levels at tile size {tile}; at most {MAX_PYRAMID_LEVELS} "
            "are built, use a larger --tile_size"
        )
    context = TileContext(
        slide_id=slide_id,
        source_paths=source_paths,
        width=info.width,
        height=info.height,
        tile=tile,
        overlap=overlap,
        codecs=level_codecs(levels, tile, copy_sources(info, redaction)),
        quality=settings.jpeg_quality,
        min_levels=min_levels,
        redaction=redaction,
        subtype=ref.subtype or "tiff",
    )
    aperio = aperio_layout(info)
    return SlideJob(
        ref=ref,
        pseudonym=pseudonym,
        context=context,
        metadata=info.metadata,
        aperio=aperio,
        actions=(("metadata_fields_removed", info.metadata.fields_removed),),
    )


def associated_name(slide_id: str, name: str) -> str:
    return f"{slide_id}/assoc/{name}.zst"


def keep_associated(
    job: SlideJob, reader: SlideReader, settings: WsiSettings, redaction: RedactionSettings, scratch: Scratch
) -> SlideJob:
    """Drop, blank or redact label and macro; other associated images (vendor extras) are dropped.

    The input thumbnail is never copied: the writer regenerates it from the redacted pyramid.
    """
    actions = dict(job.actions)
    kept: list[str] = []
    for name in reader.info.associated:
        if name == "thumbnail":
            continue
        if name not in ASSOCIATED_KINDS or settings.label == "drop" or not job.aperio:
            actions[f"{name}_dropped"] = actions.get(f"{name}_dropped", 0) + 1
            continue
        image = reader.associated_image(name)
        if settings.label == "blank":
            image = np.full_like(image, 255)
            actions[f"{name}_blanked"] = 1
        else:
            # --label_macro redact searches for text even when --redact_text is off for tiles.
            mode = redaction.text if redaction.text != "off" else "detect"
            outcome = redact_image(image, RedactionConfig(text_mode=mode, fill=redaction.fill))
            image = np.asarray(outcome.pixels)
            actions[f"{name}_redacted"] = 1
            actions["boxes_redacted"] = actions.get("boxes_redacted", 0) + len(outcome.boxes)
        scratch.put(associated_name(job.slide_id, name), pack_pixels(image))
        kept.append(name)
    return dataclasses.replace(job, associated=tuple(kept), actions=tuple(sorted(actions.items())))


# Level-0 tiles per band element: few elements per slide, one decode per tile (the ring of a
# 16-row, 8-column band adds 40 % decodes), and a decoded-tile cache of 33 tiles (25 MB at 512 px)
# per reader: narrow bands keep that cache small.
BAND_ROWS = 16
BAND_COLS = 8


def band_tasks(job: SlideJob, rows: int = BAND_ROWS, cols: int = BAND_COLS) -> Iterator[TileBand]:
    """The level-0 grid cut into bands of at most rows x cols tiles, row-major."""
    level0 = job.levels[0]
    for row0 in range(0, level0.rows, rows):
        for col0 in range(0, level0.cols, cols):
            yield TileBand(job.context, col0, row0, min(cols, level0.cols - col0), min(rows, level0.rows - row0))


def tile_tasks(job: SlideJob) -> Iterator[TileTask]:
    level0 = job.levels[0]
    for row in range(level0.rows):
        for col in range(level0.cols):
            yield TileTask(job.context, col, row)


def check_records(job: SlideJob, records: Iterable[TileRecord]) -> dict[int, dict[tuple[int, int], TileRecord]]:
    """Records by level and (col, row); raises the first tile failure or a missing tile."""
    by_level: dict[int, dict[tuple[int, int], TileRecord]] = defaultdict(dict)
    for record in records:
        if record.failed:
            raise _error_of(record)
        by_level[record.level][(record.col, record.row)] = record
    for shape in job.levels:
        if len(by_level.get(shape.level, {})) != shape.tile_count:
            raise SlideReadError("some tiles of the pyramid are missing; the slide could not be read completely")
    return by_level


def _error_of(record: TileRecord) -> DeidError:
    for cls in DeidError.__subclasses__():
        if cls.error_kind == record.error_kind:
            return cls(record.error_message)
    return UnexpectedError(record.error_message or "a tile failed")


def tally(job: SlideJob, by_level: dict[int, dict[tuple[int, int], TileRecord]]) -> dict[str, int]:
    actions = dict(job.actions)
    records = [r for level in by_level.values() for r in level.values()]
    actions["tiles_passthrough"] = sum(1 for r in records if r.origin == "source")
    actions["tiles_reencoded"] = sum(1 for r in records if r.origin == "scratch")
    actions["tiles_redacted"] = sum(1 for r in records if r.redacted)
    actions["boxes_redacted"] = actions.get("boxes_redacted", 0) + sum(r.boxes for r in records)
    actions["levels_written"] = len(by_level)
    actions["thumbnail_regenerated"] = 1
    return actions


def level_tile_reader(
    job: SlideJob,
    by_level: dict[int, dict[tuple[int, int], TileRecord]],
    reader: SlideReader | None,
    scratch: Scratch,
    full_streams: bool,
) -> Callable[[int], Iterator[bytes]]:
    """level -> the level's tiles row by row, as stored (TIFF) or as self-contained JPEG (DICOM)."""

    def tiles(level: int) -> Iterator[bytes]:
        shape = job.levels[level]
        codec = job.context.codecs[level]
        records = by_level[level]
        for row in range(shape.rows):
            for col in range(shape.cols):
                record = records[(col, row)]
                if record.origin == "source":
                    if reader is None or codec.source is None:
                        raise SlideReadError("a copied tile needs the input slide")
                    data = reader.raw_tile(codec.source, col, row)
                    yield jpeg.merge_tables(codec.jpegtables, data) if full_streams else data
                else:
                    yield scratch.get(tile_name(job.slide_id, level, col, row))

    return tiles


def estimated_bytes(job: SlideJob, by_level: dict[int, dict[tuple[int, int], TileRecord]]) -> int:
    total = 0
    for level, records in by_level.items():
        shape = job.levels[level]
        for record in records.values():
            total += record.nbytes or (job.context.tile * job.context.tile * 3 // 4)
        del shape
    return total


def load_top(job: SlideJob, scratch: Scratch) -> np.ndarray:
    return unpack_pixels(scratch.get(top_name(job.slide_id)))


def load_associated(job: SlideJob, scratch: Scratch) -> list[tuple[str, np.ndarray]]:
    return [
        (name, np.ascontiguousarray(unpack_pixels(scratch.get(associated_name(job.slide_id, name)))))
        for name in job.associated
    ]


def output_names(job: SlideJob, output_format: str) -> dict[str, str]:
    """Relative output paths by format: wsi/<pseudonym>.svs|.tiff and wsi/<pseudonym>/level-<k>.dcm."""
    names: dict[str, str] = {}
    if output_format in ("tiff", "both"):
        names["tiff"] = f"wsi/{job.pseudonym}.{'svs' if job.aperio else 'tiff'}"
    if output_format in ("dicom", "both"):
        names["dicom"] = f"wsi/{job.pseudonym}"
    return names
