"""What `python -m pipeline.review` does to one held input: approve, redact, reject.

Each decision is carried out by the one file protocol (transforms/files.py) on local and gs://
outputs alike, in an order that a crash can only repeat, never corrupt: the outputs are published
(or quarantined) first, then the command's own record files are written, then the decision is
appended to review/decisions.jsonl, then the held folder is removed (review.json first). A crash in
between leaves the input held, and approving it again publishes the same bytes once more.

Approval checks the held outputs again for the input's identifying values: it needs the input
(--input, the run's input location), found by its size and sha256 (review.json keeps no path), and
the run's profile options (review.json keeps those). A hit quarantines the outputs and dead-letters
the input `leak`, as the run itself would. A held DICOM instance whose output path already holds a
different file is dead-lettered `uid_conflict` and never overwrites it.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace

import pydicom
from apache_beam.io.filesystems import FileSystems

from deid.cloud.dicomweb import make_client, store_bytes
from deid.dicom.instance import InstanceSource, rescan_instance
from deid.dicom.pixels import redact_dicom_frames
from deid.dicom.writer import write_dicom
from deid.errors import ConfigError, UidConflictError
from deid.keys import DeidKey
from deid.records import AuditRecord, DeadLetterRecord
from deid.redaction.confidence import Candidate, settle
from deid.redaction.engine import RedactionConfig
from deid.review.held import REVIEW_JSON, HeldInput, ReviewCandidate, held_dir, held_relpath
from deid.review.previews import dicom_previews
from deid.settings import Box, RunSettings, is_glob
from deid.verify.scan import quarantine_relpath, summarize
from deid.verify.values import LeakHit
from deid.wsi.leakcheck import harvest_slide, scan_outputs
from deid.wsi.mirax import unit_folder
from transforms.files import (
    RAW,
    TMP_DIR,
    open_input,
    output_path,
    publish_object,
    read_all,
    sha256_and_head,
    write_atomically,
)
from transforms.listing import input_pattern
from transforms.review import read_object

REJECTED = "rejected_in_review"
DICOMWEB_PREFIX = "dicomweb:"


@dataclass(frozen=True)
class Outcome:
    """What one decision produced: the records to write and the line to print (no input value)."""

    audit: AuditRecord | None
    dead_letter: DeadLetterRecord | None
    summary: str
    result: str  # published, quarantined, uid_conflict, rejected, redacted


# -- finding the input ----------------------------------------------------------------------------


def _input_files(location: str, output: str) -> list[tuple[str, int]]:
    try:
        found = FileSystems.match([input_pattern(location)])[0].metadata_list
    except Exception as exc:  # noqa: BLE001 - a listing failure is the user's to fix
        raise ConfigError(f"--input cannot be listed ({type(exc).__name__})") from None
    own = [output_path(output, "review"), output_path(output, TMP_DIR), output_path(output, "quarantine")]
    return [(m.path, int(m.size_in_bytes)) for m in found if not any(m.path.startswith(p) for p in own)]


def locate_input(location: str, output: str, held: HeldInput) -> list[str]:
    """The held input's files under `location`: the file whose size and sha256 match, and for a
    MIRAX slide its folder's files, for a DICOM-WSI slide the other instances of its series."""
    files = _input_files(location, output)
    first = next(
        (path for path, size in files if size == held.input_size and sha256_and_head(path, 0)[0] == held.input_sha256),
        None,
    )
    if first is None:
        raise ConfigError(
            f"the held input {held.input_sha256[:12]} is not under --input (no file of its size and sha256); "
            "give the run's input location"
        )
    if held.subtype == "mrxs":
        folder = unit_folder(first)
        return [first, *sorted(path for path, _ in files if path.startswith(folder + "/"))]
    if held.subtype == "dicom-wsi":
        series = _series(first)
        return [first, *sorted(p for p, _ in files if p != first and p.endswith(".dcm") and _series(p) == series)]
    return [first]


