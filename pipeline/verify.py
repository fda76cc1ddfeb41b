"""Check an existing output tree for leaks: `python -m pipeline.verify --input INPUT --output OUTPUT`.

Re-harvests identifying values from every input (DICOM attributes, private text, slide metadata
and vendor fields, MIRAX Slidedat.ini, path components; see deid/verify/harvest.py for the sources,
deid/verify/values.py and deid/verify/scan.py for the rules), matches outputs to inputs through the
audit records (input_sha256 -> outputs), and scans every file under OUTPUT, whatever its folder
(every DICOM element at every depth, every TIFF IFD's text tags and XMP, the raw bytes, the file
name; text files also with the metadata rule line by line). Records (audit/, dead_letter/, qa/,
runs/, and the review command's review/*.json, *.jsonl and index.html) are searched for the values of
every input, as text, with the run and review ids and the manifest's start and end times and the
decisions' times blanked (they hold the run's date). Outputs no audit record accounts for (a
stray copy under OUTPUT/extra/) are scanned for the values of every input. OUTPUT/quarantine/ is
only counted and reported, never scanned: the run's own leak check put leaking outputs there.

Pass the same profile options as the run (`--retain_long_full_dates`, `--keep ...`) so that
values the run was told to keep are not reported. OCR of labels is not repeated here: the run's own
check covers OCR text.

Exit status: 0 clean; 1 leaks found (one line per hit: the output and the kind of value, never the
value), and only then; 2 when the check cannot be made, with one line and no traceback: bad
arguments, an empty OUTPUT, an INPUT that matches nothing, or inputs it cannot vouch for - an input
it cannot read, one whose claimed format (DICOM, TIFF) it cannot parse, a directory under INPUT it
cannot list. That line gives counts and exception types, never a path or a value. Inputs and outputs
that are not regular files (FIFOs, sockets, devices) are skipped unopened, with a warning naming
their number.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import stat
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pydicom
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from deid.classify import HEAD_BYTES, classify_head
from deid.errors import ConfigError, NotARegularFileError, UnreadableInputError
from deid.keys import DeidKey
from deid.settings import ProfileSettings, is_glob
from deid.verify.harvest import (
    MAX_SLIDEDAT_BYTES,
    harvest_dicom,
    harvest_path,
    harvest_slidedat,
    harvest_tiff_metadata,
    is_slidedat,
)
from deid.verify.scan import TEXT_SNIFF_BYTES, looks_like_text, scan_output, scan_text_output
from deid.verify.tiffwalk import TiffParseError
from deid.verify.values import LeakHit, PhiValue
from pipeline.cli import HelpFormatter, OneLineParser
from pipeline.main import settings_from_options
from pipeline.options import DeidOptions, check_argv
from transforms.files import RAW, TMP_DIR, read_all, sha256_and_head
from transforms.listing import check_regular_file, input_pattern, walk_local

_LOG = logging.getLogger("deid.verify")
QUARANTINE = "quarantine"
RECORD_FOLDERS = ("audit", "dead_letter", "qa", "runs")
# What the run writes into records by itself (pipeline/manifest.py): run ids ('20261201T095821Z-1a2b3c4d',
# also in record file names) and the manifest's start and end times. They hold the run's date, which
# may equal an input's date by coincidence; blanked before records are searched.
# Review decisions (review/decisions.jsonl) carry review ids of that form and a "when" time too.
RECORD_MACHINE_TEXT = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{8}|\"(?:started|ended|when)\": \"[^\"]{0,40}\"")
MAX_DICOM_HARVEST_BYTES = 2 * 1024**3
UNREADABLE = "unreadable"
UNLISTABLE = "directory that could not be listed"
MALFORMED_DICOM = "not parsable as the DICOM it claims to be"
MALFORMED_TIFF = "not parsable as the TIFF it claims to be"


@dataclass(frozen=True)
class HarvestedInput:
    path: str = field(repr=False)  # an input path can carry PHI
    sha256: str
    kind: str
    values: frozenset[PhiValue] = field(repr=False)


class UnusableInput(Exception):
    """One input whose identifying values verify cannot know; `problem` says why (no path)."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


class UnusableInputs(Exception):
    """The inputs verify cannot vouch for, counted by problem: it refuses to call the tree clean."""

    def __init__(self, problems: Counter[str]) -> None:
        self.problems = problems
        parts = ", ".join(f"{count} {problem}" for problem, count in sorted(problems.items()))
        super().__init__(
            f"the inputs cannot all be checked ({parts}); verify needs every input of the run readable "
            "and in the format it claims: fix their permissions, or leave out of --input the inputs the "
            "run dead-lettered"
        )


