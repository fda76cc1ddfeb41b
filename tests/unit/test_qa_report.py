"""The QA report: unreadable before thumbnails, self-contained HTML, and a real headless browser check."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import BEAM_TEST_ARGS, REPO_ROOT

from deid.qa.report import QaEntry, after_thumbnail, before_thumbnail, build_report, summary_from_audit
from deid.records import AuditRecord, DeadLetterRecord
from deid.settings import Box

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
WORDS = ("ZQXNAME", "ALPHA", "4242")


def _without_images(page: str) -> str:
    """The page's text with embedded images cut out: base64 contains any 3-letter marker by chance."""
    return re.sub(r"data:image/[a-z]+;base64,[A-Za-z0-9+/=]+", "data:image", page)


def _text_image(height: int = 400, width: int = 800) -> np.ndarray:
    image = np.full((height, width, 3), 235, np.uint8)
    cv2.putText(image, "ZQXNAME ALPHA", (20, 120), cv2.FONT_HERSHEY_SIMPLEX, 2.4, (10, 10, 10), 6)
    cv2.putText(image, "MRN 4242", (20, 300), cv2.FONT_HERSHEY_SIMPLEX, 2.4, (10, 10, 10), 6)
    return image


def _ocr(png_or_image: bytes | np.ndarray, upscale: int = 1) -> str:
    image = cv2.imdecode(np.frombuffer(png_or_image, np.uint8), cv2.IMREAD_COLOR) if isinstance(
        png_or_image, bytes) else png_or_image
    if upscale > 1:
        image = cv2.resize(image, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
    ok, png = cv2.imencode(".png", image)
    assert ok
    done = subprocess.run(["tesseract", "stdin", "stdout", "--psm", "6"], input=png.tobytes(),
                          capture_output=True, timeout=60, check=False)
    return done.stdout.decode("utf-8", errors="replace").upper()


def _entries_and_audit() -> tuple[list[QaEntry], list[AuditRecord]]:
    image = _text_image()
    redacted = image.copy()
    redacted[40:330, 10:700] = 0
    boxes = [Box(10, 40, 690, 290)]
    entries = [
        QaEntry("a" * 64, "dicom", before_thumbnail(image), after_thumbnail(redacted, boxes), boxes=1,
                stage_seconds={"read": 0.5, "deidentify": 1.25, "write": 0.25}),
        QaEntry("b" * 64, "wsi", before_thumbnail(image), after_thumbnail(redacted, [], source_size=(8000, 4000)),
                label="dropped", macro="blanked", tiles_passthrough=40, tiles_reencoded=4,
                stage_seconds={"read": 2.0, "tiles": 6.5, "assemble": 1.0}),
    ]
    audit = [
        AuditRecord("a" * 64, "dicom", "ok", ("dicom/1/2/3.dcm",), {"removed": 12, "replaced": 5}),
        AuditRecord("b" * 64, "wsi", "ok", ("wsi/KQ7ZP2M4XW9HTRV.tiff",), {"metadata_fields_removed": 6}),
        DeadLetterRecord("c" * 64, "invalid_input", "truncated", "dicom").to_audit(),
        DeadLetterRecord("d" * 64, "leak", "quarantined", "dicom").to_audit(),
    ]
    return entries, audit


@pytest.mark.needs_tool
def test_before_thumbnail_has_no_readable_text() -> None:
    if not shutil.which("tesseract"):
        pytest.skip("tesseract is not installed")
    image = _text_image()
    assert "ZQXNAME" in _ocr(image)  # the original is readable
    png = before_thumbnail(image)
    small = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert max(small.shape[:2]) <= 40
    for upscale in (1, 8, 20):
        text = _ocr(png, upscale)
        assert not any(word in text for word in WORDS), f"readable at x{upscale}"


def test_after_thumbnail_draws_boxes_scaled_from_source_size() -> None:
    image = np.full((100, 200, 3), 255, np.uint8)
    png = after_thumbnail(image, [Box(1000, 500, 2000, 1000)], source_size=(4000, 2000))
    out = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    red = (out[..., 2] > 200) & (out[..., 1] < 80)
    ys, xs = np.nonzero(red)
    assert abs(xs.min() - 50) <= 2 and abs(xs.max() - 150) <= 2 and abs(ys.min() - 25) <= 2


def test_thumbnails_of_16_bit_grey_and_rgba() -> None:
    for image in (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64), np.zeros((30, 50, 4), np.uint8)):
        assert before_thumbnail(image).startswith(b"\x89PNG")
        assert after_thumbnail(image, [(1, 1, 5, 5)]).startswith(b"\x89PNG")


def test_report_is_self_contained_and_numbers_match_audit() -> None:
    entries, audit = _entries_and_audit()
    summary = summary_from_audit(audit, entries)
    page = build_report(entries, summary, audit)
    assert "<script" not in page.lower() and "@import" not in page and "url(" not in page
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", page)
    assert page.count('src="data:image/png;base64,') == 4
    assert summary.inputs == 4 and summary.ok == 2 and summary.dead_letter == 2 and summary.leaks == 1
    assert summary.actions == {"metadata_fields_removed": 6, "removed": 12, "replaced": 5}
    assert summary.stage_seconds["read"] == 2.5
    assert "no text in them is" in page and "readable" in page
    assert "ZQX" not in _without_images(page)


