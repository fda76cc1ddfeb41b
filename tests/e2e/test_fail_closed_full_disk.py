"""A full disk (issue 11, part 6), on a real tiny tmpfs: exit 1 with one line and no traceback,
nothing partial under dicom/ or wsi/, and none of the run's temporary files left behind.

Mounting a tmpfs needs root (CI runs as root); elsewhere these tests skip with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deid.errors import NO_SPACE_MESSAGE
from pipeline.main import main
from tests.support import dicom_factory
from tests.support.env import BEAM_TEST_ARGS, REPO_ROOT
from tests.support.wsi_factory import write_aperio_svs

KEY = b"full-disk-test-key-0123456789abcdef"
# 30 instances of ~12 KiB and a ~350 KiB slide whose outputs and scratch take ~1 MiB.
INSTANCES = 30


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("full-disk")
    (root / "in" / "studies").mkdir(parents=True)
    (root / "in" / "slides").mkdir()
    for number in range(1, INSTANCES + 1):
        ds = dicom_factory.instance(1 + number % 2, number, rows=64, columns=64)
        (root / "in" / "studies" / f"ct_{number}.dcm").write_bytes(dicom_factory.to_bytes(ds))
    write_aperio_svs(root / "in" / "slides" / "slide.svs", width=2048, height=1536, tile=256, downsamples=(1, 4))
    (root / "deid.key").write_bytes(KEY)
    return root


@pytest.fixture(scope="module")
def reference(inputs: Path) -> Path:
    """The same inputs and key into a roomy OUTPUT: what a full run publishes."""
    out = inputs / "reference"
    args = ["--input", str(inputs / "in"), "--output", str(out), "--deid_key_file", str(inputs / "deid.key")]
    assert main([*args, *BEAM_TEST_ARGS]) == 0
    assert any((out / "dicom").rglob("*.dcm")) and any((out / "wsi").iterdir())
    return out


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """mount(size) -> a fresh tmpfs of that size (unmounted after the test)."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        where = tmp_path / f"disk-{len(mounted)}"
        where.mkdir()
        if os.geteuid() != 0:
            pytest.skip("mounting a tiny tmpfs needs root (CI runs as root)")
        try:
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, check=False
            )
        except FileNotFoundError:
            pytest.skip("no mount(8) on this machine")
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here (mount exit {done.returncode}): needs CAP_SYS_ADMIN")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _run(inputs: Path, output: Path, scratch: Path) -> subprocess.CompletedProcess[str]:
    """`python -m pipeline` as a user runs it, so that stderr is exactly what a console shows."""
    argv = [
        sys.executable,
        "-m",
        "pipeline",
        "--input",
        str(inputs / "in"),
        "--output",
        str(output),
        "--deid_key_file",
        str(inputs / "deid.key"),
        "--scratch_location",
        str(scratch),
        *BEAM_TEST_ARGS,
    ]
    return subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.mark.parametrize(
    ("case", "disk_size"),
    [
        ("output-full-while-staging", "200k"),  # not even the DICOM instances fit
        ("output-full-after-dicom", "500k"),  # the instances are published, the slide does not fit
        ("scratch-full", "96k"),  # OUTPUT has room; the slide's tile scratch does not
    ],
)
def test_a_full_disk_stops_the_run_with_one_line_and_leaves_nothing_partial(
    inputs: Path, reference: Path, tiny_disk: Callable[[str], Path], tmp_path: Path, case: str, disk_size: str
) -> None:
    disk = tiny_disk(disk_size)
    output = tmp_path / "roomy-out" if case == "scratch-full" else disk / "out"
    scratch = disk / "scratch"

    done = _run(inputs, output, scratch)

    assert done.returncode == 1, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {NO_SPACE_MESSAGE}"]
    assert done.stderr.rstrip().splitlines()[-1] == errors[0]
    assert "Traceback" not in done.stderr and "Errno 28" not in done.stderr
    assert not [line for line in done.stderr.splitlines() if line.startswith(("ERROR", "CRITICAL"))]
    # Nothing partial: every published file is whole, byte for byte what the full run publishes.
    published = [p for folder in ("dicom", "wsi") for p in _files(output / folder)]
    for path in published:
        relative = path.relative_to(output)
        assert path.stat().st_size > 0 and path.read_bytes() == (reference / relative).read_bytes(), relative
    assert not _files(output / "wsi")  # the slide never fit
    # No temporary file of the run is left: staged parts, scratch tiles, zero-byte leftovers.
    assert not _files(output / ".tmp")
    assert not _files(scratch)
    assert not [p for p in _files(disk) if p.stat().st_size == 0]
    assert not [p for p in _files(output) if p.suffix in {".tmp", ".part"}]
    for manifest in _files(output / "runs"):  # written when the cleanup freed enough room
        body = json.loads(manifest.read_text())
        assert (body["outcome"], body["exit_status"]) == ("failed", 1)
    if case != "output-full-while-staging":
        assert published  # some outputs were published before the disk filled: the check above saw them
