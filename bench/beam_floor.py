"""The floor under every local run: a one-element Beam pipeline on the FnApiRunner, as a command.

    python bench/beam_floor.py [--runs 3]

Times, as whole commands (interpreter start to exit), `import apache_beam` alone and a pipeline
of Create([1]) | Map on the FnApiRunner in process (what `python -m pipeline` runs on locally),
`--no_auth` as the CLI sets it. Whatever this project does, a local run cannot take less than
the second figure; `python bench/wsi_throughput.py` prints the project's own fixed cost (a
512 x 512 slide through the CLI) beside it. Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

IMPORT = "import apache_beam"
PIPELINE = """
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import fn_runner
with beam.Pipeline(runner=fn_runner.FnApiRunner(), options=PipelineOptions(["--no_auth"])) as p:
    p | beam.Create([1]) | beam.Map(lambda x: x)
"""


def _seconds(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for name, code in (("import apache_beam", IMPORT), ("one-element pipeline", PIPELINE)):
        times = [_seconds(code) for _ in range(args.runs)]
        print(f"{name}: median {statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f})")


if __name__ == "__main__":
    main()
