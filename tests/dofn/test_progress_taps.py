"""The progress taps (transforms/progress.py) called through start_bundle()/process()/finish_bundle(),
in several processes at once as the multi_processing DirectRunner runs them, and read back by the
launcher's ProgressFiles."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np

from deid.records import AuditRecord, DeadLetterRecord
from deid.wsi.blocks import INDEX_DTYPE, BlockResult
from pipeline.progress import ProgressFiles
from transforms.progress import _CountEvents, by_status, level0_tiles, one

RECORDS = [
    AuditRecord("a" * 64, "dicom", "ok"),
    DeadLetterRecord("b" * 64, "invalid_input", "truncated").to_audit(),
    AuditRecord("c" * 64, "wsi", "ok"),
]


def _worker(directory: str, bundles: int) -> None:
    """One SDK worker process: several bundles of each tap, as Beam calls a DoFn."""
    listed = _CountEvents(directory, one("listed"))
    done = _CountEvents(directory, by_status)
    for _ in range(bundles):
        for tap, elements in ((listed, range(len(RECORDS))), (done, RECORDS)):
            tap.start_bundle()
            for element in elements:
                assert list(tap.process(element)) == []
            tap.finish_bundle()


def test_taps_of_several_processes_add_up(tmp_path: Path) -> None:
    # fork: the children start at once (spawn would import Beam again in each); they only append.
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_worker, args=(str(tmp_path), 5)) for _ in range(2)]
    for worker in workers:
        worker.start()
    _worker(str(tmp_path), 5)  # and this process, as in_memory mode does
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 3 and f"{os.getpid()}.log" in files  # one file per process
    assert ProgressFiles(str(tmp_path)).read() == {"listed": 45, "ok": 30, "dead_letter": 15}


def test_level0_tiles_counts_a_bands_level0_entries() -> None:
    index = np.zeros(7, INDEX_DTYPE)
    index["level"] = [0, 0, 0, 0, 1, 1, 2]
    band = BlockResult("slide", level=0, top=2, col=0, row=0, index=index.tobytes())
    assert list(level0_tiles(band)) == [("tiles_done", 4)]
    assert list(level0_tiles(BlockResult("slide", 0, 0, 0, 0, error_kind="slide_unreadable"))) == [("tiles_done", 0)]


def test_a_vanished_progress_directory_never_fails_a_bundle(tmp_path: Path) -> None:
    tap = _CountEvents(str(tmp_path / "removed"), one("listed"))
    tap.start_bundle()
    list(tap.process(object()))
    tap.finish_bundle()  # OSError swallowed: progress is only a display
