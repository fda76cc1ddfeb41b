"""The console of the job's commands: program name, `--help` with defaults, log levels and filters.

By default (`--log_level WARNING`) the console shows warnings, the `deid` loggers' own lines (INFO
and up) and what the job prints itself (progress on stderr, the summary on stdout). Beam's INFO
lines and a few of its warnings that tell a user nothing about the run (listed in BEAM_NOISE, each
about Beam's own graph construction or worker start-up) are left out; `--log_level INFO` or `DEBUG`
shows everything.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_LOG_LEVEL = "WARNING"
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
CONSOLE_SCRIPT = "deid-pipeline"

# Beam warnings of every run that are about Beam's own machinery, not about this run's inputs.
BEAM_NOISE = (
    "Using yield and return in the process method of",  # Beam's lint of DoFn source code
    "requested in with_outputs() but not declared in type hints",  # Beam's type-hint lint
    "No semi_persistent_directory found",  # a local SDK worker process starting
    "Discarding unparseable args",  # a local SDK worker parsing the job's options without ours
)


def program_name(argv0: str | None = None) -> str:
    """`deid-pipeline` when run as the console script, else `python -m pipeline`."""
    name = os.path.basename(argv0 if argv0 is not None else (sys.argv[0] if sys.argv else ""))
    return CONSOLE_SCRIPT if name == CONSOLE_SCRIPT else "python -m pipeline"


class HelpFormatter(argparse.HelpFormatter):
    """Help with each option's default: `(default: 512)`, `(default: false)`; none for an empty one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if not action.option_strings or default in (None, "", argparse.SUPPRESS) or "%(default)" in text:
            return text
        shown = str(default).lower() if isinstance(default, bool) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, `error: ...`, with exit status 2 (no usage block)."""

    def error(self, message: str) -> None:  # type: ignore[override]  # argparse declares NoReturn
        self.exit(2, f"error: {message}; {self.prog} --help lists the options\n")


def log_level_of(argv: Sequence[str]) -> str:
    """The --log_level in argv, or the default; a bad value is reported later, with the other options."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    parser.add_argument("--log_level", type=str.upper, default=DEFAULT_LOG_LEVEL)
    try:
        known, _ = parser.parse_known_args(list(argv))
    except argparse.ArgumentError:
        return DEFAULT_LOG_LEVEL
    level = str(known.log_level)
    return level if level in LOG_LEVELS else DEFAULT_LOG_LEVEL


class _BeamNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("apache_beam") and record.name != "root":
            return True
        message = record.getMessage()
        return not any(noise in message for noise in BEAM_NOISE)


def configure_logging(level_name: str) -> Callable[[], None]:
    """Console logging at `level_name`; returns a function that puts the previous configuration back."""
    level = getattr(logging, level_name, logging.WARNING)
    root = logging.getLogger()
    ours = logging.getLogger("deid")
    previous = (root.level, ours.level)
    added: logging.Handler | None = None
    if not root.handlers:
        added = logging.StreamHandler()
        added.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(added)
    root.setLevel(level)
    # The job's own INFO lines (a retry of a cloud call, say) stay on at the default level.
    ours.setLevel(logging.INFO if level == logging.WARNING else level)
    noise = _BeamNoise() if level >= logging.WARNING else None
    handlers = list(root.handlers)
    if noise is not None:
        for handler in handlers:
            handler.addFilter(noise)

    def restore() -> None:
        root.setLevel(previous[0])
        ours.setLevel(previous[1])
        for handler in handlers:
            if noise is not None:
                handler.removeFilter(noise)
        if added is not None:
            root.removeHandler(added)

    return restore
