"""Print a summary of the newest run under OUTPUT from its manifest and record files (counts only,
never values)."""

from __future__ import annotations

import json
import sys
from collections import Counter

from apache_beam.io.filesystems import FileSystems


def _newest_manifest(output: str) -> dict:
    matches = FileSystems.match([FileSystems.join(output, "runs", "*.json")])[0].metadata_list
    if not matches:
        raise SystemExit(f"no run manifest under {output}/runs/")
    with FileSystems.open(max(m.path for m in matches)) as handle:  # run ids sort by start time
        return json.loads(handle.read())


def _records(output: str, relpath: str) -> list[dict]:
    with FileSystems.open(FileSystems.join(output, *relpath.split("/"))) as handle:
        return [json.loads(line) for line in handle.read().decode("utf-8").splitlines() if line.strip()]


def summarize(output: str) -> str:
    manifest = _newest_manifest(output)
    audit = _records(output, manifest["records"]["audit"])
    dead = _records(output, manifest["records"]["dead_letter"])
    ok = [r for r in audit if r["status"] == "ok"]
    actions: Counter[str] = Counter()
    for record in ok:
        actions.update(record.get("actions", {}))
    kinds = Counter(r["kind"] for r in audit)
    lines = [
        f"inputs read:       {len(audit)} ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))})",
        f"de-identified:     {len(ok)} inputs, {sum(len(r['outputs']) for r in ok)} output files",
        f"dead-lettered:     {len(dead)}"
        + (
            f" ({', '.join(f'{k} {v}' for k, v in sorted(Counter(d['error_kind'] for d in dead).items()))})"
            if dead
            else ""
        ),
        "actions:",
        *(f"  {name:<28} {count}" for name, count in sorted(actions.items())),
        f"run:               {manifest['run_id']} ({manifest['outcome']})",
        f"results:           {output}",
        f"  audit:           {FileSystems.join(output, 'audit')}",
        f"  dead letters:    {FileSystems.join(output, 'dead_letter')}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(summarize(sys.argv[1] if len(sys.argv) > 1 else "demo_out"))
