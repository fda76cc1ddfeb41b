"""Stream a finished slide (tile records + scratch) into the configured output files, locally."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from deid.settings import WsiSettings
from deid.wsi.dicom_writer import DicomPlan, write_level
from deid.wsi.job import (
    SlideJob,
    check_records,
    estimated_bytes,
    level_tile_reader,
    load_associated,
    load_top,
    output_names,
    tally,
)
from deid.wsi.scratch import Scratch
from deid.wsi.source import SlideReader
from deid.wsi.tiff_writer import TiffPlan, make_thumbnail, write_pyramid_tiff
from deid.wsi.tiles import TileRecord


def write_outputs(
    job: SlideJob,
    records: Iterable[TileRecord],
    reader: SlideReader | None,
    scratch: Scratch,
    settings: WsiSettings,
    out_dir: str,
    uid_for: Callable[[str], str] | None = None,
) -> tuple[list[str], dict[str, int]]:
    """Write the outputs under the local `out_dir`; return (relative file paths, audit actions)."""
    by_level = check_records(job, records)
    actions = tally(job, by_level)
    names = output_names(job, settings.output_format)
    written: list[str] = []
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
            level_tile_reader(job, by_level, reader, scratch, full_streams=False),
            make_thumbnail(load_top(job, scratch)),
            load_associated(job, scratch),
            estimated_bytes(job, by_level),
        )
        written.append(relative)
    if "dicom" in names:
        if uid_for is None:
            raise ValueError("DICOM output needs a keyed UID function")
        plan_d = DicomPlan(
            job.metadata, job.levels, job.context.codecs, job.context.tile, job.pseudonym, settings.jpeg_quality
        )
        frames = level_tile_reader(job, by_level, reader, scratch, full_streams=True)
        for shape in job.levels:
            relative = f"{names['dicom']}/level-{shape.level}.dcm"
            path = os.path.join(out_dir, relative)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            write_level(path, plan_d, shape, frames(shape.level), uid_for)
            written.append(relative)
        actions["dicom_instances_written"] = len(job.levels)
    return written, actions
