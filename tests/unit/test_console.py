"""The job's console: the progress line and its display, help with defaults, log levels and filters."""

from __future__ import annotations

import argparse
import io
import logging
import time
from collections import Counter
from pathlib import Path

import pytest

from pipeline.cli import (
    CONSOLE_SCRIPT,
    HelpFormatter,
    OneLineParser,
    configure_logging,
    log_level_of,
    program_name,
)
from pipeline.progress import ProgressDisplay, ProgressFiles, render


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_render_counts_tiles_rate_and_eta() -> None:
    counts = Counter(listed=20, ok=6, dead_letter=2, tiles_total=400, tiles_done=100)
    # 8 of 20 inputs in 4 s: 2/s, 6 s left; 100 of 400 tiles in 4 s: 12 s left. The larger wins.
    assert render(counts, 4.0) == (
        "progress: 8/20 inputs done (2 dead-lettered), slide tiles 100/400, 2.0 inputs/s, ETA 0:12, 0:04 elapsed"
    )
    assert render(Counter(listed=3), 2.0) == "progress: 0/3 inputs done (0 dead-lettered), 0.0 inputs/s, 0:02 elapsed"
    assert render(Counter(listed=3, ok=2, needs_review=1), 3725.0, final=True) == (
        "progress: 3/3 inputs done (0 dead-lettered, 1 held for review), 0.0 inputs/s, 1:02:05 elapsed"
    )
    assert "writing records" in render(Counter(listed=2, ok=2), 1.0)
    # Inputs from a server (no listing): no total.
    assert render(Counter(ok=5), 5.0).startswith("progress: 5 inputs done (0 dead-lettered), 1.0 inputs/s")


def test_progress_files_sum_every_process_file_and_wait_for_whole_lines(tmp_path: Path) -> None:
    (tmp_path / "101.log").write_bytes(b"listed 3\nok 1\n")
    # An instance counted ok that then failed to publish moves to dead_letter; a line being written.
    (tmp_path / "102.log").write_bytes(b"dead_letter 1\nbogus 9\nok 2\nok -1\nti")
    files = ProgressFiles(str(tmp_path))
    assert files.read() == Counter(listed=3, ok=2, dead_letter=1)
    with (tmp_path / "102.log").open("ab") as handle:
        handle.write(b"les_done 4\n")
    assert files.read() == Counter(listed=3, ok=2, dead_letter=1, tiles_done=4)  # read once, not twice
    assert ProgressFiles(str(tmp_path / "gone")).read() == Counter()


def _wait_for(predicate: object, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not predicate():  # type: ignore[operator]
        time.sleep(0.02)


def test_on_a_terminal_one_line_is_rewritten_in_place(tmp_path: Path) -> None:
    stream = _Terminal()
    display = ProgressDisplay(str(tmp_path), stream, interval=0.02)
    display.start()
    (tmp_path / "7.log").write_text("listed 4\nok 1\n")
    _wait_for(lambda: "1/4" in stream.getvalue())
    (tmp_path / "7.log").write_text("listed 4\nok 1\nok 3\n")
    last = display.stop()
    text = stream.getvalue()
    assert last.startswith("progress: 4/4 inputs done (0 dead-lettered)")
    assert text.count("\n") == 1 and text.endswith("\n")  # every update rewrites the same line
    assert text.count("\r\x1b[K") >= 2 and text.rstrip("\n").rsplit("\r\x1b[K", 1)[1] == last


def test_not_on_a_terminal_a_line_is_printed_when_counts_change(tmp_path: Path) -> None:
    stream = io.StringIO()
    display = ProgressDisplay(str(tmp_path), stream, interval=0.02)
    display.start()
    (tmp_path / "7.log").write_text("listed 2\n")
    _wait_for(lambda: stream.getvalue())
    time.sleep(0.1)  # several ticks with nothing new: no new line
    lines = stream.getvalue().splitlines()
    assert lines == ["progress: 0/2 inputs done (0 dead-lettered), 0.0 inputs/s, 0:00 elapsed"]
    (tmp_path / "7.log").write_text("listed 2\nok 2\n")
    display.stop()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines[-1].startswith("progress: 2/2 inputs done (0 dead-lettered), ")
    assert 2 <= len(lines) <= 3  # the change may be seen by a tick and again by the final line


def test_help_shows_defaults_but_not_empty_ones() -> None:
    parser = argparse.ArgumentParser(prog="deid-pipeline", formatter_class=HelpFormatter)
    parser.add_argument("--tile_size", type=int, default=512, help="Tile edge.")
    parser.add_argument("--retain_uids", default=False, help="Keep UIDs.")
    parser.add_argument("--input", default=None, help="Where.")
    parser.add_argument("--keep", default="", help="Kept.")
    parser.add_argument("--fill", default="50%", help="Fill.")
    text = " ".join(parser.format_help().split())
    assert "Tile edge. (default: 512)" in text and "Keep UIDs. (default: false)" in text
    assert "Fill. (default: 50%)" in text
    assert "Where. --keep" in text and "(default: None)" not in text and "Kept. --fill" in text


def test_program_name_and_one_line_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert program_name("/venv/bin/deid-pipeline") == CONSOLE_SCRIPT
    assert program_name("/repo/pipeline/__main__.py") == "python -m pipeline"
    parser = OneLineParser(prog="python -m pipeline.verify")
    parser.add_argument("--input", required=True)
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args([])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: the following arguments are required: --input; python -m pipeline.verify --help lists the options"
    ]


def test_log_levels_and_beam_noise() -> None:
    assert log_level_of([]) == "WARNING"
    assert log_level_of(["--log_level=info", "--input=x"]) == "INFO"
    assert log_level_of(["--log_level", "nonsense"]) == "WARNING"  # reported with the other options
    root, ours = logging.getLogger(), logging.getLogger("deid")
    before = (root.level, ours.level, [list(h.filters) for h in root.handlers])
    handler = logging.StreamHandler(io.StringIO())
    root.addHandler(handler)
    try:
        restore = configure_logging("WARNING")
        try:
            assert root.level == logging.WARNING and ours.level == logging.INFO
            beam = logging.getLogger("apache_beam.runners.portability.local_job_service")
            beam.warning("Worker: severity: WARN message: \"No semi_persistent_directory found: ...\"")
            logging.getLogger("apache_beam.io").warning("a real warning")
            logging.getLogger("apache_beam.typehints").info("Converting string literal type hint to Any")
            ours.info("retrying in 2.0 s")
        finally:
            restore()
        shown = handler.stream.getvalue()  # type: ignore[attr-defined]
        assert "a real warning" in shown and "retrying in 2.0 s" in shown
        assert "semi_persistent" not in shown and "Converting" not in shown
        restore = configure_logging("INFO")
        try:
            assert root.level == logging.INFO and not any(f for f in handler.filters)
        finally:
            restore()
    finally:
        root.removeHandler(handler)
    assert (root.level, ours.level, [list(h.filters) for h in root.handlers]) == before