def harvest_input(path: str, input_root: str | None, profile: ProfileSettings) -> HarvestedInput:
    """Identifying values of one input object, by content (never by extension).

    Raises NotARegularFileError (never opened) or UnusableInput (cannot be read or parsed).
    """
    try:
        check_regular_file(path)
    except UnreadableInputError:
        raise UnusableInput(UNREADABLE) from None
    try:
        sha256, head, size = sha256_and_head(path, HEAD_BYTES)
        kind, subtype = classify_head(head)
        values: set[PhiValue] = set(harvest_path(path, input_root))
        if kind == "dicom" or subtype == "dicom-wsi":
            values |= _harvest_dicom_path(path, profile, size)
        elif subtype == "tiff":
            with FileSystems.open(path, compression_type=RAW) as handle:
                values |= harvest_tiff_metadata(handle, strict=True)
        elif is_slidedat(path):
            with FileSystems.open(path, compression_type=RAW) as handle:
                values |= harvest_slidedat(handle.read(MAX_SLIDEDAT_BYTES))
    except (TiffParseError, ValueError):
        raise UnusableInput(MALFORMED_TIFF) from None
    except OSError:  # BeamIOError too; its text would name the path
        raise UnusableInput(UNREADABLE) from None
    return HarvestedInput(path, sha256, kind, frozenset(values))


def _harvest_dicom_path(path: str, profile: ProfileSettings, size: int) -> frozenset[PhiValue]:
    if size > MAX_DICOM_HARVEST_BYTES:
        return frozenset()
    data = read_all(path, MAX_DICOM_HARVEST_BYTES)
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True)
        return harvest_dicom(ds, profile)
    except Exception:  # noqa: BLE001 - pydicom's text may quote values: the kind of problem only
        raise UnusableInput(MALFORMED_DICOM) from None


def _match(pattern: str) -> list[str]:
    try:
        results = FileSystems.match([pattern])
    except Exception:  # noqa: BLE001 - Beam raises BeamIOError for a missing folder
        return []
    return sorted(m.path for result in results for m in result.metadata_list)


def _relpath(output_root: str, path: str) -> str:
    root = output_root.rstrip("/") + "/"
    return path[len(root) :] if path.startswith(root) else path


def _listing(input_location: str, output_location: str) -> tuple[list[str], int]:
    """(input paths, number of directories under a local INPUT that could not be listed)."""
    output_prefix = output_location.rstrip("/") + "/"

    def own(path: str) -> bool:
        return path.startswith(output_prefix) or f"/{TMP_DIR}/" in path

    pattern = input_pattern(input_location)
    if "://" in pattern:
        return [p for p in _match(pattern) if not own(p)], 0
    walked = list(walk_local(pattern, own))
    return sorted(p for p, listed in walked if listed), sum(1 for _, listed in walked if not listed)


def list_inputs(input_location: str, output_location: str) -> list[str]:
    return _listing(input_location, output_location)[0]


def _regular(paths: Iterable[str]) -> list[str]:
    """Local outputs that are regular files (a FIFO would block the scan); others skipped, counted."""
    kept, skipped = [], 0
    for path in paths:
        if "://" in path or stat.S_ISREG(os.stat(path).st_mode):
            kept.append(path)
        else:
            skipped += 1
    if skipped:
        _LOG.warning("%d file(s) under --output are not regular files and were skipped", skipped)
    return kept


def read_audit(output_location: str) -> dict[str, list[str]]:
    """input_sha256 -> output relative paths, from OUTPUT/audit/*.jsonl."""
    outputs: dict[str, list[str]] = {}
    for path in _regular(_match(FileSystems.join(output_location, "audit", "*"))):
        with FileSystems.open(path, compression_type=RAW) as handle:
            for line in handle.read().decode("utf-8").splitlines():
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                outputs.setdefault(str(record.get("input_sha256", "")), []).extend(record.get("outputs") or [])
    return outputs


def harvest_inputs(input_location: str, output_location: str, profile: ProfileSettings) -> list[HarvestedInput]:
    """Every input's values; raises UnusableInputs if any input cannot be read or parsed."""
    input_root = None if is_glob(input_location) else input_location
    paths, unlistable = _listing(input_location, output_location)
    problems: Counter[str] = Counter({UNLISTABLE: unlistable} if unlistable else {})
    harvested, skipped = [], 0
    for path in paths:
        try:
            harvested.append(harvest_input(path, input_root, profile))
        except NotARegularFileError:
            skipped += 1
        except UnusableInput as exc:
            problems[exc.problem] += 1
    if skipped:
        _LOG.warning("%d input(s) are not regular files (FIFO, socket, device) and were skipped", skipped)
    if problems:
        raise UnusableInputs(problems)
    return harvested


