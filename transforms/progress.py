"""The progress side channel of a local run: DoFns append event counts to files the launcher reads.

Beam's metrics of a local run can only be read once `pipeline.run()` has returned (the FnApiRunner
runs the whole job inside that call), so a live display needs a channel of its own. Each worker
process (the launcher itself in `in_memory` mode, each SDK worker process in `multi_processing`
mode) appends lines `"<event> <count>\\n"` to its own file `<dir>/<pid>.log`, one `os.write` of an
`O_APPEND` descriptor per line, so threads of one process never interleave a line either.
`pipeline.progress` sums the files. The directory is local to the launcher's machine; remote
runners get no progress directory (`RunSettings.progress_dir` is None) and so no taps at all.

Events: `listed` (an input was listed), `ok`, `dead_letter`, `needs_review` (an input's outcome is
known), `tiles_total` (level-0 tiles of a slide that was opened), `tiles_done` (level-0 tiles
redacted). Counts only: no path, hash or value of an input is ever written. An outcome is counted
where it is first known, so that the count moves while the work is done: a DICOM instance when it
is de-identified and staged (`tap_outcomes` in `transforms.dicom.deidentify_instances`; an instance
that then fails to publish moves from `ok` to `dead_letter`: a count may be negative), a slide when
it is written, a listing failure when it is listed (`tap_branch` in `pipeline.main`). Beam's
FnApiRunner runs a pipeline stage after stage, and the DICOM audit records only exist after the
stage that groups instances by output path.

A tap counts the elements it sees and writes at most every FLUSH_SECONDS and at the end of each
bundle. A bundle that Beam retries may count twice; the display is an estimate, the final summary
(`pipeline.summary`) is read from the run's records.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable

import apache_beam as beam
import numpy as np

from transforms.common import DeidOutputs

EVENTS = ("listed", "ok", "dead_letter", "needs_review", "tiles_total", "tiles_done")
FLUSH_SECONDS = 0.5
_DESCRIPTORS: dict[tuple[int, str], int] = {}


def append_counts(directory: str, counts: dict[str, int]) -> None:
    """Append one line per non-zero count to this process's file under `directory`."""
    text = "".join(f"{event} {count}\n" for event, count in counts.items() if count)
    if not text:
        return
    key = (os.getpid(), directory)
    descriptor = _DESCRIPTORS.get(key)
    if descriptor is None:
        path = os.path.join(directory, f"{os.getpid()}.log")
        descriptor = _DESCRIPTORS[key] = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.write(descriptor, text.encode("ascii"))


class _CountEvents(beam.DoFn):
    """element -> nothing; adds `events(element)` to the progress files."""

    def __init__(self, directory: str, events: Callable[[object], Iterable[tuple[str, int]]]) -> None:
        self._directory = directory
        self._events = events

    def start_bundle(self) -> None:
        self._pending: Counter[str] = Counter()
        self._flushed = time.monotonic()

    def process(self, element: object) -> Iterable[None]:
        for event, count in self._events(element):
            self._pending[event] += count
        if time.monotonic() - self._flushed >= FLUSH_SECONDS:
            self._flush()
        return ()

    def finish_bundle(self) -> None:
        self._flush()

    def _flush(self) -> None:
        with contextlib.suppress(OSError):  # progress is only a display: a full disk must not fail the run
            append_counts(self._directory, dict(self._pending))
        self._pending.clear()
        self._flushed = time.monotonic()


def one(event: str) -> Callable[[object], Iterable[tuple[str, int]]]:
    """Each element counts 1 towards `event`."""

    def events(_element: object) -> Iterable[tuple[str, int]]:
        return ((event, 1),)

    return events


def by_status(record: object) -> Iterable[tuple[str, int]]:
    """An AuditRecord counts towards its status (ok, dead_letter, needs_review)."""
    status = str(getattr(record, "status", "") or "")
    return ((status, 1),) if status in EVENTS else ()


def slide_tiles(job: object) -> Iterable[tuple[str, int]]:
    """A SlideJob counts its level-0 tiles towards `tiles_total`."""
    levels = getattr(job, "levels", ())
    return (("tiles_total", int(levels[0].tile_count)),) if levels else ()


def level0_tiles(element: object) -> Iterable[tuple[str, int]]:
    """The level-0 tiles a band resolved (a BlockResult's index entries of level 0; a level-0
    TileRecord is one) count towards `tiles_done`."""
    entries = getattr(element, "entries", None)
    if callable(entries):
        return (("tiles_done", int(np.count_nonzero(entries()["level"] == 0))),)
    return (("tiles_done", 1),) if getattr(element, "level", None) == 0 else ()


def unpublished(_record: object) -> Iterable[tuple[str, int]]:
    """A staged instance counted `ok` that failed to publish (uid_conflict, say) is a dead letter."""
    return (("ok", -1), ("dead_letter", 1))


def tap(
    pcoll: beam.PCollection, label: str, directory: str | None, events: Callable[[object], Iterable[tuple[str, int]]]
) -> None:
    """Count `pcoll`'s elements into the progress files; nothing at all without a directory."""
    if directory:
        _ = pcoll | label >> beam.ParDo(_CountEvents(directory, events))


def tap_outcomes(
    directory: str | None,
    ok: beam.PCollection,
    needs_review: beam.PCollection,
    dead_letters: Iterable[beam.PCollection],
    unpublished_later: beam.PCollection,
) -> None:
    """The outcomes of the DICOM per-instance DoFn, as they come (see the module docstring)."""
    tap(ok, "ProgressStaged", directory, one("ok"))
    tap(needs_review, "ProgressHeld", directory, one("needs_review"))
    for index, dead in enumerate(dead_letters):
        tap(dead, f"ProgressDeadLetters{index}", directory, one("dead_letter"))
    tap(unpublished_later, "ProgressUnpublished", directory, unpublished)


def tap_branch(outputs: DeidOutputs, label: str, directory: str | None) -> None:
    """A branch's outcomes from its audit records and dead letters."""
    tap(outputs.audit, f"{label}Done", directory, by_status)
    tap(outputs.dead_letters, f"{label}DeadLetters", directory, one("dead_letter"))
