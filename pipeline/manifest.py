"""The run manifest: OUTPUT/runs/<run_id>.json, one file per run, written once when the run ends.

It says which record files belong to the run, the options it ran with (never a secret), when it
started and ended, how it ended, and its counts per status and error kind, read back from its own
audit file. Like every record, it is only ever added: no run rewrites another run's manifest.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections import Counter
from typing import Any

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.options import DeidOptions, option_names
from transforms.files import output_path, write_record
from transforms.records import AUDIT_RELPATH, DEAD_LETTER_RELPATH

MANIFEST_RELPATH = "runs/{run_id}.json"
# Options whose values are secrets or could name patients are recorded as set / not set only.
_REDACTED = frozenset(
    {"deid_key_file", "deid_key_secret", "input", "output", "linkage_output", "redact_regions", "scratch_location"}
)


def new_run_id(now: dt.datetime | None = None) -> str:
    """'20261201T095821Z-1a2b3c4d': sorts by start time, unique across concurrent runs."""
    now = now or dt.datetime.now(dt.UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def options_record(options: PipelineOptions) -> dict[str, Any]:
    """Our options as the run used them; locations and secrets only as whether they were given."""
    values = options.view_as(DeidOptions).get_all_options(drop_default=False, retain_unknown_options=False)
    return {
        name: (bool(values[name]) if name in _REDACTED else values[name]) for name in option_names() if name in values
    }


def counts(output: str, run_id: str) -> dict[str, Any]:
    """Per status, kind and error kind, from this run's own audit file (empty if it was not written)."""
    path = output_path(output, AUDIT_RELPATH.format(run_id=run_id))
    status: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    if FileSystems.exists(path):
        with FileSystems.open(path) as handle:
            for line in handle.read().decode("utf-8").splitlines():
                if line.strip():
                    record = json.loads(line)
                    status[record["status"]] += 1
                    kinds[record.get("kind", "unknown")] += 1
                    if record.get("error_kind"):
                        errors[record["error_kind"]] += 1
    return {"inputs": sum(status.values()), "status": dict(status), "kind": dict(kinds), "error_kind": dict(errors)}


def write_manifest(
    output: str, run_id: str, options: PipelineOptions, started: dt.datetime, outcome: str, exit_status: int
) -> str:
    """Write OUTPUT/runs/<run_id>.json; `outcome` is 'completed', 'submitted' (remote runner) or 'failed'."""
    body = {
        "run_id": run_id,
        "started": started.isoformat(timespec="seconds"),
        "ended": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "outcome": outcome,
        "exit_status": exit_status,
        "records": {
            "audit": AUDIT_RELPATH.format(run_id=run_id),
            "dead_letter": DEAD_LETTER_RELPATH.format(run_id=run_id),
        },
        "counts": counts(output, run_id) if outcome == "completed" else {},
        "options": options_record(options),
    }
    return write_record(
        output, MANIFEST_RELPATH.format(run_id=run_id), json.dumps(body, indent=2, sort_keys=True).encode()
    )
