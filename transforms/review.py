"""Holding inputs for review under OUTPUT/review/ and the review page, for the pipeline and the
review command alike (deid/review/held.py describes the layout; deid/review/decision.py decides).

A held input's outputs, previews and review.json are written by the one file protocol
(transforms/files.py: staged under OUTPUT/.tmp/, renamed into place), review.json last, so a
review.json is only ever seen beside complete outputs. The input's audit record has status
`needs_review` and lists the held files as its outputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from deid.classify import InputRef
from deid.keys import DeidKey
from deid.records import AuditRecord
from deid.redaction.confidence import Candidate, band_counts
from deid.review.decision import review_reason
from deid.review.held import (
    PAGE_RELPATH,
    REVIEW_DIR,
    REVIEW_JSON,
    HeldInput,
    Preview,
    held_dir,
    held_relpath,
    numbered,
    profile_record,
)
from deid.review.page import build_review_page
from deid.review.previews import crop_box, slide_previews
from deid.settings import RunSettings
from deid.wsi.source import SlideReader
from transforms.files import RAW, output_path, publish, write_atomically

NEEDS_REVIEW: Final = "needs_review"
_LOG = logging.getLogger("deid.review")


def held_audit(held: HeldInput, kind: Any) -> AuditRecord:
    """The `needs_review` audit record of a held input: its held files, counts, why it is held."""
    details = {
        **held.details,
        "review": held.reason,
        "review_threshold": held.threshold,
        "candidates_pending": len(held.pending),
    }
    return AuditRecord(held.input_sha256, kind, NEEDS_REVIEW, tuple(held.held_paths()), held.actions, details=details)


def _write_previews_and_manifest(output: str, held: HeldInput, previews: Sequence[tuple[Preview, bytes]]) -> None:
    folder = held_dir(held.input_sha256)
    for preview, png in previews:
        write_atomically(output, f"{folder}/{preview.file}", png)
    write_atomically(output, f"{folder}/{REVIEW_JSON}", held.to_json().encode("utf-8"))


def hold_bytes(
    output: str, held: HeldInput, payloads: Mapping[str, bytes], previews: Sequence[tuple[Preview, bytes]]
) -> None:
    """Write a held input whose outputs are in memory (`payloads`: final relpath -> bytes)."""
    for relpath, data in payloads.items():
        write_atomically(output, held_relpath(held.input_sha256, relpath), data)
    _write_previews_and_manifest(output, held, previews)


def hold_local_files(
    output: str, held: HeldInput, local_root: str, relpaths: Sequence[str], previews: Sequence[tuple[Preview, bytes]]
) -> None:
    """Write a held input whose outputs are local files (a slide pyramid) under `local_root`."""
    publish(local_root, relpaths, output, [held_relpath(held.input_sha256, r) for r in relpaths])
    _write_previews_and_manifest(output, held, previews)


def read_object(path: str) -> bytes:
    with FileSystems.open(path, compression_type=RAW) as handle:
        data: bytes = handle.read()
    return data


def list_held(output: str) -> list[HeldInput]:
    """Every complete hold under OUTPUT/review/ (a folder with its review.json), by input hash."""
    pattern = FileSystems.join(output, REVIEW_DIR, "*", REVIEW_JSON)
    try:
        found = FileSystems.match([pattern])[0].metadata_list
    except Exception:  # noqa: BLE001 - no review folder (or nothing matched): nothing is held
        return []
    held = [HeldInput.from_json(read_object(m.path)) for m in found]
    return sorted(held, key=lambda h: h.input_sha256)


def load_held(output: str, input_sha256: str) -> HeldInput | None:
    path = output_path(output, f"{held_dir(input_sha256)}/{REVIEW_JSON}")
    if not FileSystems.exists(path):
        return None
    return HeldInput.from_json(read_object(path))


def read_previews(output: str, held: HeldInput) -> dict[str, bytes]:
    pngs = {}
    for preview in held.previews:
        with contextlib.suppress(Exception):  # a missing preview shows as such on the page
            pngs[preview.file] = read_object(output_path(output, f"{held_dir(held.input_sha256)}/{preview.file}"))
    return pngs


def write_review_page(output: str, fallback: Sequence[AuditRecord] = ()) -> str:
    """Render OUTPUT/review/index.html from every hold under OUTPUT/review/ now; returns its relpath.

    When the holds cannot be read back (workers of the hardened deployment may not read outputs),
    the page lists the `fallback` records' inputs without images and says how to render it whole.
    """
    try:
        items = [(held, read_previews(output, held)) for held in list_held(output)]
    except Exception as exc:
        if not fallback:
            raise
        _LOG.warning("the review page lists this run's holds only (%s reading them back)", type(exc).__name__)
        items = [(_from_record(record), {}) for record in fallback]
    return write_atomically(output, PAGE_RELPATH, build_review_page(items).encode("utf-8"))


def _from_record(record: AuditRecord) -> HeldInput:
    details = dict(record.details)
    return HeldInput(
        record.input_sha256,
        record.kind,
        str(details.get("review", "")),
        float(str(details.get("review_threshold", 0.0))),
        "",
        tuple(record.outputs),
    )


def _page_if_held(records: Iterable[AuditRecord], output: str) -> list[str]:
    held = [record for record in records if record.status == NEEDS_REVIEW]
    if not held:
        return []
    return [write_review_page(output, held)]


class WriteReviewPage(beam.PTransform):
    """PCollection[AuditRecord] -> OUTPUT/review/index.html, written once every record of the run is
    in (so every hold of this run is on disk) when the run held any input; it lists the holds of
    earlier runs that wait too."""

    def __init__(self, output: str) -> None:
        super().__init__()
        self._output = output

    def expand(self, audit: beam.PCollection) -> beam.PCollection:
        return (
            audit
            | "HeldRecords" >> beam.Filter(lambda record: record.status == NEEDS_REVIEW)
            | "HeldToList" >> beam.combiners.ToList()
            | "WritePage" >> beam.FlatMap(_page_if_held, self._output)
        )


def held_input(
    ref: InputRef,
    reason: str,
    threshold: float,
    run_id: str,
    outputs: Sequence[str],
    profile: Mapping[str, object],
    **fields: Any,
) -> HeldInput:
    """The HeldInput of `ref` (sizes and format from its InputRef)."""
    return HeldInput(
        input_sha256=ref.sha256,
        kind=ref.kind,
        reason=reason,
        threshold=threshold,
        run_id=run_id,
        outputs=tuple(outputs),
        input_size=ref.size,
        subtype=ref.subtype,
        profile=dict(profile),
        **fields,
    )


def hold_slide(
    settings: RunSettings,
    key: DeidKey,
    ref: InputRef,
    uncertain: Sequence[Candidate],
    local_out: str,
    outputs: Sequence[str],
    actions: dict[str, int],
    top: np.ndarray | None,
    size: tuple[int, int],
) -> HeldInput | None:
    """Hold a written slide for review when the rule says so (any level-0 candidate pending, or the
    sample): its outputs go to review/<sha>/ instead of wsi/. None: publish as usual.

    Slides are held whole, and only on the level-0 candidates the tile stage reports (at most
    MAX_BLOCK_BOXES per block); the review command cannot re-render a slide (--redact refuses it:
    re-run it with --redact_regions for its hash instead).
    """
    threshold = settings.redaction.review_threshold
    reason = review_reason(uncertain, threshold, settings.review_sample_rate, key, ref.sha256)
    if reason is None:
        return None
    candidates = numbered([(c, None, 0) for c in dict.fromkeys(uncertain)])
    actions.update(band_counts(c.score for c in candidates))
    actions["text_candidates_pending"] = len(candidates)
    held = held_input(
        ref,
        reason,
        threshold,
        settings.run_id,
        outputs,
        profile_record(settings.profile),
        candidates=candidates,
        actions=dict(actions),
        image_size=size,
    )
    previews = slide_previews(top, size, _crops(local_out, outputs, candidates, size))
    held = dataclasses.replace(held, previews=tuple(p for p, _ in previews))
    hold_local_files(settings.output, held, local_out, list(outputs), previews)
    return held


def _crops(
    local_out: str, outputs: Sequence[str], candidates: Sequence[Any], size: tuple[int, int]
) -> list[tuple[Any, np.ndarray]]:
    """Full-resolution crops of the written output around each candidate (none if it cannot be read)."""
    pyramid = next((o for o in outputs if o.endswith((".svs", ".tiff", ".tif"))), None)
    if pyramid is None or not candidates:
        return []
    crops = []
    reader = None
    try:
        reader = SlideReader(os.path.join(local_out, pyramid), use_raw=False)
        for candidate in candidates:
            box = crop_box(candidate.box, *size)
            crops.append((box, reader.read_region(box)))
    except Exception:  # noqa: BLE001 - previews are optional: the overview still shows the slide
        return crops
    finally:
        if reader is not None:
            reader.close()
    return crops
