"""Re-runs into the same OUTPUT with the same key give the same files; a killed run leaves no partial output."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pydicom
import tifffile

from tests.support.env import BEAM_TEST_ARGS, REPO_ROOT
from tests.support.phi_fixtures import write_phi_dicoms, write_phi_svs

# Folders whose content must be identical across runs (qa/ holds timings; .tmp/ is staging). The
# record folders hold one file per run: the newest run's records are compared by content.
STABLE = ("dicom", "wsi", "quarantine")
RECORDS = ("audit", "dead_letter")


def _inputs(root: Path) -> None:
    write_phi_dicoms(root / "studies", 3)
    write_phi_svs(root / "slides" / "ZQXSLIDE.svs")
    (root / "misc").mkdir()
    (root / "misc" / "empty.dcm").write_bytes(b"")


def _snapshot(out: Path) -> dict[str, str]:
    files = {}
    for folder in STABLE:
        for path in sorted((out / folder).rglob("*")) if (out / folder).exists() else []:
            if path.is_file():
                files[str(path.relative_to(out))] = hashlib.sha256(path.read_bytes()).hexdigest()
    for folder in RECORDS:
        files[f"{folder} of the newest run"] = hashlib.sha256(_newest(out, folder).read_bytes()).hexdigest()
    return files


def _newest(out: Path, folder: str) -> Path:
    """The record file of the newest run, by its manifest (run ids sort by start time)."""
    manifest = json.loads(sorted((out / "runs").glob("*.json"))[-1].read_text())
    return out / manifest["records"][folder]


def _run(inp: Path, out: Path, key: Path) -> None:
    from pipeline.main import main

    assert main([f"--input={inp}", f"--output={out}", f"--deid_key_file={key}", *BEAM_TEST_ARGS]) == 0


def _audit(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in _newest(out, "audit").read_text().splitlines()]


def test_second_run_same_key_same_files_no_duplicates(tmp_path: Path) -> None:
    inp, out = tmp_path / "input", tmp_path / "output"
    _inputs(inp)
    key = tmp_path / "deid.key"
    key.write_bytes(os.urandom(32))
    _run(inp, out, key)
    first = _snapshot(out)
    assert any(p.startswith("dicom/") for p in first), "the first run wrote no DICOM output"
    _run(inp, out, key)
    second = _snapshot(out)
    assert second == first  # same names, same bytes, nothing added; the same records
    # Records are only ever added: both runs' files and manifests are there.
    assert len(list((out / "audit").glob("*.jsonl"))) == len(list((out / "runs").glob("*.json"))) == 2
    audit = _audit(out)
    shas = [r["input_sha256"] for r in audit]
    assert len(shas) == len(set(shas)) == 5  # one record per input, no duplicate lines
    outputs = [o for r in audit for o in r["outputs"]]  # type: ignore[attr-defined]
    assert len(outputs) == len(set(outputs))
    assert sorted(p for p in second if p.startswith(("dicom/", "wsi/"))) == sorted(outputs)


_KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from apache_beam.io.filesystems import FileSystems

    output = os.path.abspath(sys.argv[2])
    original = FileSystems.create

    class Dying:
        # Writes half of the first sizeable payload under OUTPUT, then the process is killed.
        def __init__(self, handle):
            self._handle = handle
        def write(self, data):
            if len(data) >= 256:
                self._handle.write(data[: len(data) // 2])
                self._handle.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return self._handle.write(data)
        def __getattr__(self, name):
            return getattr(self._handle, name)
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            return self._handle.__exit__(*exc)

    def create(path, *args, **kwargs):
        handle = original(path, *args, **kwargs)
        if os.path.abspath(path).startswith(output + os.sep) and "/audit/" not in path and "/dead_letter/" not in path:
            return Dying(handle)
        return handle

    FileSystems.create = staticmethod(create)
    from pipeline.main import main
    sys.exit(main([f"--input={sys.argv[1]}", f"--output={sys.argv[2]}", f"--deid_key_file={sys.argv[3]}",
                   *sys.argv[4:]]))
    """
)


def _complete(path: Path) -> bool:
    """Whether an output file is whole: DICOM parses with all pixel data, TIFF reads every page."""
    try:
        if path.suffix == ".dcm":
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                ds = pydicom.dcmread(path)
                ds.PixelData  # noqa: B018 - reading it checks its declared length
                return len(ds.PixelData) >= int(ds.Rows) * int(ds.Columns) * int(ds.BitsAllocated) // 8
        with tifffile.TiffFile(path) as tif:
            for page in tif.pages:
                page.asarray()  # type: ignore[union-attr]
        return True
    except Exception:  # noqa: BLE001 - any failure to read means the file is partial
        return False


def test_killed_run_leaves_no_partial_output_and_rerun_completes(tmp_path: Path) -> None:
    inp, out = tmp_path / "input", tmp_path / "output"
    _inputs(inp)
    key = tmp_path / "deid.key"
    key.write_bytes(os.urandom(32))
    script = tmp_path / "killer.py"
    script.write_text(_KILLER)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    killed = subprocess.run(
        [sys.executable, str(script), str(inp), str(out), str(key), *BEAM_TEST_ARGS],
        capture_output=True, timeout=600, cwd=REPO_ROOT, env=env, check=False,
    )
    assert killed.returncode == -9, "the worker was not killed mid-write: " + killed.stderr.decode()[-800:]
    for folder in ("dicom", "wsi"):
        for path in (out / folder).rglob("*") if (out / folder).exists() else []:
            if path.is_file():
                assert _complete(path), f"partial file left under {folder}/"
    # A normal re-run into the same OUTPUT completes, equal to a clean run elsewhere.
    _run(inp, out, key)
    clean = tmp_path / "clean"
    _run(inp, clean, key)
    assert _snapshot(out) == _snapshot(clean)


def test_two_concurrent_runs_into_one_output_keep_all_records(tmp_path: Path) -> None:
    out = tmp_path / "output"
    key = tmp_path / "deid.key"
    key.write_bytes(os.urandom(32))
    runs = []
    for name, count in (("a", 2), ("b", 3)):
        write_phi_dicoms(tmp_path / name, count)
        argv = [f"--input={tmp_path / name}", f"--output={out}", f"--deid_key_file={key}", *BEAM_TEST_ARGS]
        code = f"import sys; from pipeline.main import main; sys.exit(main({argv!r}))"
        runs.append(subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, stderr=subprocess.PIPE))
    for proc in runs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()[-800:]
    manifests = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]
    assert sorted(m["counts"]["inputs"] for m in manifests) == [2, 3]
    lines = [line for p in (out / "audit").glob("*.jsonl") for line in p.read_text().splitlines()]
    assert len(lines) == 5 and {m["records"]["audit"] for m in manifests} == {
        str(p.relative_to(out)) for p in (out / "audit").glob("*.jsonl")
    }
