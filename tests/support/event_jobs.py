"""A `python -m pipeline` job in a subprocess (the event mode's tests): its output collected line by
line, waited on, and drained with SIGTERM by its PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from tests.support.env import REPO_ROOT


class Job:
    """`python -m pipeline` in a subprocess, its stderr collected line by line."""

    def __init__(self, args: list[str]) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipeline", *args],
            cwd=REPO_ROOT,
            env=dict(os.environ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def wait_for(self, what: Callable[[], bool], timeout_s: float, why: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not what():
            if self.process.poll() is not None:
                raise AssertionError(f"the job exited ({self.process.returncode}) before {why}:\n{''.join(self.lines)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {why}:\n{''.join(self.lines[-30:])}")
            time.sleep(0.3)

    def drain(self, timeout_s: float = 90) -> int:
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        finally:
            if self.process.poll() is None:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
            self._reader.join(timeout=10)
