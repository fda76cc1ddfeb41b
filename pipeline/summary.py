"""The run summary the job prints when a local run ends (and `scripts/summarize_run.py OUTPUT` reprints).

Read from the run's own manifest and record files: inputs per kind, counts per status and per error
kind, per-action totals over the de-identified inputs, and where the results are. Counts and
locations given by the user only, never a value or name read from an input.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from apache_beam.io.filesystems import FileSystems

from pipeline.manifest import MANIFEST_RELPATH


@dataclass
class RunTotals:
    """What the summary says, gathered from one run's audit file."""

    status: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    error_kinds: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    outputs: Counter[str] = field(default_factory=Counter)  # output files by top folder (dicom, wsi)

    @property
    def inputs(self) -> int:
        return sum(self.status.values())

    def add(self, record: dict[str, Any]) -> None:
        status = str(record.get("status", ""))
        self.status[status] += 1
        self.kinds[str(record.get("kind", "unknown"))] += 1
        if record.get("error_kind"):
            self.error_kinds[str(record["error_kind"])] += 1
        if status == "ok":
            self.actions.update({name: int(value) for name, value in (record.get("actions") or {}).items() if value})
            for relpath in record.get("outputs") or ():
                self.outputs[str(relpath).split("/", 1)[0]] += 1


def _join(output: str, relpath: str) -> str:
    return FileSystems.join(output, *relpath.split("/"))


def newest_run_id(output: str) -> str:
    """The id of the newest run under OUTPUT (run ids sort by start time)."""
    matches = FileSystems.match([_join(output, "runs/*.json")])[0].metadata_list
    if not matches:
        raise FileNotFoundError("no run manifest under OUTPUT/runs/")
    newest = max(m.path for m in matches)
    return newest.rsplit("/", 1)[-1].removesuffix(".json")


def read_manifest(output: str, run_id: str) -> dict[str, Any]:
    with FileSystems.open(_join(output, MANIFEST_RELPATH.format(run_id=run_id))) as handle:
        manifest: dict[str, Any] = json.loads(handle.read())
    return manifest


def _records(output: str, relpath: str) -> Iterator[dict[str, Any]]:
    path = _join(output, relpath)
    if not FileSystems.exists(path):
        return
    with FileSystems.open(path) as handle:
        for line in io.TextIOWrapper(handle, encoding="utf-8"):
            if line.strip():
                yield json.loads(line)


def run_totals(output: str, manifest: dict[str, Any]) -> RunTotals:
    totals = RunTotals()
    for relpath in _record_files(manifest, "audit"):
        for record in _records(output, relpath):
            totals.add(record)
    return totals


def _record_files(manifest: dict[str, Any], name: str) -> list[str]:
    """A batch run's one record file of `name`, or an event run's, one per window (pipeline/events.py)."""
    files = manifest["records"][name]
    return [files] if isinstance(files, str) else list(files)


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counter.items()))


def summarize(output: str, run_id: str | None = None) -> str:
    """The summary of run `run_id` (default: the newest run) under OUTPUT."""
    run_id = run_id or newest_run_id(output)
    manifest = read_manifest(output, run_id)
    if manifest.get("outcome") == "submitted":
        return f"run {run_id} submitted: its records appear under {output} when the job ends"
    totals = run_totals(output, manifest)
    ok, dead, review = totals.status["ok"], totals.status["dead_letter"], totals.status["needs_review"]
    lines = [
        f"run {run_id} ({manifest.get('outcome', 'unknown')})",
        f"inputs:            {totals.inputs}" + (f" ({_counts(totals.kinds)})" if totals.kinds else ""),
        f"de-identified:     {ok} inputs, {sum(totals.outputs.values())} output files"
        + (f" ({_counts(totals.outputs)})" if totals.outputs else ""),
        f"dead-lettered:     {dead}" + (f" ({_counts(totals.error_kinds)})" if totals.error_kinds else ""),
    ]
    if review:
        lines.append(f"held for review:   {review} (review/)")
    if totals.actions:
        lines.append("actions (de-identified inputs):")
        width = max(len(name) for name in totals.actions)
        lines += [f"  {name:<{width}}  {count}" for name, count in sorted(totals.actions.items())]
    lines += [f"results under {output}:", *_locations(output, manifest, totals)]
    return "\n".join(lines)


def _locations(output: str, manifest: dict[str, Any], totals: RunTotals) -> list[str]:
    records = manifest["records"]
    rows = [(name, f"{folder}/") for name, folder in (("DICOM", "dicom"), ("slides", "wsi")) if totals.outputs[folder]]
    if totals.error_kinds.get("leak"):
        rows.append(("quarantined", "quarantine/"))
    if totals.status["needs_review"]:
        rows.append(("for review", "review/"))
    if isinstance(records["audit"], str):
        rows += [("audit", records["audit"]), ("dead letters", records["dead_letter"])]
    else:  # an event run: files per window, listed in its window entries
        rows += [("audit", "audit/"), ("dead letters", "dead_letter/"), ("windows", str(manifest["windows"]))]
    if (manifest.get("options") or {}).get("qa_report"):
        rows.append(("QA page", "qa/index.html"))
    rows.append(("manifest", MANIFEST_RELPATH.format(run_id=manifest["run_id"])))
    width = max(len(name) for name, _ in rows) + 1
    return [f"  {name + ':':<{width}} {_join(output, relpath)}" for name, relpath in rows]


def summary_or_note(output: str, run_id: str) -> str:
    """The summary, or one line saying why it cannot be shown (the run itself has completed)."""
    try:
        return summarize(output, run_id)
    except Exception as exc:  # noqa: BLE001 - a summary that cannot be read must not fail a completed run
        return f"(no summary: the run's records could not be read back, {type(exc).__name__})"
