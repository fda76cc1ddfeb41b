"""Synthetic ultrasound frames for the review tests: strong burned-in text (scores at or above the
default --review_threshold 0.8, redacted automatically) and faint or partial text (below it, held).

`write_us(path, series, number, strong=..., faint=..., partial=...)` writes one single-frame
MONOCHROME2 instance and returns the ink masks of what it drew, so tests can check what a redaction
covered. Text values start with ZQX so that leak checks can search for them.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from tests.support import dicom_factory, wsi_factory
from tests.support.qa_pages import CHROMIUM
from tests.support.text_images import black_background, draw_text

ROWS, COLUMNS = 240, 320
STRONG_TEXT = "ZQX^PATIENT 2024-01-10"
FAINT_TEXT = "ZQXFAINT 1961-03-12"
PARTIAL_TEXT = "ZQ"
# Grey levels of the text over a ground of 0..5: clear type, and type just above the stroke threshold.
STRONG_LEVEL, FAINT_LEVEL = 230, 90


@dataclass(frozen=True)
class Drawn:
    strong: np.ndarray | None
    faint: np.ndarray | None
    partial: np.ndarray | None


def us_frame(
    *, strong: bool = True, faint: bool = False, partial: bool = False, seed: int = 0
) -> tuple[np.ndarray, Drawn]:
    frame = black_background(ROWS, COLUMNS, channels=1, seed=seed)
    ink_strong = draw_text(frame, STRONG_TEXT, (20, 40), color=STRONG_LEVEL).ink if strong else None
    ink_faint = draw_text(frame, FAINT_TEXT, (20, 200), color=FAINT_LEVEL).ink if faint else None
    ink_partial = draw_text(frame, PARTIAL_TEXT, (250, 120), color=STRONG_LEVEL).ink if partial else None
    return frame, Drawn(ink_strong, ink_faint, ink_partial)


def write_us(
    path: Path, series: int, number: int, *, strong: bool = True, faint: bool = False, partial: bool = False
) -> Drawn:
    ds = dicom_factory.ultrasound("YES")
    uid_source = dicom_factory.instance(series, number)
    ds.SOPInstanceUID = uid_source.SOPInstanceUID
    ds.SeriesInstanceUID = uid_source.SeriesInstanceUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    frame, drawn = us_frame(strong=strong, faint=faint, partial=partial, seed=series * 100 + number)
    ds.Rows, ds.Columns = ROWS, COLUMNS
    if "NumberOfFrames" in ds:
        del ds.NumberOfFrames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = frame.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(dicom_factory.to_bytes(ds))
    return drawn


def write_slide(path: Path, *, strong: bool = True, partial: bool = False, tile: int = 256) -> None:
    """A generic tiled TIFF (1024 x 768, two levels) of tissue-like texture with dark text burned in:
    a clear line (strong), and two characters alone (partial: below the default threshold)."""
    image = wsi_factory.tissue(1024, 768)
    if strong:
        wsi_factory.draw_text(image, 60, 80, "ZQXSLIDE 2024-01-10", scale=1.2)
    if partial:
        wsi_factory.draw_text(image, 700, 520, PARTIAL_TEXT, scale=1.2)
    levels = [image, image[::2, ::2].copy()]
    path.parent.mkdir(parents=True, exist_ok=True)
    with tifffile.TiffWriter(path) as tif:
        for index, level in enumerate(levels):
            tif.write(
                level,
                tile=(tile, tile),
                compression="jpeg",
                compressionargs={"level": 90},
                photometric="rgb",
                subfiletype=0 if index == 0 else 1,
                metadata=None,
                software=False,
            )


def review_page_probe(page: Path, tmp_path: Path) -> dict[str, object]:
    """Load review/index.html in headless Chromium: per held input its images (loaded, natural
    size), numbered candidate boxes by status with their laid-out widths, and the summary numbers."""
    assert CHROMIUM
    probe = page.with_name("probe.html")
    script = """<script>
window.addEventListener('load', function () {
  var out = {sections: [], summary: {}};
  var s = document.getElementById('review-summary');
  out.summary = {held: s.dataset.held, pending: s.dataset.pending, sampled: s.dataset.sampled};
  document.querySelectorAll('section.held').forEach(function (sec) {
    var imgs = Array.prototype.slice.call(sec.querySelectorAll('img'));
    var boxes = Array.prototype.slice.call(sec.querySelectorAll('g.candidate'));
    out.sections.push({sha: sec.dataset.sha, reason: sec.dataset.reason, pending: sec.dataset.pending,
      images: imgs.map(function (i) { return [i.complete, i.naturalWidth, i.naturalHeight]; }),
      boxes: boxes.map(function (g) { return [g.dataset.number, g.getAttribute('class'),
        g.querySelector('text').textContent, g.querySelector('rect').getBoundingClientRect().width]; }),
      rows: sec.querySelectorAll('table.candidates tr.row').length,
      commands: sec.querySelector('pre.commands').textContent});
  });
  var pre = document.createElement('pre'); pre.id = 'review-probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""
    probe.write_text(page.read_text().replace("</body>", script + "</body>"))
    common = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chrome-profile'}",
        "--virtual-time-budget=5000",
    ]
    dom = subprocess.run([*common, "--dump-dom", probe.as_uri()], capture_output=True, timeout=120, check=False)
    match = re.search(r'<pre id="review-probe">(.*?)</pre>', dom.stdout.decode("utf-8", errors="replace"), re.S)
    assert match, "the probe did not run: " + dom.stderr.decode("utf-8", errors="replace")[-500:]
    probe.unlink()
    return dict(json.loads(html.unescape(match.group(1))))
