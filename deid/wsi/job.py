"""One slide from opening to output files, as pure functions the Beam layer calls step by step.

`plan_job` turns an opened slide into a `SlideJob` (geometry, codecs, metadata kept); `keep_associated`
handles label and macro; `band_tasks` lists the level-0 work (`deid.wsi.pyramid` runs it);
`write_outputs` streams the finished tiles into the output files. `transforms.wsi.DeidentifyWsi`
runs these steps as Beam stages.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from deid.classify import InputRef
from deid.errors import InputTooLargeError, SlideReadError
from deid.redaction.engine import RedactionConfig, redact_image
from deid.settings import RedactionSettings, WsiSettings
from deid.wsi import jpeg
from deid.wsi.blocks import ORIGIN_SOURCE, BatchFiles, TileIndex, unpack_lossless
from deid.wsi.grid import LevelShape, TileGrid
from deid.wsi.metadata import SlideMetadata
from deid.wsi.scratch import Scratch, pack_pixels, unpack_pixels
from deid.wsi.source import MAX_RAW_TILE, MIN_RAW_TILE, RawLevel, SlideInfo, SlideReader
from deid.wsi.tiles import TileBand, TileContext, TileTask, band_levels, level_codecs

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


def band_tasks(job: SlideJob, levels: int | None = None) -> Iterator[TileBand]:
    """The level-0 grid cut into square bands of 2**levels tiles (`band_levels` by default) on the
    pyramid grid, row-major; each band also builds its reduced levels up to its one top tile."""
    ctx = job.context
    k = band_levels(ctx.tile, ctx.level_count) if levels is None else min(levels, ctx.level_count - 1)
    side = 1 << k
    level0 = job.levels[0]
    for row0 in range(0, level0.rows, side):
        for col0 in range(0, level0.cols, side):
            yield TileBand(ctx, col0, row0, min(side, level0.cols - col0), min(side, level0.rows - row0), k)


def tile_tasks(job: SlideJob) -> Iterator[TileTask]:
    level0 = job.levels[0]
    for row in range(level0.rows):
        for col in range(level0.cols):
            yield TileTask(job.context, col, row)


def tally(job: SlideJob, index: TileIndex) -> dict[str, int]:
    actions = dict(job.actions)
    actions.update(index.counts())
    actions["boxes_redacted"] = actions.get("boxes_redacted", 0) + index.boxes
    actions["levels_written"] = len(job.levels)
    return actions


def level_tile_reader(
    job: SlideJob, index: TileIndex, reader: SlideReader | None, batches: BatchFiles, full_streams: bool
) -> Callable[[int], Iterator[bytes]]:
    """level -> the level's tiles row by row, as stored (TIFF) or as self-contained JPEG (DICOM)."""

    def tiles(level: int) -> Iterator[bytes]:
        shape = job.levels[level]
        codec = job.context.codecs[level]
        origin, batch = index.origin[level], index.batch[level]
        offset, length = index.offset[level], index.length[level]
        for row in range(shape.rows):
            for col in range(shape.cols):
                if origin[row, col] == ORIGIN_SOURCE:
                    if reader is None or codec.source is None:
                        raise SlideReadError("a copied tile needs the input slide")
                    data = reader.raw_tile(codec.source, col, row)
                    yield jpeg.merge_tables(codec.jpegtables, data) if full_streams else data
                else:
                    name = index.batches[int(batch[row, col])]
                    yield batches.read(name, int(offset[row, col]), int(length[row, col]))

    return tiles


def load_top(index: TileIndex, batches: BatchFiles) -> np.ndarray:
    if index.top_pixels is None:
        raise SlideReadError("the pyramid's top tile is missing")
    number, offset, length = index.top_pixels
    return unpack_lossless(batches.read(index.batches[number], offset, length))


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
