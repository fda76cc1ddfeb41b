"""`python -m pipeline.verify`: exit 0 on a clean tree, 1 on planted leaks (never printing a value), 2 on bad args."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import tifffile

from pipeline.verify import main as verify_main
from pipeline.verify import verify_tree
from tests.support.env import BEAM_TEST_ARGS, REPO_ROOT
from tests.support.phi_fixtures import ALL_PHI, SLIDE_BARCODE, phi_dicom_bytes, write_phi_dicoms, write_phi_svs

PSEUDO = "KQ7ZP2M4XW9HTRVA"


def _scrub(data: bytes) -> tuple[bytes, str]:
    ds = pydicom.dcmread(io.BytesIO(data))
    for elem in list(ds):
        if elem.VR in {"PN", "LO", "SH", "DA", "LT", "ST", "SQ"} or elem.tag.is_private:
            del ds[elem.tag]
    ds.PatientName = PSEUDO
    ds.PatientIdentityRemoved = "YES"
    uids = [pydicom.uid.generate_uid() for _ in range(3)]
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = uids
    ds.file_meta.MediaStorageSOPInstanceUID = uids[2]
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue(), f"dicom/{uids[0]}/{uids[1]}/{uids[2]}.dcm"


def _fake_run(tmp_path: Path) -> tuple[Path, Path]:
    """An INPUT with PHI DICOMs and a slide, and an OUTPUT a correct de-identifier could have made."""
    inp, out = tmp_path / "input", tmp_path / "output"
    dicoms = write_phi_dicoms(inp / "studies", 2)
    slide = write_phi_svs(inp / "slides" / "ZQXSLIDE_ALPHA.svs")
    records = []
    for path in dicoms:
        data, relpath = _scrub(path.read_bytes())
        (out / relpath).parent.mkdir(parents=True, exist_ok=True)
        (out / relpath).write_bytes(data)
        records.append({"input_sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "kind": "dicom",
                        "status": "ok", "outputs": [relpath], "actions": {"removed": 12}})
    (out / "wsi").mkdir(parents=True)
    tifffile.imwrite(out / "wsi" / f"{PSEUDO}.tiff", np.zeros((64, 64, 3), np.uint8),
                     description="Aperio Image Library v12.0.15|AppMag = 20|MPP = 0.499")
    records.append({"input_sha256": hashlib.sha256(slide.read_bytes()).hexdigest(), "kind": "wsi",
                    "status": "ok", "outputs": [f"wsi/{PSEUDO}.tiff"], "actions": {}})
    (out / "audit").mkdir()
    (out / "audit" / "audit-00000-of-00001.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return inp, out


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run(
        [sys.executable, "-m", "pipeline.verify", *args],
        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT, env=env, check=False,
    )


def _assert_no_phi(text: str) -> None:
    for value in ALL_PHI:
        assert value.upper() not in text.upper(), "a PHI value was printed"


def test_clean_tree_passes_in_process(tmp_path: Path) -> None:
    inp, out = _fake_run(tmp_path)
    assert verify_tree(str(inp), str(out)) == []
    assert verify_main(["--input", str(inp), "--output", str(out)]) == 0


def test_planted_leaks_fail_the_command(tmp_path: Path) -> None:
    inp, out = _fake_run(tmp_path)
    clean = _cli("--input", str(inp), "--output", str(out))
    assert clean.returncode == 0, clean.stdout + clean.stderr
    # 1. An original file copied into the output, keeping its (PHI) name.
    original = next((inp / "studies").iterdir())
    shutil.copy(original, out / "dicom" / original.name)
    # 2. A PHI string appended to a TIFF description of an output slide.
    tiff = out / "wsi" / f"{PSEUDO}.tiff"
    with tifffile.TiffFile(tiff) as tif:
        description = tif.pages[0].description
    tifffile.imwrite(tiff, np.zeros((64, 64, 3), np.uint8), description=f"{description}|Note = {SLIDE_BARCODE}")
    result = _cli("--input", str(inp), "--output", str(out))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("LEAK ")]
    assert any("PatientName" in line and "<output whose name holds the value" in line for line in lines)
    assert any(f"wsi/{PSEUDO}.tiff" in line and "tiff:ImageDescription:Barcode" in line for line in lines)
    _assert_no_phi(result.stdout + result.stderr)


def test_leak_in_audit_text_is_reported(tmp_path: Path) -> None:
    inp, out = _fake_run(tmp_path)
    (out / "dead_letter").mkdir()
    (out / "dead_letter" / "dead_letter-00000-of-00001.jsonl").write_text(
        json.dumps({"input_sha256": "0" * 64, "error_kind": "x", "message": "bad value MRN-ZQX-4242"}) + "\n"
    )
    hits = verify_tree(str(inp), str(out))
    assert {h.output for h in hits} == {"dead_letter/dead_letter-00000-of-00001.jsonl"}


def test_quarantine_is_not_scanned(tmp_path: Path) -> None:
    inp, out = _fake_run(tmp_path)
    (out / "quarantine" / ("ab" * 32)).mkdir(parents=True)
    (out / "quarantine" / ("ab" * 32) / "0.dcm").write_bytes(phi_dicom_bytes())
    assert verify_tree(str(inp), str(out)) == []


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    assert _cli("--output", str(tmp_path)).returncode == 2  # --input missing
    assert verify_main(["--input", str(tmp_path / "none"), "--output", str(tmp_path / "none")]) == 2
    inp, out = _fake_run(tmp_path)
    assert verify_main(["--input", str(inp), "--output", str(out), "--retain_long_full_dates",
                        "--retain_long_modified_dates"]) == 2


def test_real_run_is_clean_then_planted_copy_fails(tmp_path: Path) -> None:
    """The real pipeline's output verifies clean; an original copied in makes the command fail."""
    from pipeline.main import main as pipeline_main

    inp, out = tmp_path / "input", tmp_path / "output"
    write_phi_dicoms(inp, 2)
    key = tmp_path / "k.key"
    key.write_bytes(b"k" * 32)
    assert pipeline_main([f"--input={inp}", f"--output={out}", f"--deid_key_file={key}", *BEAM_TEST_ARGS]) == 0
    assert list((out / "dicom").rglob("*.dcm")), "the run wrote no DICOM output"
    assert verify_main(["--input", str(inp), "--output", str(out)]) == 0
    shutil.copy(next(inp.iterdir()), out / "dicom" / "copy.dcm")
    assert verify_main(["--input", str(inp), "--output", str(out)]) == 1
