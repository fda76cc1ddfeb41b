"""`python -m pipeline --watch` end to end on a local directory: files copied in after the job started
are de-identified, and a file still being written is taken only once it stopped changing (its
record's input_sha256 is the hash of the whole file; nothing was taken from a partial copy).
SIGTERM drains the job, which exits 0."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file

from deid.keys import DeidKey
from tests.support.event_jobs import Job


def _audit(out: Path) -> list[dict[str, object]]:
    return [
        json.loads(line)
        for path in sorted((out / "audit").glob("*.jsonl"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]


def test_watched_files_are_taken_once_they_stopped_changing(tmp_path: Path) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    key_file = tmp_path / "deid.key"
    key_file.write_bytes(DeidKey.generate().secret)
    job = Job([
        "--watch", f"--input={source}", f"--output={out}", f"--deid_key_file={key_file}",
        "--watch_interval=1", "--settle_seconds=3", "--window_seconds=2",
    ])  # fmt: skip
    job.wait_for(lambda: any("event mode: polling" in line for line in job.lines), 120, "the job started")

    ct = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    (source / "study").mkdir()
    (source / "study" / "ct.dcm").write_bytes(ct)
    mr = Path(get_testdata_file("MR_small.dcm")).read_bytes()
    pieces = [mr[start : start + 256] for start in range(0, len(mr), 256)]
    seen_while_writing: list[int] = []
    with (source / "study" / "mr.dcm").open("wb") as growing:
        # A piece every 0.5 s, for longer than --settle_seconds after the other file's record came.
        rounds_after = 0
        while pieces and rounds_after < 7:
            growing.write(pieces.pop(0))
            growing.flush()
            time.sleep(0.5)
            seen_while_writing.append(len(_audit(out)))
            rounds_after += 1 if seen_while_writing[-1] else 0
            assert job.process.poll() is None, "".join(job.lines)
        growing.write(b"".join(pieces))
    assert seen_while_writing[-1] == 1, "the complete file was not recorded while the other was written"
    assert max(seen_while_writing) == 1, "a file still being written was taken"
    job.wait_for(lambda: len(_audit(out)) >= 2, 60, "the written file's record")
    status = job.drain()
    log = "".join(job.lines)
    assert status == 0, log

    audit = _audit(out)
    assert sorted(str(r["input_sha256"]) for r in audit) == sorted(
        hashlib.sha256(data).hexdigest() for data in (ct, mr)
    ), audit
    assert all(r["status"] == "ok" for r in audit), audit
    outputs = sorted(out.glob("dicom/**/*.dcm"))
    assert len(outputs) == 2
    assert {pydicom.dcmread(path).Modality for path in outputs} == {"CT", "MR"}
    assert not list((out / "dead_letter").glob("*.jsonl")) or not any(
        p.read_text().strip() for p in (out / "dead_letter").glob("*.jsonl")
    )
    manifest = json.loads(next(p for p in (out / "runs").glob("*.json")).read_text())
    assert manifest["outcome"] == "drained" and manifest["counts"]["inputs"] == 2
    assert "mr.dcm" not in log and "study" not in log
