"""On-premises scale: the same inputs on the DirectRunner and on a 2-worker Dask LocalCluster.

    python bench/dask_scale.py [--files 1000] [--side 16384] [--runs 1] [--workdir DIR]

Makes `--files` copies of pydicom's CT_small.dcm with distinct UIDs (bench/dicom_throughput.py's
`make_inputs`) and one synthetic `--side` x `--side` JPEG-tiled SVS (tests/support/wsi_factory), then
runs `python -m pipeline` as a user would, with one key file so both runs must publish the same
bytes:

- the DirectRunner: no `--runner`, the CLI's local default (in-process or `multi_processing` on
  both cores, chosen by the input's size);
- Dask: a `dask.distributed` LocalCluster with two worker processes of one thread each on 127.0.0.1,
  started once before the runs (a site's cluster is long-lived), and
  `--runner=DaskRunner --dask_client_address=...`.

It prints the wall time of each whole command (interpreter and Beam start-up included) and the
ratio Dask / DirectRunner (above 1: Dask is slower), checks that both runs published the same files
byte for byte, and says where the Dask run's time went: the job's own time (from the launcher's
"the Dask job ended" line) against the whole command, and, from the scheduler's task stream, the
compute seconds per Beam step, the seconds spent moving data between workers, and the number of
tasks. Needs the dask extra: pip install -e '.[dask]'. Not a test: the numbers depend on the machine
and on what else runs on it (this one has two shared cores).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from distributed import Client, LocalCluster

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from dicom_throughput import make_inputs  # noqa: E402 - a sibling bench script

from tests.support import wsi_factory  # noqa: E402

_JOB_ENDED = re.compile(r"the Dask job ended: DONE after ([0-9.]+) s")
_STEP = re.compile(r"^beam-(?P<label>.+)-(?P<what>[a-z]+\d*)-\d+$")


def make_work(work: Path, files: int, side: int) -> Path:
    inputs = work / "input"
    if not (inputs / "dicom").exists():
        make_inputs(inputs / "dicom", files)
    slide = inputs / "slides" / f"synthetic-{side}.svs"
    if not slide.exists():
        slide.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        wsi_factory.write_big_svs(slide, side)
        print(f"made {slide.name} ({slide.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - start:.0f} s")
    key = work / "bench.key"
    if not key.exists():
        key.write_bytes(secrets.token_bytes(32))
    return inputs


def run(inputs: Path, output: Path, key: Path, extra: list[str]) -> tuple[float, str, float | None]:
    """(wall seconds of the whole command, its stderr, seconds until the launcher logged that the
    Dask job started, or None)."""
    shutil.rmtree(output, ignore_errors=True)
    command = [sys.executable, "-m", "pipeline", "--input", str(inputs), "--output", str(output)]
    command += ["--deid_key_file", str(key), *extra]
    start = time.perf_counter()
    started = None
    lines = []
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as child:
        assert child.stderr is not None
        for line in child.stderr:
            lines.append(line)
            if started is None and "the Dask job started" in line:
                started = time.perf_counter() - start
    elapsed = time.perf_counter() - start
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(extra) or 'DirectRunner'} failed ({child.returncode}):\n{''.join(lines)[-3000:]}")
    return elapsed, "".join(lines), started


def published(output: Path) -> dict[str, str]:
    return {
        str(path.relative_to(output)): hashlib.sha256(path.read_bytes()).hexdigest()
        for folder in ("dicom", "wsi")
        for path in sorted((output / folder).rglob("*"))
        if path.is_file()
    }


def where_time_went(tasks: list[dict[str, Any]], top: int = 8) -> list[str]:
    """Compute seconds per Beam step (and when, from the first task's start), transfer seconds and
    the task count, from the scheduler's task stream."""
    compute: dict[str, float] = defaultdict(float)
    spans: dict[str, list[float]] = {}
    transfer = 0.0
    origin = min((part["start"] for task in tasks for part in task["startstops"]), default=0.0)
    for task in tasks:
        key = task["key"][0] if isinstance(task["key"], tuple) else str(task["key"])
        match = _STEP.match(key)
        label = match.group("label") if match else key.split("-", 1)[0]
        for part in task["startstops"]:
            seconds = part["stop"] - part["start"]
            if part["action"] == "compute":
                compute[label] += seconds
                span = spans.setdefault(label, [part["start"], part["stop"]])
                span[0], span[1] = min(span[0], part["start"]), max(span[1], part["stop"])
            elif part["action"] == "transfer":
                transfer += seconds
    total = sum(compute.values())
    lines = [f"  {len(tasks)} tasks, {total:.1f} s of compute on the workers, {transfer:.1f} s moving data"]
    for label, seconds in sorted(compute.items(), key=lambda item: -item[1])[:top]:
        first, last = (value - origin for value in spans[label])
        share = 100 * seconds / max(total, 1e-9)
        lines.append(f"  {seconds:7.1f} s  {share:4.0f}%  {label}  (from {first:.1f} to {last:.1f} s)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--side", type=int, default=16384)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="dask-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    inputs = make_work(work, args.files, args.side)
    key = work / "bench.key"

    start = time.perf_counter()
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", scheduler_port=0, dashboard_address=None
    )
    print(f"LocalCluster with 2 worker processes up in {time.perf_counter() - start:.1f} s (not counted below)")
    monitor = Client(cluster.scheduler_address, set_as_default=False)
    monitor.get_task_stream(start=time.time())  # turns the scheduler's task stream on
    dask_args = ["--runner=DaskRunner", f"--dask_client_address={cluster.scheduler_address}"]
    ratios = []
    try:
        for index in range(args.runs):
            order = [("direct", []), ("dask", dask_args)]
            if index % 2:
                order.reverse()  # a drift in machine speed weighs on both
            seconds: dict[str, float] = {}
            logs: dict[str, str] = {}
            stream: list[dict[str, Any]] = []
            startup = None
            for name, extra in order:
                began = time.time()
                seconds[name], logs[name], started = run(inputs, work / f"out-{name}", key, extra)
                if name == "dask":
                    stream, startup = monitor.get_task_stream(start=began), started
            same = published(work / "out-direct") == published(work / "out-dask")
            ended = _JOB_ENDED.search(logs["dask"])
            job = float(ended.group(1)) if ended else float("nan")
            ratio = seconds["dask"] / seconds["direct"]
            ratios.append(ratio)
            print(
                f"run {index + 1}: {args.files} DICOM files + one {args.side}x{args.side} slide: "
                f"DirectRunner {seconds['direct']:.1f} s, Dask (2 workers) {seconds['dask']:.1f} s; "
                f"ratio Dask/DirectRunner {ratio:.2f}; same published files: {'yes' if same else 'NO'}",
                flush=True,
            )
            before = startup if startup is not None else float("nan")
            print(
                f"where the Dask run's time went: {before:.1f} s until the job started (imports, cluster "
                f"checks, building and translating the graph), the job {job:.1f} s, "
                f"{seconds['dask'] - before - job:.1f} s after it (records read back, manifest, clean-up)"
            )
            print("\n".join(where_time_went(stream)), flush=True)
            if not same:
                raise SystemExit("the two runs published different files")
    finally:
        monitor.close()
        cluster.close()
    if len(ratios) > 1:
        print(f"ratio Dask/DirectRunner over {len(ratios)} runs: {min(ratios):.2f} to {max(ratios):.2f}")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
