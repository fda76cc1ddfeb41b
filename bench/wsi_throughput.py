"""WSI throughput: the DeidentifyWsi pipeline against pyvips on synthetic JPEG-tiled SVS slides.

Not a timed test. For each size (16k x 16k and 32k x 32k by default) it writes a synthetic Aperio-style
SVS (512 px JPEG tiles, levels 1/4/16...), then in separate child processes (so peak RSS is per run):

* the pipeline: DeidentifyWsi with --redact_text detect on the DirectRunner using both cores. With
  --mode best (the default) the first size is run in each DirectRunner mode (in_memory, and
  multi_threading and multi_processing with --workers), the fastest is printed and used for the
  other sizes;
* pyvips: the same slide rewritten as a tiled JPEG pyramid (tiffsave tile=512, pyramid, Q=90).

It prints megapixels per second of both, their ratio and the pipeline's peak RSS. pyvips is a
bench-only dependency: pip install 'pyvips[binary]'.

    python bench/wsi_throughput.py [--sizes 16384,32768] [--mode best|in_memory|multi_threading|multi_processing]
        [--workdir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


MODES = ("in_memory", "multi_threading", "multi_processing")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def run_pipeline(slide: str, out: str, mode: str, workers: int) -> dict[str, float]:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from deid.classify import InputRef
    from deid.keys import DeidKey
    from deid.settings import RedactionSettings, RunSettings
    from transforms.wsi import DeidentifyWsi

    path = Path(slide)
    ref = InputRef(str(path), path.stat().st_size, sha256_of(path), "wsi", "tiff")
    settings = RunSettings(
        output=out,
        key_token=DeidKey.generate().to_token(),
        redaction=RedactionSettings(text="detect"),
        scratch_location=os.path.join(out, "_scratch"),
    )
    args = ["--runner=DirectRunner", "--no_auth", f"--direct_num_workers={workers}"]
    if mode != "in_memory":
        args.append(f"--direct_running_mode={mode}")
    start = time.perf_counter()
    with beam.Pipeline(options=PipelineOptions(args)) as pipeline:
        outputs = pipeline | beam.Create([ref]) | DeidentifyWsi(settings)
        outputs.audit | "Audit" >> beam.Map(lambda r: print("AUDIT " + r.to_json(), flush=True))
        outputs.dead_letters | "Dead" >> beam.Map(lambda r: print("DEAD " + r.to_json(), flush=True))
    return {"seconds": time.perf_counter() - start}


def run_pyvips(slide: str, out: str) -> dict[str, float]:
    import pyvips

    start = time.perf_counter()
    image = pyvips.Image.new_from_file(slide, access="sequential")
    image.tiffsave(
        os.path.join(out, "pyvips.tif"),
        tile=True,
        tile_width=512,
        tile_height=512,
        pyramid=True,
        compression="jpeg",
        Q=90,
        bigtiff=True,
    )
    return {"seconds": time.perf_counter() - start}


def child(kind: str, slide: str, out: str, mode: str, workers: int) -> tuple[float, int, str]:
    """Run one measurement in a child process; (seconds, peak RSS of that process tree in KiB, log)."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--slide",
        slide,
        "--out",
        out,
        "--mode",
        mode,
        "--workers",
        str(workers),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    log = proc.stdout.read() if proc.stdout else ""
    if status != 0:
        raise SystemExit(f"{kind} run failed:\n{log[-4000:]}")
    result = json.loads([line for line in log.splitlines() if line.startswith("RESULT ")][-1][7:])
    return result["seconds"], usage.ru_maxrss, log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="16384,32768")
    parser.add_argument("--mode", default="best", choices=("best", *MODES))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--child", default=None)
    parser.add_argument("--slide", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.child:
        result = (
            run_pipeline(args.slide, args.out, args.mode, args.workers)
            if args.child == "pipeline"
            else run_pyvips(args.slide, args.out)
        )
        print("RESULT " + json.dumps(result), flush=True)
        return

    from tests.support import wsi_factory

    work = Path(args.workdir or tempfile.mkdtemp(prefix="wsi-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    mode = args.mode
    for side in (int(s) for s in args.sizes.split(",")):
        slide = work / f"synthetic-{side}.svs"
        if not slide.exists():
            start = time.perf_counter()
            wsi_factory.write_big_svs(slide, side)
            print(f"made {slide.name} ({slide.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - start:.0f} s")
        megapixels = side * side / 1e6
        out = work / f"out-{side}"
        candidates = MODES if mode == "best" else (mode,)
        timed = []
        for candidate in candidates:
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            p_seconds, p_rss, log = child("pipeline", str(slide), str(out), candidate, args.workers)
            timed.append((p_seconds, candidate, p_rss, log))
            if len(candidates) > 1:
                print(
                    f"{side}x{side}: mode {candidate}: {megapixels / p_seconds:.1f} MP/s ({p_seconds:.1f} s)",
                    flush=True,
                )
        p_seconds, chosen, p_rss, log = min(timed)
        if mode == "best":
            mode = chosen
            print(f"best DirectRunner mode: {mode} (used for the other sizes)", flush=True)
        audit = next((json.loads(line[6:]) for line in log.splitlines() if line.startswith("AUDIT ")), None)
        if audit is None:
            raise SystemExit(f"the pipeline wrote no audit record:\n{log[-4000:]}")
        v_out = work / f"vips-{side}"
        shutil.rmtree(v_out, ignore_errors=True)
        v_out.mkdir()
        v_seconds, v_rss, _ = child("pyvips", str(slide), str(v_out), args.mode, args.workers)
        rows.append(
            (side, megapixels / p_seconds, megapixels / v_seconds, p_rss / 1024, v_rss / 1024, audit["actions"])
        )
        print(
            f"{side}x{side} [{mode}]: pipeline {megapixels / p_seconds:.1f} MP/s ({p_seconds:.1f} s, "
            f"peak RSS {p_rss / 1024:.0f} MB), "
            f"pyvips {megapixels / v_seconds:.1f} MP/s ({v_seconds:.1f} s, peak RSS {v_rss / 1024:.0f} MB), "
            f"ratio {v_seconds / p_seconds:.2f}; actions {audit['actions']}",
            flush=True,
        )
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(v_out, ignore_errors=True)
    if len(rows) >= 2:
        small, large = rows[0], rows[-1]
        print(f"peak RSS {large[0]} / {small[0]}: {large[3] / small[3]:.2f} (target <= 1.25)")
        print(f"throughput ratio pipeline/pyvips: {', '.join(f'{r[1] / r[2]:.2f}' for r in rows)} (target >= 0.5)")
    if not args.keep and not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
