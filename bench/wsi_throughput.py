"""WSI throughput as a user runs it: `python -m pipeline` against pyvips on synthetic Aperio SVS slides.

Not a timed test. For each case (tile edge x slide side; by default 256, 240 and 512-px tiles at
16k x 16k, and 256-px tiles at 32k x 32k for the memory ratio) it writes a synthetic Aperio SVS
(JPEG tiles, levels 1/4/16..., tissue everywhere, `tests.support.wsi_factory.write_big_svs`), then
runs, `--repeat` times and alternating which goes first:

* the pipeline: `python -m pipeline --input DIR --output OUT --redact_text detect` as a subprocess
  with the CLI's defaults otherwise (runner, workers, scratch), timed as the whole command's wall time;
* pyvips: the same slide rewritten as a tiled JPEG pyramid (`tiffsave` tile = the slide's tile
  edge, pyramid, Q=90) in a `python -c` subprocess, timed the same way.

It prints megapixels per second of both and their ratio per run (and the ratio of their CPU times,
which depends less on what else the machine runs), then per case the median and the spread, the
pipeline's peak RSS (the sum over its whole process tree, sampled every 20 ms: the
launcher, Beam's worker processes if any, the slide probe) and the load average while it ran. The
fixed cost of the command is measured once, on a 512 x 512 slide. pyvips and psutil are bench-only
dependencies (`pip install 'pyvips[binary]' psutil`).

    python bench/wsi_throughput.py [--tiles 256,240,512] [--side 16384] [--large 32768] [--repeat 3]
        [--workdir DIR] [--keep]

Slides are cached in --workdir (default: <temp>/deid-wsi-bench), outputs removed unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PYVIPS = """
import sys, pyvips
image = pyvips.Image.new_from_file(sys.argv[1], access="sequential")
image.tiffsave(sys.argv[2], tile=True, tile_width=int(sys.argv[3]), tile_height=int(sys.argv[3]),
               pyramid=True, compression="jpeg", Q=90, bigtiff=True)
