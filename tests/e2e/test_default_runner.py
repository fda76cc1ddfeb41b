"""`python -m pipeline` as a user runs it, without --runner: a local run that needs no network (never
the Prism runner Beam's DirectRunner would try, and download, first), on all cores for large inputs,
and the same outputs in SDK worker processes (multi_processing) as in this one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import DirectOptions

from pipeline.local_runner import LOCAL_BIG_INPUT_BYTES, LOCAL_FILES_PER_WORKER, default_runner
from pipeline.main import pipeline_options_from_argv
from tests.support.env import REPO_ROOT
from tests.support.phi_fixtures import write_phi_dicoms

# Any download (Prism's binary from GitHub, a credential lookup) fails at once; localhost (Beam's
# own gRPC channels to its worker processes) is left alone.
OFFLINE = {
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "localhost,127.0.0.1",
    "no_proxy": "localhost,127.0.0.1",
    "NO_GCE_CHECK": "True",
}


@pytest.fixture(scope="module")
def three_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("default-runner")
    write_phi_dicoms(root / "input", count=3)
    key = root / "key"
    key.write_bytes(bytes(range(32)))
    return root / "input", key


def _cli(inputs: Path, output: Path, key: Path, *extra: str) -> str:
    """Run the command as a user would (no --runner); return its console output."""
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "--input", str(inputs), "--output", str(output), "--deid_key_file",
         str(key), *extra],
        capture_output=True, text=True, timeout=600, cwd=output.parent, check=False,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT), **OFFLINE),
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert f"done: results under {output}" in done.stdout
    assert "Prism" not in log  # neither tried nor fallen back from
    return log


def _outputs(output: Path) -> dict[str, bytes]:
    return {str(p.relative_to(output)): p.read_bytes() for p in sorted((output / "dicom").rglob("*.dcm"))}


def _audit(output: Path) -> list[dict[str, object]]:
    (audit,) = (output / "audit").glob("audit-*.jsonl")
    return [json.loads(line) for line in audit.read_text().splitlines()]


def test_without_runner_three_files_run_in_this_process_offline(
    three_inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    inputs, key = three_inputs
    log = _cli(inputs, tmp_path / "out", key, "--log_level=INFO")  # INFO shows Beam's own lines
    outputs = _outputs(tmp_path / "out")
    assert len(outputs) == 3
    assert all(b"ZQX" not in data for data in outputs.values())
    assert sorted(r["status"] for r in _audit(tmp_path / "out")) == ["ok"] * 3
    assert "sdk harness" not in log.lower()  # a small input: no worker processes to start
    assert not (tmp_path / "out" / ".tmp").exists() or not any((tmp_path / "out" / ".tmp").rglob("*.part"))


def test_multi_processing_workers_get_the_settings_and_write_the_same_files(
    three_inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    """--direct_num_workers alone (still no --runner) gives multi_processing: the DoFns, their pickled
    RunSettings and the key file reach the worker processes, and the files are byte for byte those
    of the in-process run."""
    inputs, key = three_inputs
    _cli(inputs, tmp_path / "in_process", key)
    log = _cli(inputs, tmp_path / "workers", key, "--direct_num_workers=2", "--log_level=INFO")
    assert "sdk harness" in log.lower()  # the worker processes started (their log comes back here)
    assert _outputs(tmp_path / "workers") == _outputs(tmp_path / "in_process")
    assert sorted(r["status"] for r in _audit(tmp_path / "workers")) == ["ok"] * 3


def _direct(argv: list[str]) -> tuple[str, int]:
    options = pipeline_options_from_argv([*argv, "--output", "/tmp/unused-output"]).view_as(DirectOptions)
    return options.direct_running_mode, options.direct_num_workers


def test_the_default_uses_all_cores_only_for_inputs_large_enough(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    small, large = tmp_path / "small", tmp_path / "large"
    for folder, count in ((small, 2 * LOCAL_FILES_PER_WORKER - 1), (large, 3 * LOCAL_FILES_PER_WORKER)):
        folder.mkdir()
        for index in range(count):
            (folder / f"{index}.dcm").write_bytes(b"")
    assert _direct(["--input", str(small)]) == ("in_memory", 1)
    assert _direct(["--input", str(large)]) == ("multi_processing", 3)  # one worker per share of files
    # One input large enough (a big slide, split into tile bands) gets every core on its own.
    big = tmp_path / "big"
    big.mkdir()
    with open(big / "slide.svs", "wb") as handle:
        handle.truncate(LOCAL_BIG_INPUT_BYTES)  # sparse: the listing's size is what counts
    assert _direct(["--input", str(big)]) == ("multi_processing", 4)
    with open(big / "slide.svs", "wb") as handle:
        handle.truncate(LOCAL_BIG_INPUT_BYTES - 1)
    assert _direct(["--input", str(big)]) == ("in_memory", 1)
    # The user's own --direct_* options win; one of them sets the other sensibly.
    assert _direct(["--input", str(large), "--direct_num_workers=1"]) == ("in_memory", 1)
    assert _direct(["--input", str(small), "--direct_num_workers=2"]) == ("multi_processing", 2)
    assert _direct(["--input", str(small), "--direct_running_mode=multi_threading"]) == ("multi_threading", 4)
    assert _direct(["--input", str(large), "--direct_running_mode", "in_memory"]) == ("in_memory", 1)
    assert _direct(["--input", str(large), "--direct_running_mode=multi_processing", "--direct_num_workers=3"]) == (
        "multi_processing",
        3,
    )
    # An explicit runner is the user's: Beam's own defaults, and no runner made here.
    assert _direct(["--input", str(large), "--runner=FnApiRunner"]) == ("in_memory", 1)
    argv = ["--input", str(large), "--output", "/tmp/unused-output"]
    assert default_runner([*argv, "--runner=FnApiRunner"], pipeline_options_from_argv(argv)) is None
    assert type(default_runner(argv, pipeline_options_from_argv(argv))).__name__ == "FnApiRunner"
