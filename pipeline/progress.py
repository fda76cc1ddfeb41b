"""The progress display of a local run: inputs listed / done / dead-lettered, slide tiles, rate, ETA.

The DoFns' taps (`transforms.progress`) append event counts to files in a local directory; a thread
of the launcher sums them while `pipeline.run()` works. On a terminal it rewrites one line in place
every TTY_SECONDS; otherwise (a log file, CI) it prints a line every LINE_SECONDS when something
changed. Either way a last line is printed when the run ends. It writes to stderr, like the logs;
the summary goes to stdout. Counts only, no path or value of an input.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TextIO

from transforms.progress import EVENTS

TTY_SECONDS = 0.5
LINE_SECONDS = 10.0
_CLEAR_LINE = "\r\x1b[K"


@dataclass
class ProgressFiles:
    """Sums the event files of one progress directory, reading only what was appended since the last call."""

    directory: str
    counts: Counter[str] = field(default_factory=Counter)
    _offsets: dict[str, int] = field(default_factory=dict)

    def read(self) -> Counter[str]:
        try:
            names = sorted(os.listdir(self.directory))
        except OSError:
            return self.counts
        for name in names:
            path = os.path.join(self.directory, name)
            try:
                with open(path, "rb") as handle:
                    handle.seek(self._offsets.get(name, 0))
                    data = handle.read()
            except OSError:
                continue
            complete = data[: data.rfind(b"\n") + 1]  # a line being written is read next time
            self._offsets[name] = self._offsets.get(name, 0) + len(complete)
            for line in complete.decode("ascii", "replace").splitlines():
                event, _, number = line.partition(" ")
                if event in EVENTS and number.lstrip("-").isdigit():
                    self.counts[event] += int(number)
        return self.counts


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def render(counts: Counter[str], elapsed: float, final: bool = False) -> str:
    """One progress line, e.g. `progress: 12/17 inputs done (3 dead-lettered), slide tiles 9/16,
    2.1 inputs/s, ETA 0:02, 0:06 elapsed`. `final`: the run has ended (no estimate)."""
    listed = counts["listed"]
    finished = counts["ok"] + counts["dead_letter"] + counts["needs_review"]
    if listed:
        finished = min(finished, listed)
    parts = [f"{finished}/{listed} inputs done" if listed else f"{finished} inputs done"]
    extra = [f"{counts['dead_letter']} dead-lettered"]
    if counts["needs_review"]:
        extra.append(f"{counts['needs_review']} held for review")
    parts[0] += f" ({', '.join(extra)})"
    tiles_total, tiles_done = counts["tiles_total"], min(counts["tiles_done"], counts["tiles_total"])
    if tiles_total:
        parts.append(f"slide tiles {tiles_done}/{tiles_total}")
    rate = finished / elapsed if elapsed > 0 else 0.0
    parts.append(f"{rate:.1f} inputs/s")
    eta = _eta(listed, finished, tiles_total, tiles_done, elapsed)
    if final:
        pass
    elif listed and finished >= listed:
        parts.append("writing records")
    elif eta is not None:
        parts.append(f"ETA {_duration(eta)}")
    parts.append(f"{_duration(elapsed)} elapsed")
    return "progress: " + ", ".join(parts)


def _eta(listed: int, finished: int, tiles_total: int, tiles_done: int, elapsed: float) -> float | None:
    """Seconds left: the larger of the inputs' and the slide tiles' estimates, at the rate so far."""
    estimates = []
    if listed and 0 < finished < listed:
        estimates.append((listed - finished) * elapsed / finished)
    if tiles_total and 0 < tiles_done < tiles_total:
        estimates.append((tiles_total - tiles_done) * elapsed / tiles_done)
    return max(estimates) if estimates else None


class ProgressDisplay:
    """A thread that shows the progress of one run; `stop()` prints the last line."""

    def __init__(self, directory: str, stream: TextIO, interval: float | None = None) -> None:
        self._files = ProgressFiles(directory)
        self._stream = stream
        self._tty = bool(getattr(stream, "isatty", lambda: False)())
        self._interval = interval if interval is not None else (TTY_SECONDS if self._tty else LINE_SECONDS)
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._shown = ""
        self._printed: dict[str, int] | None = None
        self._thread = threading.Thread(target=self._loop, name="deid-progress", daemon=True)

    def start(self) -> None:
        self._started = time.monotonic()
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._show(final=False)

    def _show(self, final: bool) -> None:
        counts = self._files.read()
        line = render(counts, time.monotonic() - self._started, final=final)
        if self._tty:
            width = shutil.get_terminal_size((120, 20)).columns
            self._stream.write(_CLEAR_LINE + line[: max(20, width - 1)] + ("\n" if final else ""))
        elif final or dict(counts) != self._printed:
            # Not a terminal: a line only when a count changed (rate and elapsed time always do).
            self._stream.write(line + "\n")
            self._printed = dict(counts)
        self._shown = line
        self._stream.flush()

    def stop(self) -> str:
        """Stop the thread, print the last line and return it."""
        self._stop.set()
        self._thread.join()
        self._show(final=True)
        return self._shown


def new_progress_dir() -> str:
    """A fresh local directory for one run's progress files; the run removes it when it ends."""
    return tempfile.mkdtemp(prefix="deid-progress-")


@contextlib.contextmanager
def show_progress(directory: str | None, stream: TextIO | None = None) -> Iterator[ProgressDisplay | None]:
    """Display the progress read from `directory` while the block runs (nothing when it is None)."""
    if not directory:
        yield None
        return
    display = ProgressDisplay(directory, stream or sys.stderr)
    display.start()
    try:
        yield display
    finally:
        display.stop()
