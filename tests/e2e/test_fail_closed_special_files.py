"""Special files among the inputs (issue 11, parts 7 and 9): every listed input gets exactly one
record that names it without its path, nothing hangs on a FIFO, and `python -m pipeline.verify`
exits 2 with one line (never a path) for inputs it cannot check, 1 only for leaks.

Root reads files whatever their mode, so the permission cases run the CLI with the capabilities
that let root bypass file modes dropped (setpriv); without setpriv, as root, they skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deid.keys import DeidKey
from pipeline.verify import main as verify_main
from tests.support import dicom_factory
from tests.support.env import BEAM_TEST_ARGS, REPO_ROOT

KEY = b"special-files-test-key-0123456789"
# Capabilities that let root read and list whatever the modes say.
_DAC = "-dac_override,-dac_read_search"


def _unprivileged(probe: Path) -> list[str]:
    """A command prefix under which mode 000 really stops reads, or skip."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv (util-linux) is missing: chmod 000 cannot stop root's reads")
    prefix = [setpriv, f"--bounding-set={_DAC}"]
    check = subprocess.run([*prefix, sys.executable, "-c", f"open({str(probe)!r}).read()"], capture_output=True)
    if check.returncode == 0:
        pytest.skip("setpriv could not drop root's file-mode override here")
    return prefix


def _cli(prefix: list[str], module: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    argv = [*prefix, sys.executable, "-m", module, *args]
    return subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False)


def _instance(number: int) -> bytes:
    return dicom_factory.to_bytes(dicom_factory.instance(1, number))


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(folder.glob("*.jsonl")) for line in f.read_text().splitlines()]


@pytest.fixture
def hostile_inputs(tmp_path: Path) -> Iterator[Path]:
    """ok/a.dcm; SECRET_MRN.dcm (mode 000); locked/ (000) holding b.dcm; noexec/ (r--, entries cannot
    be opened) holding c.dcm; PIPE_DOE.dcm, a FIFO with no writer."""
    root = tmp_path / "in"
    for folder in ("ok", "locked", "noexec"):
        (root / folder).mkdir(parents=True)
    (root / "ok" / "a.dcm").write_bytes(_instance(1))
    (root / "locked" / "b.dcm").write_bytes(_instance(2))
    (root / "noexec" / "c.dcm").write_bytes(_instance(3))
    (root / "SECRET_MRN.dcm").write_bytes(_instance(4))
    os.mkfifo(root / "PIPE_DOE.dcm")
    (root / "SECRET_MRN.dcm").chmod(0)
    (root / "locked").chmod(0)
    (root / "noexec").chmod(0o644)
    yield root
    (root / "locked").chmod(0o755)
    (root / "noexec").chmod(0o755)


def test_each_special_input_gets_one_keyed_record_and_the_run_completes(hostile_inputs: Path, tmp_path: Path) -> None:
    prefix = _unprivileged(hostile_inputs / "SECRET_MRN.dcm")
    key_file = tmp_path / "deid.key"
    key_file.write_bytes(KEY)
    out = tmp_path / "out"

    done = _cli(prefix, "pipeline", "--input", str(hostile_inputs), "--output", str(out),
                "--deid_key_file", str(key_file), *BEAM_TEST_ARGS)

    assert done.returncode == 0, done.stderr[-2000:]  # completed, with dead letters
    key = DeidKey.from_bytes(KEY)
    expected = {
        key.path_id("SECRET_MRN.dcm"): "unreadable",
        key.path_id("noexec/c.dcm"): "unreadable",
        key.path_id("locked"): "unreadable_directory",
        key.path_id("PIPE_DOE.dcm"): "not_a_regular_file",
    }
    dead = _records(out / "dead_letter")
    assert {r["input_sha256"]: r["error_kind"] for r in dead} == expected
    assert len(dead) == len(expected)
    audit = _records(out / "audit")
    assert len(audit) == 5  # one per listed input (and the unlistable directory), none twice
    assert all(len(r["input_sha256"]) == 64 for r in audit)
    (ok,) = [r for r in audit if r["status"] == "ok"]
    assert ok["kind"] == "dicom" and ok["outputs"]
    text = "".join(p.read_text() for p in out.rglob("*.json*")) + done.stdout + done.stderr
    for name in ("SECRET_MRN", "PIPE_DOE", "noexec", "locked/", str(hostile_inputs)):
        assert name not in text
    assert not [p for p in (out / ".tmp").rglob("*") if p.is_file()]


def test_a_fifo_among_the_inputs_is_skipped_not_hung_on(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.dcm").write_bytes(_instance(1))
    os.mkfifo(inputs / "pipe.dcm")
    key_file = tmp_path / "deid.key"
    key_file.write_bytes(KEY)
    out = tmp_path / "out"

    run = _cli([], "pipeline", "--input", str(inputs), "--output", str(out), "--deid_key_file", str(key_file),
               *BEAM_TEST_ARGS, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    (dead,) = _records(out / "dead_letter")
    assert dead["error_kind"] == "not_a_regular_file"
    assert dead["input_sha256"] == DeidKey.from_bytes(KEY).path_id("pipe.dcm")
    assert len(_records(out / "audit")) == 2

    check = _cli([], "pipeline.verify", "--input", str(inputs), "--output", str(out), timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "1 input(s) are not regular files" in check.stderr


def _some_output(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    (out / "audit").mkdir(parents=True)
    (out / "audit" / "audit-r.jsonl").write_text("")
    return out


def test_verify_exits_2_with_one_line_on_a_4_byte_tiff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "JANE_DOE.tif").write_bytes(b"II*\x00")
    (inputs / "a.dcm").write_bytes(_instance(1))

    assert verify_main(["--input", str(inputs), "--output", str(_some_output(tmp_path))]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("error: the inputs cannot all be checked (1 not parsable as the TIFF it claims to be)")
    assert "JANE_DOE" not in line and str(tmp_path) not in line


def test_verify_exits_2_without_a_path_when_an_input_cannot_be_read(hostile_inputs: Path, tmp_path: Path) -> None:
    prefix = _unprivileged(hostile_inputs / "SECRET_MRN.dcm")
    os.remove(hostile_inputs / "PIPE_DOE.dcm")  # covered above; here the one line is all there is

    done = _cli(prefix, "pipeline.verify", "--input", str(hostile_inputs), "--output", str(_some_output(tmp_path)))

    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr
    (line,) = done.stderr.splitlines()
    assert line == (
        "error: the inputs cannot all be checked (1 directory that could not be listed, 2 unreadable); verify "
        "needs every input of the run readable and in the format it claims: fix their permissions, or leave "
        "out of --input the inputs the run dead-lettered"
    )
