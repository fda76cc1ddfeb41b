"""Print a run summary from OUTPUT/audit and OUTPUT/dead_letter (counts only, never values)."""

from __future__ import annotations

import json
import sys
from collections import Counter

from apache_beam.io.filesystems import FileSystems


def _records(output: str, folder: str) -> list[dict]:
    pattern = FileSystems.join(output, folder, "*.jsonl")
    records: list[dict] = []
    for match in FileSystems.match([pattern])[0].metadata_list:
        with FileSystems.open(match.path) as handle:
            records += [json.loads(line) for line in handle.read().decode("utf-8").splitlines() if line.strip()]
    return records


def summarize(output: str) -> str:
    audit = _records(output, "audit")
    dead = _records(output, "dead_letter")
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
        f"results:           {output}",
        f"  audit:           {FileSystems.join(output, 'audit')}",
        f"  dead letters:    {FileSystems.join(output, 'dead_letter')}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(summarize(sys.argv[1] if len(sys.argv) > 1 else "demo_out"))
