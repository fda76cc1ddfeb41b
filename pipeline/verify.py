"""Check an existing output tree for leaks: `python -m pipeline.verify --input INPUT --output OUTPUT`.

Re-harvests identifying values from every input (DICOM attributes, private text, slide metadata,
path components; see deid/verify/values.py and deid/verify/scan.py for the rules), matches outputs to inputs through the
audit records (input_sha256 -> outputs), and scans every file under OUTPUT/dicom/ and OUTPUT/wsi/
(every DICOM element at every depth, every TIFF IFD's text tags and XMP, the raw bytes, the file
name), plus the audit, dead-letter and QA files. Outputs no audit record accounts for (a stray
copy) are scanned for the values of every input. OUTPUT/quarantine/ is skipped: leaks are
expected there.

Pass the same profile options as the run (`--retain_long_full_dates`, `--keep ...`) so that
values the run was told to keep are not reported. Exit status: 0 clean, 1 leaks found (one line
per hit: the output and the kind of value, never the value), 2 bad arguments. OCR of labels is not
repeated here: the run's own check covers OCR text.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from apache_beam.io.filesystems import FileSystems

from deid.classify import HEAD_BYTES, classify_head
from deid.settings import ProfileSettings, is_glob
from deid.verify.harvest import harvest_dicom, harvest_path, harvest_tiff_metadata
from deid.verify.scan import scan_output
from deid.verify.values import LeakHit, PhiValue
from transforms.files import RAW, TMP_DIR, read_all, sha256_and_head
from transforms.listing import input_pattern

_LOG = logging.getLogger("deid.verify")
SCANNED_FOLDERS = ("dicom", "wsi")
TEXT_FOLDERS = ("audit", "dead_letter", "qa")
MAX_DICOM_HARVEST_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class HarvestedInput:
    path: str
    sha256: str
    kind: str
    values: frozenset[PhiValue]


def harvest_input(path: str, input_root: str | None, profile: ProfileSettings) -> HarvestedInput:
    """Identifying values of one input object, by content (never by extension)."""
    sha256, head, size = sha256_and_head(path, HEAD_BYTES)
    kind, subtype = classify_head(head)
    values: set[PhiValue] = set(harvest_path(path, input_root))
    if kind == "dicom" or subtype == "dicom-wsi":
        values |= _harvest_dicom_path(path, profile, size)
    elif subtype == "tiff":
        with FileSystems.open(path, compression_type=RAW) as handle:
            values |= harvest_tiff_metadata(handle)
    return HarvestedInput(path, sha256, kind, frozenset(values))


def _harvest_dicom_path(path: str, profile: ProfileSettings, size: int) -> frozenset[PhiValue]:
    import pydicom

    if size > MAX_DICOM_HARVEST_BYTES:
        return frozenset()
    try:
        data = read_all(path, MAX_DICOM_HARVEST_BYTES)
        ds = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True)
        return harvest_dicom(ds, profile)
    except Exception:  # noqa: BLE001 - an input pydicom cannot read was dead-lettered by the run
        return frozenset()


def _match(pattern: str) -> list[str]:
    try:
        results = FileSystems.match([pattern])
    except Exception:  # noqa: BLE001 - Beam raises BeamIOError for a missing folder
        return []
    return sorted(m.path for result in results for m in result.metadata_list)


def _relpath(output_root: str, path: str) -> str:
    root = output_root.rstrip("/") + "/"
    return path[len(root) :] if path.startswith(root) else path


def list_inputs(input_location: str, output_location: str) -> list[str]:
    output_prefix = output_location.rstrip("/") + "/"
    return [
        p
        for p in _match(input_pattern(input_location))
        if not p.startswith(output_prefix) and f"/{TMP_DIR}/" not in p
    ]


def read_audit(output_location: str) -> dict[str, list[str]]:
    """input_sha256 -> output relative paths, from OUTPUT/audit/*.jsonl."""
    outputs: dict[str, list[str]] = {}
    for path in _match(FileSystems.join(output_location, "audit", "*")):
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


def verify_tree(
    input_location: str, output_location: str, profile: ProfileSettings | None = None
) -> list[LeakHit]:
    """Re-harvest every input and scan every output; the hits (never the values)."""
    profile = profile or ProfileSettings()
    input_root = None if is_glob(input_location) else input_location
    harvested = [harvest_input(p, input_root, profile) for p in list_inputs(input_location, output_location)]
    by_sha = {h.sha256: h for h in harvested}
    every_value: frozenset[PhiValue] = frozenset().union(*(h.values for h in harvested)) if harvested else frozenset()
    owner: dict[str, frozenset[PhiValue]] = {}
    for sha, relpaths in read_audit(output_location).items():
        source = by_sha.get(sha)
        for relpath in relpaths:
            owner[relpath] = owner.get(relpath, frozenset()) | (source.values if source else every_value)
    hits: list[LeakHit] = []
    for folder in SCANNED_FOLDERS:
        for path in _match(FileSystems.join(output_location, folder, "**")):
            relpath = _relpath(output_location, path)
            values = owner.get(relpath, every_value)
            hits += _scan(path, relpath, values)
    for folder in TEXT_FOLDERS:
        for path in _match(FileSystems.join(output_location, folder, "**")):
            hits += _scan(path, _relpath(output_location, path), every_value)
    return hits


def _scan(path: str, relpath: str, values: Iterable[PhiValue]) -> list[LeakHit]:
    if "://" not in path:
        return scan_output(path, relpath, values)
    with FileSystems.open(path, compression_type=RAW) as handle:
        return scan_output(handle, relpath, values)


def _profile_from(extra: Sequence[str], input_location: str, output_location: str) -> ProfileSettings:
    from apache_beam.options.pipeline_options import PipelineOptions

    from deid.keys import DeidKey
    from pipeline.main import settings_from_options
    from pipeline.options import DeidOptions, check_argv

    argv = [*extra, f"--input={input_location}", f"--output={output_location}"]
    check_argv(argv)
    options = PipelineOptions(argv)
    return settings_from_options(options.view_as(DeidOptions), DeidKey.generate()).profile


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.verify",
        description="Scan a de-identified OUTPUT tree for identifying values of INPUT. Exit 0 clean, 1 leak, 2 usage.",
        epilog="Other arguments are the run's profile options (--retain_long_full_dates, --keep, ...).",
    )
    parser.add_argument("--input", required=True, help="The run's --input (directory, gs:// prefix or glob).")
    parser.add_argument("--output", required=True, help="The run's --output.")
    args, extra = parser.parse_known_args(sys.argv[1:] if argv is None else list(argv))
    from deid.errors import ConfigError

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
    hits = verify_tree(args.input, args.output, profile)
    for hit in hits:
        print(hit.describe())
    outputs = {h.safe_output for h in hits}
    if hits:
        print(f"FAILED: {len(hits)} leak(s) in {len(outputs)} output(s)")
        return 1
    print("OK: no identifying input value found in any output")
    return 0


if __name__ == "__main__":
    sys.exit(main())
