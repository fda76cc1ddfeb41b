"""QA report inputs and checks shared by the unit, composite and e2e QA tests: a text image, QA
entries with their audit records, and a headless-Chromium load of a report page."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np

from deid.qa.report import QaEntry, after_thumbnail, before_thumbnail
from deid.records import AuditRecord, DeadLetterRecord
from deid.settings import Box

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def without_images(page: str) -> str:
    """The page's text with embedded images cut out: base64 contains any 3-letter marker by chance."""
    return re.sub(r"data:image/[a-z]+;base64,[A-Za-z0-9+/=]+", "data:image", page)


def text_image(height: int = 400, width: int = 800) -> np.ndarray:
    image = np.full((height, width, 3), 235, np.uint8)
    cv2.putText(image, "ZQXNAME ALPHA", (20, 120), cv2.FONT_HERSHEY_SIMPLEX, 2.4, (10, 10, 10), 6)
    cv2.putText(image, "MRN 4242", (20, 300), cv2.FONT_HERSHEY_SIMPLEX, 2.4, (10, 10, 10), 6)
    return image


def entries_and_audit() -> tuple[list[QaEntry], list[AuditRecord]]:
    image = text_image()
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
        *(record.to_audit() for record in dead_letter_records()),
    ]
    return entries, audit


def dead_letter_records() -> list[DeadLetterRecord]:
    """The dead letters behind the two dead-letter audit records of `entries_and_audit`."""
    return [
        DeadLetterRecord("c" * 64, "invalid_input", "the file ends inside an element (truncated)", "dicom"),
        DeadLetterRecord("d" * 64, "leak", "an output held an identifying value of its input; quarantined", "dicom"),
    ]


def browser_check(page_path: Path, tmp_path: Path) -> dict[str, object]:
    """Load the page in headless Chromium: screenshot it, and read image sizes and numbers back."""
    assert CHROMIUM
    probe = page_path.with_name("probe.html")
    script = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ids = ['sum-inputs','sum-ok','sum-dead-letter','sum-leaks','sum-outputs'];
  var out = {images: imgs.map(function (i) { return [i.complete, i.naturalWidth, i.naturalHeight]; }),
             numbers: {}, bars: document.querySelectorAll('#stage-chart rect.stage-bar').length,
             rows: document.querySelectorAll('#inputs tr.input').length,
             reasons: Array.prototype.map.call(document.querySelectorAll('#inputs .dead-letter-reason'),
                                               function (e) { return e.textContent.trim(); })};
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
