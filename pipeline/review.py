"""Decide on inputs held for review: `python -m pipeline.review --output OUTPUT [decision]`.

    python -m pipeline.review --output OUTPUT                     list held inputs
    python -m pipeline.review --output OUTPUT --input INPUT --approve SHA [SHA ...]
    python -m pipeline.review --output OUTPUT --redact SHA --box x,y,w,h [--box ...] [--frame N]
    python -m pipeline.review --output OUTPUT --reject SHA [SHA ...] --reason TEXT
    python -m pipeline.review --output OUTPUT --render             rewrite review/index.html

OUTPUT is the run's output (local or gs://). SHA is an input's sha256 as review/index.html and the
listing show it (a unique prefix of 12 or more hex digits will do). --approve publishes the held
outputs into dicom/ or wsi/ (or stores them into --dicomweb_destination, for instances held on
their way there) after checking them again for the input's identifying values, which needs the
run's --input; --redact blacks out boxes in a held DICOM instance (image pixels; every frame
unless --frame) and re-renders it; --reject dead-letters the inputs `rejected_in_review`.

Every command that decides writes its own record files, named by a review id like a run id
(audit/audit-review-<id>.jsonl, dead_letter/dead_letter-review-<id>.jsonl; never another's), and
appends one line per decision to review/decisions.jsonl: id, when (UTC), who (--reviewer, or the OS
user), what, which input, the result, and for a reject the reason. The reason is the reviewer's
text: it must not quote what the image shows. review/index.html is rewritten after each command.

Exit status: 0 when every decision was carried out; 1 when an approval ended in a dead letter
(the leak check found a value again: quarantined; or the output path holds another input's
instance); 2 when nothing was done (bad arguments, an input not held, --input missing or not
holding the input), with one line naming the problem.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import sys
from collections.abc import Sequence

from apache_beam.io.filesystems import FileSystems

from deid.errors import ConfigError
from deid.records import AuditRecord, DeadLetterRecord
from deid.review.held import DECISIONS_RELPATH, HeldInput
from deid.settings import Box
from pipeline.manifest import new_run_id
from pipeline.review_actions import Outcome, approve, redact, reject, remove_held
from transforms.files import output_path, write_atomically, write_record
from transforms.review import list_held, read_object, write_review_page

AUDIT_RELPATH = "audit/audit-review-{review_id}.jsonl"
DEAD_LETTER_RELPATH = "dead_letter/dead_letter-review-{review_id}.jsonl"
MIN_PREFIX = 12


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.review",
        description="List, approve, redact or reject inputs held for human review under OUTPUT/review/.",
    )
    parser.add_argument("--output", required=True, help="The run's output: a local directory or gs:// prefix.")
    parser.add_argument("--input", help="The run's input location (needed by --approve, to check again).")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--approve", nargs="+", metavar="SHA", help="Publish these held inputs.")
    action.add_argument("--reject", nargs="+", metavar="SHA", help="Dead-letter these held inputs.")
    action.add_argument("--redact", metavar="SHA", help="Black out --box boxes in this held DICOM instance.")
    action.add_argument("--render", action="store_true", help="Rewrite OUTPUT/review/index.html.")
    parser.add_argument("--box", action="append", default=[], metavar="x,y,w,h", help="A box in image pixels.")
    parser.add_argument("--frame", type=int, help="With --redact: only this frame (0-based); default every frame.")
    parser.add_argument("--reason", help="With --reject: why (recorded in review/decisions.jsonl).")
    parser.add_argument("--reviewer", help="Who decides (default: the OS user).")
    parser.add_argument(
        "--dicomweb_destination", help="With --approve: DICOMweb URL for instances held on their way there."
    )
    return parser


def _box(text: str) -> Box:
    try:
        values = [int(v) for v in text.split(",")]
        if len(values) != 4:
            raise ValueError
        return Box(*values)
    except (ValueError, ConfigError):
        raise ConfigError(f"--box {text!r} must be four integers x,y,w,h with w, h > 0") from None


def _resolve(output: str, shas: Sequence[str]) -> list[HeldInput]:
    """The held inputs named by full hashes or unique prefixes; ConfigError for any other."""
    held = {h.input_sha256: h for h in list_held(output)}
    out = []
    for text in shas:
        prefix = text.strip().lower()
        if len(prefix) < MIN_PREFIX:
            raise ConfigError(f"give at least {MIN_PREFIX} hex digits of the sha256, not {len(prefix)}")
        if prefix in held:
            out.append(held[prefix])
            continue
        matches = [h for sha, h in held.items() if sha.startswith(prefix)]
        if len(matches) != 1:
            what = "no held input" if not matches else f"{len(matches)} held inputs"
            raise ConfigError(f"{prefix[:12]}... names {what} under OUTPUT/review/")
        out.append(matches[0])
    return out


def _append_decisions(output: str, lines: Sequence[dict[str, object]]) -> None:
    """Append to review/decisions.jsonl (an object store has no append: read, add, write whole)."""
    text = "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines)
    path = output_path(output, DECISIONS_RELPATH)
    if "://" not in output:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # One write of whole lines in append mode: concurrent reviewers never interleave within a line.
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(text)
        return
    before = read_object(path).decode("utf-8") if FileSystems.exists(path) else ""
    write_atomically(output, DECISIONS_RELPATH, (before + text).encode("utf-8"))


def _write_records(output: str, review_id: str, outcomes: Sequence[Outcome]) -> None:
    audits = [o.audit for o in outcomes if o.audit is not None]
    dead = [o.dead_letter for o in outcomes if o.dead_letter is not None]
    if audits:
        write_record(output, AUDIT_RELPATH.format(review_id=review_id), _lines(audits))
    if dead:
        write_record(output, DEAD_LETTER_RELPATH.format(review_id=review_id), _lines(dead))


def _lines(records: Sequence[AuditRecord | DeadLetterRecord]) -> bytes:
    return "".join(r.to_json() + "\n" for r in sorted(records, key=lambda r: r.input_sha256)).encode("utf-8")


def _list(output: str) -> int:
    held = list_held(output)
    if not held:
        print("nothing is held for review")
        return 0
    print("input_sha256                                                      kind   reason     pending  lowest  run")
    for item in held:
        scores = [c.score for c in item.pending]
        lowest = f"{min(scores):.2f}" if scores else "-"
        print(
            f"{item.input_sha256}  {item.kind:<5}  {item.reason:<9}  {len(item.pending):>3}/{len(item.candidates):<3}"
            f"  {lowest:>6}  {item.run_id}"
        )
    return 0


def run(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    output = args.output
    if args.render:
        print(f"wrote {write_review_page(output)}")
        return 0
    if not (args.approve or args.reject or args.redact):
        if args.box or args.reason or args.frame is not None:
            raise ConfigError("--box, --frame and --reason go with --redact or --reject")
        return _list(output)
    who = args.reviewer or getpass.getuser()
    review_id = new_run_id()
    when = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    decisions: list[dict[str, object]] = []
    outcomes: list[Outcome] = []
    if args.redact:
        boxes = [_box(text) for text in args.box]
        if not boxes:
            raise ConfigError("--redact needs at least one --box x,y,w,h")
        (held,) = _resolve(output, [args.redact])
        _, summary = redact(output, held, boxes, args.frame)
        decisions.append(
            {
                "id": review_id,
                "when": when,
                "who": who,
                "what": "redact",
                "input_sha256": held.input_sha256,
                "boxes": [b.as_list() for b in boxes],
                "frame": args.frame,
                "result": "redacted",
            }
        )
        _append_decisions(output, decisions)
        write_review_page(output)
        print(summary)
        return 0
    if args.reject and not (args.reason or "").strip():
        raise ConfigError("--reject needs --reason TEXT (it must not quote what the image shows)")
    if args.approve and not args.input:
        raise ConfigError("--approve needs --input INPUT (the run's input) to check the outputs again")
    targets = _resolve(output, args.approve or args.reject)
    for held in targets:
        if args.approve:
            outcome = approve(output, held, args.input, review_id, args.dicomweb_destination)
        else:
            outcome = reject(held, review_id)
        outcomes.append(outcome)
        line: dict[str, object] = {
            "id": review_id,
            "when": when,
            "who": who,
            "what": "approve" if args.approve else "reject",
            "input_sha256": held.input_sha256,
            "result": outcome.result,
        }
        if args.reject:
            line["reason"] = args.reason.strip()
        if outcome.audit is not None:
            line["outputs"] = list(outcome.audit.outputs)
        decisions.append(line)
    _write_records(output, review_id, outcomes)
    _append_decisions(output, decisions)
    for held in targets:
        remove_held(output, held)
    write_review_page(output)
    for outcome in outcomes:
        print(outcome.summary)
    print(f"records: {AUDIT_RELPATH.format(review_id=review_id)}; decisions: {DECISIONS_RELPATH}")
    failed = any(o.result in ("quarantined", "uid_conflict") for o in outcomes)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # argparse: usage already printed
        return 2 if exc.code else 0


if __name__ == "__main__":
    raise SystemExit(main())
