"""The QA report: unreadable before thumbnails, self-contained HTML, and a real headless browser check."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from deid.qa.report import after_thumbnail, before_thumbnail, build_report, summary_from_audit
from deid.settings import Box
from tests.support.qa_pages import (
    CHROMIUM,
    browser_check,
    dead_letter_records,
    entries_and_audit,
    text_image,
    without_images,
)

WORDS = ("ZQXNAME", "ALPHA", "4242")


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


@pytest.mark.needs_tool
def test_before_thumbnail_has_no_readable_text() -> None:
    if not shutil.which("tesseract"):
        pytest.skip("tesseract is not installed")
    image = text_image()
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
    entries, audit = entries_and_audit()
    summary = summary_from_audit(audit, entries)
    page = build_report(entries, summary, audit)
    assert "<script" not in page.lower() and "@import" not in page and "url(" not in page
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", page)
    assert page.count('src="data:image/png;base64,') == 4
    assert summary.inputs == 4 and summary.ok == 2 and summary.dead_letter == 2 and summary.leaks == 1
    assert summary.actions == {"metadata_fields_removed": 6, "removed": 12, "replaced": 5}
    assert summary.stage_seconds["read"] == 2.5
    assert "no text in them is" in page and "readable" in page
    assert "ZQX" not in without_images(page)


def test_dead_letter_rows_show_error_kind_and_reason_and_no_summed_actions() -> None:
    entries, audit = entries_and_audit()
    page = build_report(entries, summary_from_audit(audit, entries), audit, dead_letter_records())
    rows = re.findall(r'<tr class="input" data-sha="(\w+)" data-status="dead_letter">(.*?)</tr>', page, re.S)
    assert [sha for sha, _ in rows] == ["c" * 12, "d" * 12]
    (_, truncated), (_, leak) = rows
    assert '<span class="error-kind-tag">invalid_input</span>' in truncated
    assert "not de-identified: the file ends inside an element (truncated)" in truncated
    assert '<span class="error-kind-tag">leak</span>' in leak and "quarantined" in leak
    assert "figcaption" not in truncated + leak  # no empty before/after captions
    # Per-action totals stay; the sum of unrelated counters is gone.
    assert 'id="sum-actions"' not in page
    assert "<li>removed: 12</li>" in page
    # Without the dead letters the rows still say what is missing instead of showing nothing.
    bare = build_report(entries, summary_from_audit(audit, entries), audit)
    assert bare.count("no dead-letter message was recorded") == 2


@pytest.mark.needs_tool
def test_report_in_headless_chromium(tmp_path: Path) -> None:
    if not CHROMIUM:
        pytest.skip("chromium is not installed")
    entries, audit = entries_and_audit()
    page = tmp_path / "qa" / "index.html"
    page.parent.mkdir()
    page.write_text(build_report(entries, summary_from_audit(audit, entries), audit, dead_letter_records()))
    result = browser_check(page, tmp_path)
    images = result["images"]
    assert isinstance(images, list) and len(images) == 4
    assert all(complete and width > 0 and height > 0 for complete, width, height in images)
    assert result["numbers"] == {"sum-inputs": "4", "sum-ok": "2", "sum-dead-letter": "2", "sum-leaks": "1",
                                 "sum-outputs": "2"}
    assert result["reasons"] == [f"not de-identified: {d.message}" for d in dead_letter_records()]
    assert result["bars"] == 5 and result["rows"] == 4


