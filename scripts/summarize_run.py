"""Print the summary of the newest run under OUTPUT (or of `--run_id`), as the job prints it when it
ends: `pipeline.summary` is the one place that makes it (counts only, never values)."""

from __future__ import annotations

import argparse

from pipeline.summary import summarize

__all__ = ["summarize"]


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/summarize_run.py", description=__doc__)
    parser.add_argument("output", nargs="?", default="demo_out", help="the job's OUTPUT (default: demo_out)")
    parser.add_argument("--run_id", default=None, help="a run id under OUTPUT/runs/ (default: the newest)")
    args = parser.parse_args()
    try:
        print(summarize(args.output, args.run_id))
    except FileNotFoundError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
