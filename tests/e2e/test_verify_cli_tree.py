"""`python -m pipeline.verify` scans every file under OUTPUT, reports quarantine/ without scanning it,
searches records as text, and finds names in their other spellings and MIRAX Slidedat.ini values."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest

from pipeline.verify import main as verify_main
from pipeline.verify import verify_tree
from tests.e2e.test_verify_cli import _assert_no_phi, _cli, _fake_run
from tests.support.phi_fixtures import STUDY_DATE, phi_dicom_bytes
from tests.support.vendor_fixtures import SLIDEDAT_INI, icc_profile, write_output_tiff


def _verify(inp: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    status = verify_main(["--input", str(inp), "--output", str(out)])
    captured = capsys.readouterr()
    _assert_no_phi(captured.out + captured.err)
    return status, [line for line in captured.out.splitlines() if line.startswith("LEAK ")], captured.out


def test_copy_under_an_unexpected_folder_is_found(tmp_path: Path) -> None:
    inp, out = _fake_run(tmp_path)
    (out / "extra").mkdir()
    shutil.copy(next((inp / "studies").iterdir()), out / "extra" / "copy.dcm")
    result = _cli("--input", str(inp), "--output", str(out))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("LEAK ")]
    assert lines and all(line.startswith("LEAK extra/copy.dcm: ") for line in lines)
    assert any("PatientID in dicom(0010,0020)" in line for line in lines)
    _assert_no_phi(result.stdout + result.stderr)


def test_quarantine_is_reported_and_never_flagged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp, out = _fake_run(tmp_path)
    for index in range(2):
        held = out / "quarantine" / ("ab" * 32) / f"{index}.dcm"
        held.parent.mkdir(parents=True, exist_ok=True)
        held.write_bytes(phi_dicom_bytes())
    status, leaks, stdout = _verify(inp, out, capsys)
    assert status == 0 and leaks == []
    assert "QUARANTINE: 2 output(s) held back under quarantine/" in stdout


def test_name_variants_are_found_in_outputs_and_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp, out = _fake_run(tmp_path)
    # 'ZQXNAME^ALPHA' written given-name first, in another case, in the ICC profile of its output
    # and of a stray TIFF.
    output = next((out / "dicom").rglob("*.dcm"))
    clean = output.read_bytes()
    ds = pydicom.dcmread(output)
    ds.ICCProfile = icc_profile("Alpha Zqxname display")
    ds.save_as(output)
    (out / "extra").mkdir()
    write_output_tiff(out / "extra" / "x.tiff", icc=icc_profile("Alpha Zqxname display"))
    status, leaks, _ = _verify(inp, out, capsys)
    assert status == 1
    relpath = output.relative_to(out).as_posix()
    assert any(line.startswith(f"LEAK {relpath}: PatientName in dicom(0028,2000)") for line in leaks)
    assert any(line.startswith("LEAK extra/x.tiff: PatientName in tiff:ifd0:ICCProfile") for line in leaks)
    # Family-comma-given in a dead-letter message.
    output.write_bytes(clean)
    (out / "extra" / "x.tiff").unlink()
    (out / "dead_letter").mkdir()
    (out / "dead_letter" / "dead_letter-x.jsonl").write_text(json.dumps({"message": "zqxname, alpha"}) + "\n")
    hits = verify_tree(str(inp), str(out))
    assert {(h.output, h.location) for h in hits} == {("dead_letter/dead_letter-x.jsonl", "text:line1")}


def test_records_are_searched_as_text_without_the_run_date(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp, out = _fake_run(tmp_path)
    # A run on the day of the study: its id, file names and times hold the study date, by coincidence.
    run_id = f"{STUDY_DATE}T101500Z-1a2b3c4d"
    day = f"{STUDY_DATE[:4]}-{STUDY_DATE[4:6]}-{STUDY_DATE[6:]}"
    manifest = {"run_id": run_id, "started": f"{day}T10:15:00+00:00", "ended": f"{day}T10:16:00+00:00",
                "records": {"audit": f"audit/audit-{run_id}.jsonl"}, "counts": {"inputs": 3}}
    (out / "runs").mkdir()
    (out / "runs" / f"{run_id}.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    shutil.move(out / "audit" / "audit-00000-of-00001.jsonl", out / "audit" / f"audit-{run_id}.jsonl")
    status, leaks, _ = _verify(inp, out, capsys)
    assert (status, leaks) == (0, [])
    # A short value (a name component, too short for the raw byte rule) in a manifest is found.
    manifest["note"] = "ALPHA"
    (out / "runs" / f"{run_id}.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    status, leaks, _ = _verify(inp, out, capsys)
    assert status == 1 and leaks
    assert all(line.startswith(f"LEAK runs/{run_id}.json: ") and "PatientName" in line for line in leaks)


def test_slidedat_values_are_harvested_and_found(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp, out = _fake_run(tmp_path)
    mirax = inp / "mirax" / "slide1"
    mirax.mkdir(parents=True)
    (mirax / "Slidedat.ini").write_text(SLIDEDAT_INI, encoding="utf-8")
    status, leaks, _ = _verify(inp, out, capsys)
    assert (status, leaks) == (0, [])
    (out / "extra").mkdir()
    (out / "extra" / "notes.txt").write_text("slide zqxmrxbc-404 rescanned\n")
    status, leaks, _ = _verify(inp, out, capsys)
    assert status == 1
    assert leaks == ["LEAK extra/notes.txt: mirax:Slidedat:GENERAL.SLIDE_BARCODE in text:line1"]  # not also bytes@
