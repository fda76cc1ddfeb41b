"""Run every DICOM file of pydicom, pydicom-data, deid-data and ../shared/data (DICOM and slide
samples) through the CLI with its default options and report, per source, how many inputs were
published, quarantined (leak) and dead-lettered, and why.

    python scripts/corpus_report.py [WORKDIR] [-- extra pipeline options]

Inputs are copied (never modified) under WORKDIR/<source>/ with neutral names, since a file name
is harvested as an identifying value too; the run is `python -m pipeline` as a user runs it.
"""

from __future__ import annotations

import collections
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def _sources() -> dict[str, list[Path]]:
    import deid_data
    import pydicom.data
    from pydicom.data import get_testdata_files

    found: dict[str, list[Path]] = {}
    found["pydicom"] = sorted(
        p for p in Path(pydicom.data.__file__).parent.joinpath("test_files").rglob("*") if _is_dicom(p)
    )
    try:
        import data_store

        store = Path(data_store.__file__).parent / "data"
        found["pydicom-data"] = sorted(p for p in store.rglob("*") if _is_dicom(p))
    except ImportError:
        found["pydicom-data"] = []
    found["deid-data"] = sorted(p for p in Path(deid_data.__file__).parent.rglob("*") if _is_dicom(p))
    found["shared dicom_samples"] = sorted(p for p in (SHARED / "dicom_samples").rglob("*") if _is_dicom(p))
    found["shared wsi_samples"] = sorted(
        p for p in (SHARED / "wsi_samples").rglob("*") if p.is_file() and p.suffix.lower() != ".json"
    ) + sorted(p for p in (SHARED / "wsi").rglob("*") if p.is_file())
    del get_testdata_files
    return found


def _is_dicom(path: Path) -> bool:
    if not path.is_file() or path.stat().st_size < 132:
        return False
    with path.open("rb") as handle:
        head = handle.read(132)
    return head[128:132] == b"DICM" or path.suffix.lower() in (".dcm", ".dicom")


def _records(out: Path, folder: str) -> list[dict]:
    return [json.loads(line) for f in sorted((out / folder).glob("*.jsonl")) for line in f.read_text().splitlines()]


def main(argv: list[str]) -> int:
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = argv[: argv.index("--")] if "--" in argv else argv
    work = Path(args[0] if args else "corpus_run").resolve()
    shutil.rmtree(work, ignore_errors=True)
    rows = []
    for source, paths in _sources().items():
        inp, out = work / "in" / source.replace(" ", "_"), work / "out" / source.replace(" ", "_")
        inp.mkdir(parents=True)
        for index, path in enumerate(paths):
            shutil.copyfile(path, inp / f"input_{index:04d}{path.suffix.lower() or '.bin'}")
        if not paths:
            continue
        started = time.perf_counter()
        cmd = [sys.executable, "-m", "pipeline", "--input", str(inp), "--output", str(out), *extra]
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            print(f"{source}: exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
            continue
        audit = _records(out, "audit")
        kinds = collections.Counter(r.get("error_kind") or r["status"] for r in audit)
        rows.append((source, len(paths), kinds, seconds))
    print("| source | inputs | published | quarantined (leak) | dead-lettered (kind: count) | wall s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for source, count, kinds, seconds in rows:
        published = kinds.pop("ok", 0)
        leaks = kinds.pop("leak", 0)
        dead = ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items())) or "-"
        print(f"| {source} | {count} | {published} | {leaks} | {dead} | {seconds:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
