"""`--watch` end to end on a local directory, the CLI (`pipeline.main.main`) in a thread of this
process: files copied in after the job started are de-identified, and a file still being written is
taken only once it stopped changing (its record's input_sha256 is the hash of the whole file;
nothing was taken from a partial copy). `request_drain` (what SIGTERM does) ends it with status 0."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from deid.keys import DeidKey
from pipeline.events import request_drain
from pipeline.main import main

CT = Path(get_testdata_file("CT_small.dcm")).read_bytes()
MR = Path(get_testdata_file("MR_small.dcm")).read_bytes()


def _audit(out: Path) -> list[dict[str, object]]:
    return [
        json.loads(line)
        for path in sorted((out / "audit").glob("*.jsonl"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]


def _wait_for(what: Callable[[], bool], job: threading.Thread, timeout_s: float, why: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not what():
        assert job.is_alive(), f"the job ended before {why}"
        assert time.monotonic() < deadline, f"timed out waiting for {why}"
        time.sleep(0.2)


def _copy_in_and_write(source: Path, out: Path, job: threading.Thread) -> None:
    """ct.dcm copied whole; mr.dcm written a piece every 0.5 s until the copied file was recorded and
    then for longer than --settle_seconds; nothing but ct.dcm may be recorded meanwhile."""
    (source / "study").mkdir()
    (source / "study" / "ct.dcm").write_bytes(CT)
    pieces = [MR[start : start + 256] for start in range(0, len(MR), 256)]
    seen_while_writing: list[int] = []
    with (source / "study" / "mr.dcm").open("wb") as growing:
        after = 0
        while pieces and after < 6:
            growing.write(pieces.pop(0))
            growing.flush()
            time.sleep(0.5)
            seen_while_writing.append(len(_audit(out)))
            after += 1 if seen_while_writing[-1] else 0
            assert job.is_alive()
        growing.write(b"".join(pieces))
    assert max(seen_while_writing) == 1, "a file still being written was taken"
    assert seen_while_writing[-1] == 1, "the copied file was not recorded while the other was written"
    _wait_for(lambda: len(_audit(out)) >= 2, job, 60, "the written file's record")


def test_watched_files_are_taken_once_they_stopped_changing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    key_file = tmp_path / "deid.key"
    key_file.write_bytes(DeidKey.generate().secret)
    args = [
        "--watch", f"--input={source}", f"--output={out}", f"--deid_key_file={key_file}",
        "--watch_interval=1", "--settle_seconds=2", "--window_seconds=1",
    ]  # fmt: skip
    status: list[int] = []
    job = threading.Thread(target=lambda: status.append(main(args)), daemon=True)
    job.start()
    try:
        _wait_for(lambda: "event mode: polling" in caplog.text, job, 60, "the job started")
        _copy_in_and_write(source, out, job)
    finally:
        request_drain()
        job.join(timeout=60)
    assert status == [0], caplog.text
    summary = capsys.readouterr().out
    assert "(drained)" in summary and "de-identified:     2 inputs, 2 output files (dicom 2)" in summary, summary

    audit = _audit(out)
    assert sorted(str(r["input_sha256"]) for r in audit) == sorted(hashlib.sha256(d).hexdigest() for d in (CT, MR))
    assert all(r["status"] == "ok" for r in audit), audit
    outputs = sorted(out.glob("dicom/**/*.dcm"))
    assert {pydicom.dcmread(path).Modality for path in outputs} == {"CT", "MR"} and len(outputs) == 2
    assert not any(p.read_text().strip() for p in (out / "dead_letter").glob("*.jsonl"))
    manifest = json.loads(next((out / "runs").glob("*.json")).read_text())
    assert manifest["outcome"] == "drained" and manifest["counts"]["inputs"] == 2
    assert "mr.dcm" not in caplog.text and "study" not in caplog.text
