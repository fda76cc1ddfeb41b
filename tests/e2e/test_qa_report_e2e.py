"""A real run with --qa_report, its page loaded in headless Chromium and checked against the audit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.env import BEAM_TEST_ARGS, REPO_ROOT
from tests.support.qa_pages import CHROMIUM, browser_check, without_images


def _qa_wired() -> bool:
    return "qa_report" in (REPO_ROOT / "pipeline" / "main.py").read_text()


@pytest.mark.needs_tool
def test_pipeline_qa_report_matches_audit_in_chromium(tmp_path: Path) -> None:
    """The real run with --qa_report: every image loads and the summary equals the audit's numbers."""
    if not CHROMIUM:
        pytest.skip("chromium is not installed")
    if not _qa_wired():
        pytest.skip("--qa_report is not wired into pipeline/main.py yet")
    from pipeline.main import main as pipeline_main
    from tests.support.phi_fixtures import write_phi_dicoms, write_phi_svs

    inp, out = tmp_path / "input", tmp_path / "output"
    write_phi_dicoms(inp / "studies", 2)
    write_phi_svs(inp / "slides" / "ZQXSLIDE.svs")
    (inp / "bad.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00")
    assert pipeline_main([f"--input={inp}", f"--output={out}", "--qa_report", *BEAM_TEST_ARGS]) == 0
    page = out / "qa" / "index.html"
    assert page.exists()
    records = [json.loads(line) for f in (out / "audit").glob("*.jsonl") for line in f.read_text().splitlines()]
    result = browser_check(page, tmp_path)
    images = result["images"]
    assert isinstance(images, list) and images
    assert all(width > 0 for _, width, _ in images)
    assert result["numbers"] == {
        "sum-inputs": str(len(records)),
        "sum-ok": str(sum(r["status"] == "ok" for r in records)),
        "sum-dead-letter": str(sum(r["status"] != "ok" for r in records)),
        "sum-leaks": str(sum(r.get("error_kind") == "leak" for r in records)),
        "sum-outputs": str(sum(len(r["outputs"]) for r in records)),
    }
    # The dead-lettered input's row gives its reason, as its dead-letter record words it.
    dead = [json.loads(line) for f in (out / "dead_letter").glob("*.jsonl") for line in f.read_text().splitlines()]
    assert dead and sorted(result["reasons"]) == sorted(f"not de-identified: {d['message']}" for d in dead)
    assert "ZQX" not in without_images(page.read_text()).upper()
