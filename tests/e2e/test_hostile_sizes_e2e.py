"""Issue 11 parts 2, 3 and 8 through the real pipeline: decompression bombs and pixel data that does not
match its header are dead-lettered with the exact kind, nothing of them is published, the run's peak
memory stays bounded, and no dead-letter message spells input bytes.

One run (a subprocess, so that its peak RSS is measured alone) over one input folder holding every case.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import dicom_factory, hostile_inputs
from tests.support.env import BEAM_TEST_ARGS, REPO_ROOT

pytest.importorskip("openslide")

PEAK_RSS_BOUND_MB = 600


def _inputs(folder: Path) -> dict[str, tuple[str, bytes]]:
    """name -> (expected error_kind, or 'ok', input bytes)."""
    frame = hostile_inputs.jpeg_frame()
    garbage, _ = hostile_inputs.garbage_tag_instance()
    dicom = {
        "deflate-bomb.dcm": ("too_large", hostile_inputs.deflated_bomb(1 << 30)),
        "pixels-one-short.dcm": ("invalid_input", hostile_inputs.native_with_pixel_length(63)),
        "pixels-one-long.dcm": ("invalid_input", hostile_inputs.native_with_pixel_length(65)),
        "frames-3-fragments-2.dcm": (
            "invalid_input",
            dicom_factory.to_bytes(hostile_inputs.jpeg_instance([frame, frame], 3)),
        ),
        "jpeg-frame-bomb.dcm": (
            "too_large",
            dicom_factory.to_bytes(hostile_inputs.jpeg_instance([hostile_inputs.with_sof(frame, 65500, 65500)], 1)),
        ),
        "garbage-tag.dcm": ("invalid_input", garbage),
        "sound.dcm": ("ok", dicom_factory.to_bytes(dicom_factory.instance(1, 1))),
        "sound-deflated.dcm": ("ok", hostile_inputs.deflated_instance(number=2)),
    }
    for name, (_, data) in dicom.items():
        (folder / name).write_bytes(data)
    bomb = hostile_inputs.svs_with_sof(folder / "sof-bomb.svs", 65500, 65500)
    return {**dicom, "sof-bomb.svs": ("too_large", bomb.read_bytes())}


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[str, bytes]], int]:
    root = tmp_path_factory.mktemp("hostile")
    folder = root / "in"
    folder.mkdir()
    cases = _inputs(folder)
    out = root / "out"
    code = (
        "import json, resource, subprocess, sys\n"
        "done = subprocess.run([sys.executable, '-m', 'pipeline', *sys.argv[1:]], capture_output=True)\n"
        "print(json.dumps({'status': done.returncode,"
        " 'peak_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n"
    )
    args = ["--input", str(folder), "--output", str(out), *BEAM_TEST_ARGS]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=900, check=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["status"] == 0
    return out, cases, int(report["peak_kib"]) // 1024


def _records(out: Path, folder: str) -> dict[str, dict[str, object]]:
    lines = [line for path in (out / folder).glob("*.jsonl") for line in path.read_text().splitlines() if line]
    return {str(record["input_sha256"]): record for record in map(json.loads, lines)}


def test_every_case_gets_its_exact_kind(hostile_run: tuple[Path, dict[str, tuple[str, bytes]], int]) -> None:
    out, cases, _ = hostile_run
    audit, dead = _records(out, "audit"), _records(out, "dead_letter")
    for name, (kind, data) in cases.items():
        sha = hashlib.sha256(data).hexdigest()
        if kind == "ok":
            assert audit[sha]["status"] == "ok", name
            assert sha not in dead, name
        else:
            assert dead[sha]["error_kind"] == kind, (name, dead.get(sha))
            assert audit[sha]["status"] == "dead_letter" and audit[sha]["outputs"] == [], name


def test_nothing_of_the_refused_inputs_is_published(
    hostile_run: tuple[Path, dict[str, tuple[str, bytes]], int],
) -> None:
    out, cases, _ = hostile_run
    published = sorted(p for p in (out / "dicom").rglob("*") if p.is_file()) if (out / "dicom").exists() else []
    assert len(published) == sum(1 for kind, _ in cases.values() if kind == "ok")
    assert all(p.stat().st_size > 0 for p in published)
    assert not (out / "wsi").exists() or not any(p.is_file() for p in (out / "wsi").rglob("*"))


def test_the_run_stays_within_its_memory_bound(hostile_run: tuple[Path, dict[str, tuple[str, bytes]], int]) -> None:
    # Before: the deflate bomb alone took the run to 2.3 GB; the SOF bomb took the probe to 19.9 GB.
    _, _, peak_mb = hostile_run
    assert peak_mb < PEAK_RSS_BOUND_MB


def test_no_dead_letter_message_spells_garbage_header_bytes(
    hostile_run: tuple[Path, dict[str, tuple[str, bytes]], int],
) -> None:
    out, cases, _ = hostile_run
    _, garbage = hostile_inputs.garbage_tag_instance()
    text = "\n".join(str(r["message"]) for r in _records(out, "dead_letter").values())
    name = hostile_inputs.GARBAGE_NAME.encode()
    windows = {name[i : i + 4].decode() for i in range(len(name) - 3)}
    assert not {w for w in windows if w in text}
    group, element, length = (int.from_bytes(garbage[a:b], "little") for a, b in ((0, 2), (2, 4), (4, 8)))
    assert f"{group:04X}" not in text and f"{element:04X}" not in text and str(length) not in text