"""


@dataclass(frozen=True)
class Run:
    seconds: float
    cpu_seconds: float  # user + system of the command and the descendants it waited for
    peak_rss_mb: float
    load: float
    largest_rss_mb: float = 0.0  # the peak of the largest single process (launcher or one worker)


def tree_rss(pid: int) -> tuple[int, int]:
    """(sum, largest) of the resident set sizes of a process and all its descendants (bytes)."""
    import psutil

    try:
        parent = psutil.Process(pid)
        procs = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    total = largest = 0
    for proc in procs:
        try:
            rss = proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
        total += rss
        largest = max(largest, rss)
    return total, largest


def timed(cmd: list[str], cwd: Path) -> Run:
    """Wall time of the whole command, its CPU time and the peak RSS of its process tree."""
    peak = largest = 0
    load0 = os.getloadavg()[0]
    done = threading.Event()
    with tempfile.TemporaryFile() as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)

        def sample() -> None:
            nonlocal peak, largest
            while not done.is_set():
                total, one = tree_rss(proc.pid)
                peak, largest = max(peak, total), max(largest, one)
                done.wait(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        sampler.join()
        if proc.returncode != 0:
            log.seek(0)
            text = log.read()[-4000:].decode(errors="replace")
            raise SystemExit(f"{cmd[2:4]} failed ({proc.returncode}):\n{text}")
    return Run(seconds, usage.ru_utime + usage.ru_stime, peak / 1e6, (load0 + os.getloadavg()[0]) / 2, largest / 1e6)


def pipeline_cmd(input_dir: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline", "--input", str(input_dir), "--output", str(out)] + [
        "--redact_text",
        "detect",
    ]


def run_pipeline(input_dir: Path, out: Path) -> Run:
    shutil.rmtree(out, ignore_errors=True)
    run = timed(pipeline_cmd(input_dir, out), ROOT)
    audits = [json.loads(line) for f in (out / "audit").glob("*.jsonl") for line in f.read_text().splitlines()]
    if [a["status"] for a in audits] != ["ok"]:
        raise SystemExit(f"the pipeline did not publish the slide: {audits}")
    return run


def run_pyvips(slide: Path, out: Path, tile: int) -> Run:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    return timed([sys.executable, "-c", PYVIPS, str(slide), str(out / "pyvips.tif"), str(tile)], ROOT)


def make_slide(work: Path, side: int, tile: int) -> Path:
    """work/in-<side>-<tile>/slide.svs (cached)."""
    from tests.support import wsi_factory

    folder = work / f"in-{side}-{tile}"
    slide = folder / "slide.svs"
    if not slide.exists():
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        partial = folder / "slide.partial"
        wsi_factory.write_big_svs(partial, side, tile=tile)
        partial.rename(slide)
        print(f"made {side}x{side} / {tile}-px tiles ({slide.stat().st_size / 1e6:.0f} MB) in "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    return slide


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f}, n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiles", default="256,240,512", help="tile edges; the first is also used for --large")
    parser.add_argument("--side", type=int, default=16384)
    parser.add_argument("--large", type=int, default=32768, help="side of the memory-ratio slide; 0 skips it")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "deid-wsi-bench"))
    parser.add_argument("--keep", action="store_true", help="keep the outputs")
    args = parser.parse_args()
    tiles = [int(t) for t in args.tiles.split(",")]
    work = Path(args.workdir)
    cases = [(tile, args.side) for tile in tiles] + ([(tiles[0], args.large)] if args.large else [])
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start", flush=True)

    small = work / "in-small"
    if not (small / "slide.svs").exists():
        from tests.support import wsi_factory

        small.mkdir(parents=True, exist_ok=True)
        wsi_factory.write_aperio_svs(small / "slide.svs", 512, 512, 256, text_corner=None)
    fixed = run_pipeline(small, work / "out-small")
    print(f"fixed cost: the command on a 512 x 512 slide takes {fixed.seconds:.1f} s, {fixed.cpu_seconds:.1f} s CPU "
          f"(peak RSS {fixed.peak_rss_mb:.0f} MB, load {fixed.load:.1f})", flush=True)

    summary = {}
    largest: dict[tuple[int, int], list[float]] = {}
    for tile, side in cases:
        slide = make_slide(work, side, tile)
        megapixels = side * side / 1e6
        ours: list[Run] = []
        theirs: list[Run] = []
        for index in range(args.repeat):
            order = ("pipeline", "pyvips") if index % 2 == 0 else ("pyvips", "pipeline")
            for kind in order:
                if kind == "pipeline":
                    ours.append(run_pipeline(slide.parent, work / f"out-{side}-{tile}"))
                else:
                    theirs.append(run_pyvips(slide, work / f"vips-{side}-{tile}", tile))
            p, v = ours[-1], theirs[-1]
            print(
                f"{side}x{side}, {tile}-px tiles, run {index + 1}: pipeline {megapixels / p.seconds:.1f} MP/s "
                f"({p.seconds:.1f} s, {p.cpu_seconds:.1f} s CPU, peak RSS {p.peak_rss_mb:.0f} MB, largest process "
                f"{p.largest_rss_mb:.0f} MB), pyvips "
                f"{megapixels / v.seconds:.1f} MP/s ({v.seconds:.1f} s, {v.cpu_seconds:.1f} s CPU), ratio "
                f"{v.seconds / p.seconds:.2f} (CPU {v.cpu_seconds / p.cpu_seconds:.2f}), "
                f"load {(p.load + v.load) / 2:.1f}",
                flush=True,
            )
        ratios = [v.seconds / p.seconds for p, v in zip(ours, theirs, strict=True)]
        cpu_ratios = [v.cpu_seconds / p.cpu_seconds for p, v in zip(ours, theirs, strict=True)]
        rss = [p.peak_rss_mb for p in ours]
        summary[(tile, side)] = (ratios, rss)
        largest[(tile, side)] = [p.largest_rss_mb for p in ours]
        print(
            f"== {side}x{side}, {tile}-px tiles: ratio pipeline/pyvips {spread(ratios)}; CPU-time ratio "
            f"{spread(cpu_ratios)}; "
            f"pipeline {spread([megapixels / p.seconds for p in ours])} MP/s, pyvips "
            f"{spread([megapixels / v.seconds for v in theirs])} MP/s; peak RSS {spread(rss)} MB; "
            f"load {spread([p.load for p in ours])}",
            flush=True,
        )
        if not args.keep:
            shutil.rmtree(work / f"out-{side}-{tile}", ignore_errors=True)
            shutil.rmtree(work / f"vips-{side}-{tile}", ignore_errors=True)
    if args.large and (tiles[0], args.side) in summary and (tiles[0], args.large) in summary:
        base = statistics.median(summary[(tiles[0], args.side)][1])
        large = statistics.median(summary[(tiles[0], args.large)][1])
        print(f"peak RSS {args.large} / {args.side} ({tiles[0]}-px tiles): {large / base:.2f} (target <= 1.25)")
        one = statistics.median(largest[(tiles[0], args.large)]) / statistics.median(largest[(tiles[0], args.side)])
        print(f"peak RSS of the largest process, {args.large} / {args.side}: {one:.2f}")
    for (tile, side), (ratios, rss) in summary.items():
        print(f"{side}x{side} {tile}-px: ratio {statistics.median(ratios):.2f}, peak RSS {max(rss):.0f} MB")


if __name__ == "__main__":
    main()