def _series(path: str) -> str:
    with contextlib.suppress(Exception), open_input(path) as handle:
        ds = pydicom.dcmread(handle, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"], force=True)
        return str(ds.get("SeriesInstanceUID", "") or "")
    return ""


# -- the checks -------------------------------------------------------------------------------------


def _settings(output: str, held: HeldInput, location: str) -> RunSettings:
    return RunSettings(
        output=output,
        key_token=DeidKey.generate().to_token(),
        profile=held.profile_settings(),
        input_root=None if is_glob(location) else location,
    )


def recheck(output: str, held: HeldInput, paths: Sequence[str], location: str) -> list[LeakHit]:
    """The run's leak check again, on the held outputs against the input's identifying values."""
    settings = _settings(output, held, location)
    if held.kind == "dicom":
        data = read_all(paths[0], settings.limits.max_file_bytes)
        payload = read_object(output_path(output, held.held_paths()[0]))
        return list(rescan_instance(data, payload, settings, InstanceSource(held.input_sha256, paths[0])))
    values = harvest_slide(paths, held.subtype, settings.input_root, settings.profile, open_input)
    with tempfile.TemporaryDirectory(prefix="deid-review-") as local:
        for relpath in held.outputs:
            target = os.path.join(local, *relpath.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with (
                FileSystems.open(
                    output_path(output, held_relpath(held.input_sha256, relpath)), compression_type=RAW
                ) as src,
                open(target, "wb") as dst,
            ):
                shutil.copyfileobj(src, dst, 8 * 1024 * 1024)
        return scan_outputs(local, held.outputs, values)


# -- decisions --------------------------------------------------------------------------------------


def approve(output: str, held: HeldInput, location: str, review_id: str, destination: str | None) -> Outcome:
    sha = held.input_sha256
    paths = locate_input(location, output, held)
    hits = recheck(output, held, paths, location)
    details = {**held.details, "review": held.reason, "review_id": review_id}
    if hits:
        for index, relpath in enumerate(held.outputs):
            publish_object(
                output_path(output, held_relpath(sha, relpath)), output, quarantine_relpath(sha, relpath, index)
            )
        message = summarize(hits)
        dead = DeadLetterRecord(sha, "leak", message, held.kind)  # type: ignore[arg-type]
        return Outcome(
            replace(dead.to_audit(), reviewed="approved"), dead, f"{sha[:12]}: quarantined ({message})", "quarantined"
        )
    if held.destination == "dicomweb":
        if not destination:
            raise ConfigError(f"{sha[:12]} was held on its way to a DICOMweb destination: give --dicomweb_destination")
        store_bytes(make_client(destination), [read_object(output_path(output, p)) for p in held.held_paths()])
        outputs = [DICOMWEB_PREFIX + relpath for relpath in held.outputs]
    else:
        conflict = _conflict(output, held)
        if conflict is not None:
            dead = DeadLetterRecord(sha, conflict.error_kind, str(conflict), held.kind)  # type: ignore[arg-type]
            return Outcome(
                replace(dead.to_audit(), reviewed="approved"), dead, f"{sha[:12]}: {conflict}", "uid_conflict"
            )
        outputs = [publish_object(output_path(output, held_relpath(sha, r)), output, r) for r in held.outputs]
    audit = AuditRecord(sha, held.kind, "ok", tuple(outputs), held.actions, details=details, reviewed="approved")  # type: ignore[arg-type]
    return Outcome(audit, None, f"{sha[:12]}: published {', '.join(outputs)}", "published")


def _conflict(output: str, held: HeldInput) -> UidConflictError | None:
    """A DICOM output path that already holds a different file (two inputs never share a path)."""
    if held.kind != "dicom":
        return None
    for relpath in held.outputs:
        final = output_path(output, relpath)
        if FileSystems.exists(final):
            mine = read_object(output_path(output, held_relpath(held.input_sha256, relpath)))
            if read_object(final) != mine:
                return UidConflictError(
                    "another input was published under this instance's output path (the same SOPInstanceUID, "
                    "different content); check the two inputs and de-identify this one separately"
                )
    return None


def reject(held: HeldInput, review_id: str) -> Outcome:
    sha = held.input_sha256
    message = (
        f"rejected in review {review_id}: a reviewer found the output not fit to publish; the reason is in "
        "review/decisions.jsonl"
    )
    dead = DeadLetterRecord(sha, REJECTED, message, held.kind)  # type: ignore[arg-type]
    return Outcome(replace(dead.to_audit(), reviewed="rejected"), dead, f"{sha[:12]}: rejected", "rejected")


def redact(output: str, held: HeldInput, boxes: Sequence[Box], frame: int | None) -> tuple[HeldInput, str]:
    """Black out `boxes` (on `frame`, or every frame) in the held DICOM instance, re-render its
    previews and update review.json: pending candidates the boxes cover become `covered`."""
    if held.kind != "dicom":
        raise ConfigError(
            "a held slide cannot be re-rendered here: re-run it with --redact_regions "
            f"'{{\"{held.input_sha256}\": [[x, y, w, h]]}}', or approve or reject it"
        )
    if frame is not None and not 0 <= frame < held.frames:
        raise ConfigError(f"--frame must be from 0 to {held.frames - 1}")
    width, height = held.image_size
    for box in boxes:
        if box.x + box.width > width or box.y + box.height > height:
            raise ConfigError(f"box {box.as_list()} does not lie inside the {width} x {height} image")
    held_path = output_path(output, held.held_paths()[0])
    held_ds = pydicom.dcmread(io.BytesIO(read_object(held_path)))
    frames = None if frame is None else frozenset({frame})
    ds, _, _ = redact_dicom_frames(held_ds, RedactionConfig(regions=tuple(boxes)), frames=frames)
    payload = write_dicom(ds)
    candidates = _settle_with(held.candidates, boxes, frame)
    previews = dicom_previews(pydicom.dcmread(io.BytesIO(payload)), candidates)
    folder = held_dir(held.input_sha256)
    write_atomically(output, held.held_paths()[0], payload)
    for preview, png in previews:
        write_atomically(output, f"{folder}/{preview.file}", png)
    updated = replace(held, candidates=candidates, previews=tuple(p for p, _ in previews))
    write_atomically(output, f"{folder}/{REVIEW_JSON}", updated.to_json().encode("utf-8"))
    where = "every frame" if frame is None else f"frame {frame}"
    return (
        updated,
        f"{held.input_sha256[:12]}: {len(boxes)} box(es) redacted on {where}, {len(updated.pending)} pending",
    )


def _settle_with(
    candidates: Sequence[ReviewCandidate], boxes: Sequence[Box], frame: int | None
) -> tuple[ReviewCandidate, ...]:
    """The candidates after a reviewer's boxes: pending ones they cover become covered; the boxes are
    added as redacted `reviewer` candidates."""
    out = []
    for candidate in candidates:
        applies = frame is None or (candidate.frame or 0) == frame
        if candidate.status == "pending" and applies:
            (settled,) = settle([Candidate(candidate.box, candidate.score, candidate.kind, "pending")], 1.01, boxes)
            candidate = replace(candidate, status="covered" if settled.status == "covered" else "pending")
        out.append(candidate)
    start = max((c.number for c in candidates), default=0) + 1
    added = [
        ReviewCandidate(start + index, box, 1.0, "reviewer", "redacted", frame=frame) for index, box in enumerate(boxes)
    ]
    return tuple(out + added)


def remove_held(output: str, held: HeldInput) -> None:
    """Remove a decided input's folder under review/ (review.json first, so it is never listed half)."""
    folder = output_path(output, held_dir(held.input_sha256))
    with contextlib.suppress(Exception):
        FileSystems.delete([output_path(output, f"{held_dir(held.input_sha256)}/{REVIEW_JSON}")])
    with contextlib.suppress(Exception):
        if "://" not in folder:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            matched = FileSystems.match([folder.rstrip("/") + "/**"])[0].metadata_list
            if matched:
                FileSystems.delete([m.path for m in matched])
