"""DICOM throughput as a user sees it: the `python -m pipeline` command against dicognito's command.

    python bench/dicom_throughput.py [--files 1000[,10000]] [--runs 3] [--pipeline-args '--opt=value ...']

Makes N copies of pydicom's CT_small.dcm with distinct UIDs (100 per study, 3 series per study),
then, `--runs` times, runs both commands as subprocesses on the same files and times the whole
command (interpreter start-up, Beam start-up, listing, records and manifest included), and the CPU
time of the command with its worker processes:

- the pipeline exactly as a user runs it: `python -m pipeline --input IN --output OUT` with the
  CLI's default options (no --runner, no key file), plus `--pipeline-args` if given;
- dicognito as a user runs it: `python -m dicognito --output-directory OUT --quiet IN` (read,
  anonymize, write each file in one process; --quiet skips its summary table).

The two commands alternate which goes first from run to run, so that a drift in machine speed
(shared cloud cores change speed from minute to minute) weighs on both. Each run prints both
figures, their ratio and the load average; the end prints the spread of the ratio per size. The
issue's targets are a ratio of at least 2.0 at 1,000 files and 2.5 at 10,000. Not a test: numbers
depend on the machine, and on what else runs on it.
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

TARGETS = {1000: 2.0, 10000: 2.5}


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


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str], log: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of the whole command, its worker processes included."""
    cpu, start = _children_cpu(), time.perf_counter()
    with log.open("wb") as sink:
        status = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, check=False).returncode
    elapsed, cpu = time.perf_counter() - start, _children_cpu() - cpu
    if status != 0:
        raise SystemExit(f"{command[:3]} failed with status {status}; see {log}")
    return elapsed, cpu


def run_pipeline(source: Path, output: Path, extra: list[str], log: Path) -> tuple[float, float]:
    shutil.rmtree(output, ignore_errors=True)
    elapsed = timed([sys.executable, "-m", "pipeline", "--input", str(source), "--output", str(output), *extra], log)
    written = sum(1 for _ in (output / "dicom").rglob("*.dcm"))
    expected = sum(1 for _ in source.iterdir())
    if written != expected:
        raise SystemExit(f"the pipeline wrote {written} of {expected} files; see {log}")
    return elapsed


def run_dicognito(source: Path, output: Path, log: Path) -> tuple[float, float]:
    shutil.rmtree(output, ignore_errors=True)
    elapsed = timed([sys.executable, "-m", "dicognito", "--output-directory", str(output), "--quiet", str(source)], log)
    written = sum(1 for _ in output.rglob("*.dcm"))
    expected = sum(1 for _ in source.iterdir())
    if written != expected:
        raise SystemExit(f"dicognito wrote {written} of {expected} files; see {log}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", default="1000", help="comma-separated input sizes, e.g. 1000,10000")
    parser.add_argument("--runs", type=int, default=3, help="measurements per size (at least 3 on shared cores)")
    parser.add_argument("--pipeline-args", default="", help="extra pipeline options, e.g. '--direct_num_workers=1'")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (inputs, outputs, logs)")
    args = parser.parse_args()
    sizes = [int(n) for n in args.files.split(",") if n]
    extra = shlex.split(args.pipeline_args)
    work = Path(tempfile.mkdtemp(prefix="bench-dicom-"))
    env_note = f"cores: {os.cpu_count()}  python: {sys.executable}  pipeline options: {extra or 'CLI defaults'}"
    print(env_note, flush=True)
    summary: list[str] = []
    try:
        for size in sizes:
            source = work / f"in{size}"
            make_inputs(source, size)
            ratios = []
            for run in range(args.runs):
                order = ("pipeline", "dicognito") if run % 2 else ("dicognito", "pipeline")
                seconds, cpu = {}, {}
                for name in order:
                    log = work / f"{name}-{size}-{run}.log"
                    if name == "pipeline":
                        seconds[name], cpu[name] = run_pipeline(source, work / "out", extra, log)
                    else:
                        seconds[name], cpu[name] = run_dicognito(source, work / "dicognito", log)
                ours, theirs = size / seconds["pipeline"], size / seconds["dicognito"]
                ratios.append(ours / theirs)
                print(
                    f"files {size:6d} run {run + 1}: pipeline {seconds['pipeline']:7.2f} s {ours:7.1f} files/s "
                    f"(CPU {cpu['pipeline']:6.1f} s) | dicognito {seconds['dicognito']:7.2f} s {theirs:7.1f} files/s "
                    f"(CPU {cpu['dicognito']:6.1f} s) | ratio {ours / theirs:.2f}x | load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
            target = TARGETS.get(size)
            summary.append(
                f"files {size}: ratio min {min(ratios):.2f}x median {statistics.median(ratios):.2f}x "
                f"max {max(ratios):.2f}x over {len(ratios)} runs" + (f" (target >= {target}x)" if target else "")
            )
            shutil.rmtree(source, ignore_errors=True)
        print("\n".join(summary))
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