def _browser_check(page_path: Path, tmp_path: Path) -> dict[str, object]:
    """Load the page in headless Chromium: screenshot it, and read image sizes and numbers back."""
    assert CHROMIUM
    probe = page_path.with_name("probe.html")
    script = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ids = ['sum-inputs','sum-ok','sum-dead-letter','sum-leaks','sum-outputs','sum-actions'];
  var out = {images: imgs.map(function (i) { return [i.complete, i.naturalWidth, i.naturalHeight]; }),
             numbers: {}, bars: document.querySelectorAll('#stage-chart rect.stage-bar').length,
             rows: document.querySelectorAll('#inputs tr.input').length};
  ids.forEach(function (id) { out.numbers[id] = document.getElementById(id).textContent.trim(); });
  var pre = document.createElement('pre'); pre.id = 'qa-probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""
    probe.write_text(page_path.read_text().replace("</body>", script + "</body>"))
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
              f"--user-data-dir={tmp_path / 'chrome-profile'}", "--virtual-time-budget=5000"]
    shot = tmp_path / "shot.png"
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1200,900", page_path.as_uri()],
                   capture_output=True, timeout=120, check=False)
    assert shot.exists() and shot.stat().st_size > 1000
    screenshot = cv2.imread(str(shot))
    assert screenshot is not None and screenshot.shape[:2] == (900, 1200)
    assert float(screenshot.std()) > 5  # not a blank page
    dom = subprocess.run([*common, "--dump-dom", probe.as_uri()], capture_output=True, timeout=120, check=False)
    match = re.search(r'<pre id="qa-probe">(.*?)</pre>', dom.stdout.decode("utf-8", errors="replace"), re.S)
    assert match, "the probe script did not run: " + dom.stderr.decode("utf-8", errors="replace")[-500:]
    import html

    return dict(json.loads(html.unescape(match.group(1))))


@pytest.mark.needs_tool
def test_report_in_headless_chromium(tmp_path: Path) -> None:
    if not CHROMIUM:
        pytest.skip("chromium is not installed")
    entries, audit = _entries_and_audit()
    page = tmp_path / "qa" / "index.html"
    page.parent.mkdir()
    page.write_text(build_report(entries, summary_from_audit(audit, entries), audit))
    result = _browser_check(page, tmp_path)
    images = result["images"]
    assert isinstance(images, list) and len(images) == 4
    assert all(complete and width > 0 and height > 0 for complete, width, height in images)
    assert result["numbers"] == {"sum-inputs": "4", "sum-ok": "2", "sum-dead-letter": "2", "sum-leaks": "1",
                                 "sum-outputs": "2", "sum-actions": "23"}
    assert result["bars"] == 5 and result["rows"] == 4


def test_write_qa_report_transform(tmp_path: Path) -> None:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms.qa import WriteQaReport

    entries, audit = _entries_and_audit()
    with beam.Pipeline(options=PipelineOptions(BEAM_TEST_ARGS)) as p:
        records = p | "Audit" >> beam.Create(audit)
        qa = p | "Qa" >> beam.Create(entries)
        _ = (records, qa) | WriteQaReport(str(tmp_path))
    page = (tmp_path / "qa" / "index.html").read_text()
    assert 'id="sum-inputs" data-value="4"' in page
    assert page.count("data:image/png;base64,") == 4


def _qa_wired() -> bool:
    return "qa_report" in (REPO_ROOT / "pipeline" / "main.py").read_text()


@pytest.mark.e2e
@pytest.mark.needs_tool
def test_pipeline_qa_report_matches_audit_in_chromium(tmp_path: Path) -> None:
    """The real run with --qa_report: every image loads and the summary equals the audit's numbers."""
    if not CHROMIUM:
        pytest.skip("chromium is not installed")
    if not _qa_wired():
        pytest.skip("--qa_report is not wired into pipeline/main.py yet")
    from test_verify_phi_fixtures import write_phi_dicoms, write_phi_svs

    from pipeline.main import main as pipeline_main

    inp, out = tmp_path / "input", tmp_path / "output"
    write_phi_dicoms(inp / "studies", 2)
    write_phi_svs(inp / "slides" / "ZQXSLIDE.svs")
    (inp / "bad.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00")
    assert pipeline_main([f"--input={inp}", f"--output={out}", "--qa_report", *BEAM_TEST_ARGS]) == 0
    page = out / "qa" / "index.html"
    assert page.exists()
    records = [json.loads(line) for f in (out / "audit").glob("*.jsonl") for line in f.read_text().splitlines()]
    result = _browser_check(page, tmp_path)
    images = result["images"]
    assert isinstance(images, list) and images
    assert all(width > 0 for _, width, _ in images)
    summary = summary_from_audit(records)
    assert result["numbers"] == {
        "sum-inputs": str(len(records)),
        "sum-ok": str(sum(r["status"] == "ok" for r in records)),
        "sum-dead-letter": str(sum(r["status"] != "ok" for r in records)),
        "sum-leaks": str(sum(r.get("error_kind") == "leak" for r in records)),
        "sum-outputs": str(sum(len(r["outputs"]) for r in records)),
        "sum-actions": str(sum(summary.actions.values())),
    }
    assert "ZQX" not in _without_images(page.read_text()).upper()