def verify_tree(input_location: str, output_location: str, profile: ProfileSettings | None = None) -> list[LeakHit]:
    """Re-harvest every input and scan every output; the hits (never the values).

    Raises UnusableInputs (see harvest_inputs) and OSError for an output that cannot be read.
    """
    harvested = harvest_inputs(input_location, output_location, profile or ProfileSettings())
    by_sha = {h.sha256: h for h in harvested}
    every_value: frozenset[PhiValue] = frozenset().union(*(h.values for h in harvested)) if harvested else frozenset()
    owner: dict[str, frozenset[PhiValue]] = {}
    for sha, relpaths in read_audit(output_location).items():
        source = by_sha.get(sha)
        for relpath in relpaths:
            owner[relpath] = owner.get(relpath, frozenset()) | (source.values if source else every_value)
    hits: list[LeakHit] = []
    for path in _regular(_match(FileSystems.join(output_location, "**"))):
        relpath = _relpath(output_location, path)
        top = relpath.split("/", 1)[0]
        if top == QUARANTINE:
            continue  # counted by quarantined_outputs(), never scanned: leaks are expected there
        # The review command's own text files (decisions, review.json, the page) are records too.
        record = top in RECORD_FOLDERS or (top == "review" and relpath.endswith((".json", ".jsonl", ".html")))
        hits += _scan(path, relpath, every_value if record else owner.get(relpath, every_value), record)
    return hits


def quarantined_outputs(output_location: str) -> int:
    """How many outputs the run's leak check held back under OUTPUT/quarantine/ (not scanned)."""
    return len(_regular(_match(FileSystems.join(output_location, QUARANTINE, "**"))))


def _scan(path: str, relpath: str, values: Iterable[PhiValue], record: bool = False) -> list[LeakHit]:
    """scan_output, or scan_text_output for a file whose head is text (records, reports, notes)."""
    with FileSystems.open(path, compression_type=RAW) if "://" in path else open(path, "rb") as handle:
        head = handle.read(TEXT_SNIFF_BYTES)
        handle.seek(0)
        if looks_like_text(head):
            return scan_text_output(handle, relpath, values, RECORD_MACHINE_TEXT if record else None)
        return scan_output(handle, relpath, values)


def _profile_from(extra: Sequence[str], input_location: str, output_location: str) -> ProfileSettings:
    argv = [*extra, f"--input={input_location}", f"--output={output_location}"]
    check_argv(argv)
    options = PipelineOptions(argv)
    return settings_from_options(options.view_as(DeidOptions), DeidKey.generate()).profile


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m pipeline.verify",
        formatter_class=HelpFormatter,
        description="Scan a de-identified OUTPUT tree for identifying values of INPUT. "
        "Exit 0 clean, 1 leak, 2 when the check cannot be made.",
        epilog="Other arguments are the run's profile options (--retain_long_full_dates, --keep, ...).",
    )
    parser.add_argument("--input", required=True, help="The run's --input (directory, gs:// prefix or glob).")
    parser.add_argument("--output", required=True, help="The run's --output.")
    args, extra = parser.parse_known_args(sys.argv[1:] if argv is None else list(argv))
    try:
        profile = _profile_from(extra, args.input, args.output)
    except (ConfigError, SystemExit) as exc:
        print(f"error: bad profile options: {exc}", file=sys.stderr)
        return 2
    if not _match(FileSystems.join(args.output, "**")):
        print("error: --output holds no files; give the --output of a finished run", file=sys.stderr)
        return 2
    if not list_inputs(args.input, args.output):
        print("error: --input matches no files; give the --input of the run", file=sys.stderr)
        return 2
    try:
        hits = verify_tree(args.input, args.output, profile)
    except UnusableInputs as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, BeamIOError) as exc:  # its text would name the path: the type only
        print(f"error: a file under --output cannot be read ({type(exc).__name__}); check permissions", file=sys.stderr)
        return 2
    for hit in hits:
        print(hit.describe())
    quarantined = quarantined_outputs(args.output)
    if quarantined:
        print(f"QUARANTINE: {quarantined} output(s) held back under quarantine/ by the run (reported, not scanned)")
    outputs = {h.safe_output for h in hits}
    if hits:
        print(f"FAILED: {len(hits)} leak(s) in {len(outputs)} output(s)")
        return 1
    print("OK: no identifying input value found in any output")
    return 0


if __name__ == "__main__":
    sys.exit(main())
