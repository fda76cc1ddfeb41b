"""Records of the event mode: new files per window, and a marker per recorded input.

For each window (and each firing of it: a local round, a late pane) the event mode writes, under
OUTPUT, files that no other window or run writes:

    audit/audit-<run id>-<window start>-r<round>p<pane>.jsonl
    dead_letter/dead_letter-<run id>-<window start>-r<round>p<pane>.jsonl
    runs/<run id>/window-<window start>-r<round>p<pane>.json      (the run manifest's entry for it)
    events/recorded/<input_sha256>/<run id>-<window start>-r<round>p<pane>   (empty; one per input)

The marker says "this OUTPUT has a record of this input"; its name says which window wrote it. A
record whose input already has a marker from another window (a redelivered message, a file noticed
again, a later job) is dropped, so each input is recorded once per OUTPUT; a retry of the same
window finds only its own markers and writes the same files again. Markers are found by listing
(storage.objects.list), never read: on the Terraform deployment workers cannot read records.
Record lines are sorted and the files written whole (`transforms.files.write_record`: uploaded
straight to their name on Cloud Storage, never replacing an object).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from deid.records import AuditRecord, DeadLetterRecord
from transforms.common import METRICS_NAMESPACE, fail_if_out_of_space
from transforms.files import output_path, write_record
from transforms.round_feed import round_number

AUDIT = "audit/audit-{name}.jsonl"
DEAD_LETTER = "dead_letter/dead_letter-{name}.jsonl"
WINDOW_MANIFEST = "runs/{run_id}/window-{part}.json"
MARKER_DIR = "events/recorded/{sha}"


def window_part(start: dt.datetime, round_: int, pane: int) -> str:
    """'20261201T112300Z-r0p0': the window's start (UTC), the local round and the pane index."""
    return f"{start:%Y%m%dT%H%M%SZ}-r{round_}p{pane}"


def recorded_elsewhere(output: str, sha256: str, own_name: str | None) -> bool:
    """Whether OUTPUT holds a marker of this input written by a window other than `own_name`."""
    folder = output_path(output, MARKER_DIR.format(sha=sha256))
    try:
        found = FileSystems.match([folder + "/*"])[0].metadata_list
    except Exception:  # noqa: BLE001 - Beam raises BeamIOError for a prefix that matches nothing
        return False
    return any(m.path.rsplit("/", 1)[-1] != own_name for m in found)


def _line(record: AuditRecord | DeadLetterRecord, kind: str) -> tuple[str, tuple[str, str, str]]:
    fail_if_out_of_space(record.error_kind)
    return "records", (kind, record.input_sha256, record.to_json())


class _WriteWindowFn(beam.DoFn):
    """('records', [(kind, input_sha256, json line)]) of one window -> the relpaths written."""

    def __init__(self, output: str, run_id: str, feed_id: str | None) -> None:
        self._output = output
        self._run_id = run_id
        self._feed_id = feed_id

    def process(
        self,
        group: tuple[str, Iterable[tuple[str, str, str]]],
        win: Any = beam.DoFn.WindowParam,
        pane: Any = beam.DoFn.PaneInfoParam,
    ) -> Iterator[str]:
        start = dt.datetime.fromtimestamp(float(win.start), dt.UTC)
        round_ = round_number(self._feed_id)
        part = window_part(start, round_, int(pane.index))
        name = f"{self._run_id}-{part}"
        lines: dict[str, dict[str, str]] = {"audit": {}, "dead_letter": {}}
        for kind, sha256, line in sorted(group[1]):
            lines[kind].setdefault(sha256, line)
        inputs = set(lines["audit"]) | set(lines["dead_letter"])
        again = {sha for sha in inputs if recorded_elsewhere(self._output, sha, name)}
        if again:
            Metrics.counter(METRICS_NAMESPACE, "events_records_dropped_already_recorded").inc(len(again))
        files: dict[str, str] = {}
        counts: dict[str, Counter[str]] = {"status": Counter(), "kind": Counter(), "error_kind": Counter()}
        for kind, template in (("audit", AUDIT), ("dead_letter", DEAD_LETTER)):
            kept = [line for sha, line in sorted(lines[kind].items()) if sha not in again]
            if not kept:
                continue
            files[kind] = template.format(name=name)
            yield write_record(self._output, files[kind], "".join(f"{line}\n" for line in kept).encode("utf-8"))
            if kind == "audit":
                for line in kept:
                    record = json.loads(line)
                    counts["status"][record["status"]] += 1
                    counts["kind"][record.get("kind", "unknown")] += 1
                    if record.get("error_kind"):
                        counts["error_kind"][record["error_kind"]] += 1
        for sha in sorted(inputs - again):
            write_record(self._output, f"{MARKER_DIR.format(sha=sha)}/{name}", b"")
        manifest = {
            "run_id": self._run_id,
            "window": {
                "start": start.isoformat(timespec="seconds"),
                "end": dt.datetime.fromtimestamp(float(win.end), dt.UTC).isoformat(timespec="seconds"),
                "round": round_,
                "pane": int(pane.index),
            },
            "records": files,
            "counts": {"inputs": sum(counts["status"].values()), **{k: dict(v) for k, v in counts.items()}},
            "already_recorded": len(again),
        }
        relpath = WINDOW_MANIFEST.format(run_id=self._run_id, part=part)
        yield write_record(self._output, relpath, json.dumps(manifest, indent=2, sort_keys=True).encode())


class WriteWindowRecords(beam.PTransform):
    """(PCollection[AuditRecord], PCollection[DeadLetterRecord]) in FixedWindows -> PCollection[str] of
    the relpaths written, per window (module docstring). A window without records writes nothing.
    `feed_id`: a local event run's rounds, whose number is part of the names; None (Dataflow): 0."""

    def __init__(self, output: str, run_id: str, feed_id: str | None = None) -> None:
        super().__init__()
        self._output = output
        self._run_id = run_id
        self._feed_id = feed_id

    def expand(self, pcolls: tuple[beam.PCollection, beam.PCollection]) -> beam.PCollection:
        audit, dead = pcolls
        return (
            (
                audit | "KeyAudit" >> beam.Map(_line, "audit"),
                dead | "KeyDeadLetters" >> beam.Map(_line, "dead_letter"),
            )
            | "AllLines" >> beam.Flatten()
            | "ByWindow" >> beam.GroupByKey()
            | "WriteFiles" >> beam.ParDo(_WriteWindowFn(self._output, self._run_id, self._feed_id))
        )
