"""DICOM throughput: this pipeline on the DirectRunner (both cores) against dicognito, same files, same run.

    python bench/dicom_throughput.py [--files 1000] [--mode multi_processing|multi_threading|in_memory]

Makes N copies of pydicom's CT_small.dcm with distinct UIDs, de-identifies them with the pipeline and
with dicognito (read, anonymize, write each file; half of the files before the pipeline run, half
after), and prints files/s for both and the ratio.
The target in the issue is a ratio of at least 1.5. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_inputs(target: Path, count: int) -> None:
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    target.mkdir(parents=True)
    study = generate_uid()
    for index in range(count):
        if index % 100 == 0:
            study = generate_uid()
        template.StudyInstanceUID = study
        template.SeriesInstanceUID = generate_uid(entropy_srcs=[study, str(index % 3)])
        template.SOPInstanceUID = generate_uid()
        template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
        template.save_as(target / f"ct_{index:05d}.dcm", enforce_file_format=True)


def run_pipeline(source: Path, output: Path, key: Path, mode: str) -> float:
    from pipeline.main import main

    args = [
        "--input",
        str(source),
        "--output",
        str(output),
        "--deid_key_file",
        str(key),
        "--runner=DirectRunner",
        "--no_auth",
        f"--direct_running_mode={mode}",
        "--direct_num_workers=2",
    ]
    start = time.perf_counter()
    status = main(args)
    elapsed = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"pipeline failed with status {status}")
    return elapsed


def run_dicognito(paths: list[Path], output: Path) -> float:
    from dicognito.anonymizer import Anonymizer

    output.mkdir(parents=True, exist_ok=True)
    anonymizer = Anonymizer()
    start = time.perf_counter()
    for path in paths:
        with pydicom.dcmread(path) as ds:
            anonymizer.anonymize(ds)
            ds.save_as(output / path.name)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument(
        "--mode", default="multi_processing", choices=["multi_processing", "multi_threading", "in_memory"]
    )
    args = parser.parse_args()
    os.environ.setdefault("NO_GCE_CHECK", "True")
    work = Path(tempfile.mkdtemp(prefix="bench-dicom-"))
    try:
        source = work / "in"
        make_inputs(source, args.files)
        key = work / "key"
        key.write_bytes(os.urandom(32))
        # dicognito does half of the files before the pipeline runs and half after, so that a machine
        # whose speed drifts during the run (shared cloud cores) weighs on both sides alike.
        paths = sorted(source.iterdir())
        half = len(paths) // 2
        dicognito_s = run_dicognito(paths[:half], work / "dicognito")
        pipeline_s = run_pipeline(source, work / "out", key, args.mode)
        dicognito_s += run_dicognito(paths[half:], work / "dicognito")
        written = sum(1 for _ in (work / "out" / "dicom").rglob("*.dcm"))
        if written != args.files:
            raise SystemExit(f"pipeline wrote {written} of {args.files} files")
        ours, theirs = args.files / pipeline_s, args.files / dicognito_s
        print(f"files: {args.files}  cores: {os.cpu_count()}  runner mode: {args.mode} x2")
        print(f"pipeline  : {pipeline_s:7.2f} s  {ours:8.1f} files/s (includes pipeline start-up, listing, audit)")
        print(f"dicognito : {dicognito_s:7.2f} s  {theirs:8.1f} files/s (one process, read+anonymize+write)")
        print(f"ratio pipeline/dicognito: {ours / theirs:.2f}x (target >= 1.5x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
