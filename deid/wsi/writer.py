"""Stream a finished slide (its pyramid blocks + scratch batches) into the configured output files, locally."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from deid.settings import Box, WsiSettings
from deid.wsi.blocks import BatchFiles, BlockResult, TileIndex
from deid.wsi.dicom_writer import DicomPlan, write_level
from deid.wsi.job import SlideJob, level_tile_reader, load_associated, load_top, output_names, tally
from deid.wsi.scratch import Scratch
from deid.wsi.source import SlideReader
from deid.wsi.tiff_writer import TiffPlan, make_thumbnail, write_pyramid_tiff


@dataclass(frozen=True)
class WrittenSlide:
    """Relative output paths, audit actions, and what the QA report shows of the slide."""

    outputs: list[str]
    actions: dict[str, int]
    top: np.ndarray = field(repr=False)  # the output's top pyramid level
    boxes: tuple[Box, ...] = ()  # level-0 boxes redacted (a bounded sample)
    tile_seconds: float = 0.0
    pyramid_seconds: float = 0.0


def write_outputs(
    job: SlideJob,
    blocks: Iterable[BlockResult],
    reader: SlideReader | None,
    scratch: Scratch,
    settings: WsiSettings,
    out_dir: str,
    uid_for: Callable[[str], str] | None = None,
) -> WrittenSlide:
    """Write the outputs under the local `out_dir`; raises the first failure of a block."""
    index = TileIndex(job.levels, blocks)
    actions = tally(job, index)
    names = output_names(job, settings.output_format)
    written: list[str] = []
    with tempfile.TemporaryDirectory(prefix="deid-wsi-batches-", ignore_cleanup_errors=True) as copies:
        batches = BatchFiles(lambda name: scratch.local_path(name, copies))
        try:
            top = load_top(index, batches)
            if "tiff" in names:
                plan = TiffPlan(
                    job.metadata, job.levels, job.context.codecs, job.context.tile, settings.jpeg_quality, job.aperio
                )
                relative = names["tiff"]
                path = os.path.join(out_dir, relative)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                write_pyramid_tiff(
                    path,
                    plan,
                    level_tile_reader(job, index, reader, batches, full_streams=False),
                    make_thumbnail(top),
                    load_associated(job, scratch),
                    index.estimated_bytes(job.context.tile),
                )
                written.append(relative)
                if plan.aperio:  # only the Aperio layout carries a thumbnail (deid.wsi.tiff_writer)
                    actions["thumbnail_regenerated"] = 1
            if "dicom" in names:
                if uid_for is None:
                    raise ValueError("DICOM output needs a keyed UID function")
                plan_d = DicomPlan(
                    job.metadata, job.levels, job.context.codecs, job.context.tile, job.pseudonym, settings.jpeg_quality
                )
                frames = level_tile_reader(job, index, reader, batches, full_streams=True)
                for shape in job.levels:
                    relative = f"{names['dicom']}/level-{shape.level}.dcm"
                    path = os.path.join(out_dir, relative)
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    write_level(path, plan_d, shape, frames(shape.level), uid_for)
                    written.append(relative)
                actions["dicom_instances_written"] = len(job.levels)
        finally:
            batches.close()
    return WrittenSlide(
        written, actions, top, tuple(index.box_list), index.tile_seconds, index.pyramid_seconds
    )
