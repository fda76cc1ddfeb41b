"""The QA report entry of one slide (`--qa_report`): thumbnails made in memory, counts, stage times."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from deid.qa.report import QaEntry, after_thumbnail, before_thumbnail
from deid.wsi.job import SlideJob
from deid.wsi.writer import WrittenSlide

# The input is read at this size (OpenSlide uses its smallest level); before_thumbnail then shrinks
# and blurs it so that no text is readable.
INPUT_THUMBNAIL_SIDE = 512


def disposition(actions: Mapping[str, int], name: str) -> str:
    """'dropped', 'blanked', 'redacted' or 'absent' for the label or the macro."""
    for action, label in (("dropped", "dropped"), ("blanked", "blanked"), ("redacted", "redacted")):
        if actions.get(f"{name}_{action}"):
            return label
    return "absent"


def stage_seconds(
    job: SlideJob, tile_seconds: float, pyramid_seconds: float, extra: Mapping[str, float]
) -> dict[str, float]:
    """Seconds per stage for this slide: prepare, level-0 bands (with the levels inside them), the
    pyramid levels above them, then `extra`."""
    stages = {"wsi prepare": job.prepare_seconds, "wsi tiles": tile_seconds, "wsi pyramid": pyramid_seconds}
    stages.update(extra)
    return {name: round(seconds, 4) for name, seconds in stages.items()}


def slide_entry(
    job: SlideJob,
    written: WrittenSlide,
    before: np.ndarray | None,
    top: np.ndarray | None,
    extra_seconds: Mapping[str, float],
) -> QaEntry:
    """`before`: a small image of the input slide; `top`: the output's top pyramid level."""
    actions = written.actions
    return QaEntry(
        input_sha256=job.ref.sha256,
        kind="wsi",
        before_png=before_thumbnail(before) if before is not None else None,
        after_png=(
            after_thumbnail(top, boxes=list(written.boxes), source_size=(job.metadata.width, job.metadata.height))
            if top is not None
            else None
        ),
        boxes=int(actions.get("boxes_redacted", 0)),
        label=disposition(actions, "label"),
        macro=disposition(actions, "macro"),
        tiles_passthrough=int(actions.get("tiles_passthrough", 0)),
        tiles_reencoded=int(actions.get("tiles_reencoded", 0)),
        stage_seconds=stage_seconds(job, written.tile_seconds, written.pyramid_seconds, extra_seconds),
    )
