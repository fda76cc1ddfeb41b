"""The peer of bench/burned_in.py: Microsoft Presidio's DICOM image redactor, run in its own venv.

    .venv-bench/bin/python bench/presidio_peer.py JOB.json

Not run by hand: bench/burned_in.py writes JOB.json ({"files": [{"name", "path", "out"}], "result",
"repeat"}),
runs this script with .venv-bench's python and reads the result JSON. For each file it reads the DICOM
with pydicom, times `DicomImageRedactorEngine.redact_and_return_bbox(ds, fill="contrast",
use_metadata=True)` (the engine that `redact` wraps; the boxes are returned too) and saves the redacted
pixel array to `out` (.npy) for scoring.

The NLP engine: Presidio's default is spaCy's en_core_web_lg, which is not on PyPI and cannot be
downloaded here. The analyzer gets a blank English spaCy pipeline instead (tokenizer only), so the
pattern recognizers (dates, phone numbers, IDs, e-mails ...) and the DICOM metadata deny-list
(use_metadata=True: every value of an element whose name holds "name" or "patient", in several
casings and split into words) work, while NER-based PERSON, LOCATION and ORGANIZATION detection is
unavailable: names that are not in the header, and institution names, are found only by chance.

Setup: python3 -m venv .venv-bench && .venv-bench/bin/pip install presidio-image-redactor pydicom
(presidio-image-redactor brings presidio-analyzer, spaCy, pytesseract, opencv and python-gdcm;
tesseract itself is the system binary). Nothing of this is a dependency of the project.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from importlib import metadata

import numpy as np
import pydicom
import spacy
from presidio_analyzer import AnalyzerEngine
from presidio_analyzer.nlp_engine import SpacyNlpEngine
from presidio_image_redactor import DicomImageRedactorEngine, ImageAnalyzerEngine


class BlankSpacyNlpEngine(SpacyNlpEngine):
    """Presidio's spaCy engine over `spacy.blank("en")`: tokens, no entities (no model download)."""

    def load(self) -> None:
        self.nlp = {"en": spacy.blank("en")}


def build_engine() -> tuple[DicomImageRedactorEngine, list[str]]:
    nlp_engine = BlankSpacyNlpEngine(models=[{"lang_code": "en", "model_name": "blank:en"}])
    nlp_engine.load()
    analyzer = AnalyzerEngine(nlp_engine=nlp_engine, supported_languages=["en"])
    recognizers = sorted({r.name for r in analyzer.registry.recognizers})
    engine = DicomImageRedactorEngine(image_analyzer_engine=ImageAnalyzerEngine(analyzer_engine=analyzer))
    return engine, recognizers


def redact(engine: DicomImageRedactorEngine, path: str, repeat: int = 1) -> tuple[np.ndarray, list[dict], float, int]:
    """The redacted pixels, boxes, fastest time of `repeat` calls and the number of frames."""
    ds = pydicom.dcmread(path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    seconds = float("inf")
    for _ in range(max(repeat, 1)):
        start = time.perf_counter()
        out, boxes = engine.redact_and_return_bbox(ds, fill="contrast", use_metadata=True)
        seconds = min(seconds, time.perf_counter() - start)
    return np.asarray(out.pixel_array), boxes, seconds, frames


def main() -> None:
    with open(sys.argv[1]) as handle:
        job = json.load(handle)
    engine, recognizers = build_engine()
    if job["files"]:
        # Warm-up (lazy imports, first tesseract start), not timed: the smallest file.
        smallest = min(job["files"], key=lambda item: item.get("pixels", 0))
        with contextlib.suppress(Exception):  # reported below when the file is run for real
            redact(engine, smallest["path"])
    results: dict[str, dict] = {}
    for item in job["files"]:
        try:
            pixels, boxes, seconds, frames = redact(engine, item["path"], int(job.get("repeat", 1)))
            np.save(item["out"], pixels)
            results[item["name"]] = {
                "seconds": seconds,
                "frames": frames,
                "boxes": [{k: int(b[k]) for k in ("left", "top", "width", "height")} for b in boxes],
                "entities": sorted({str(b.get("entity_type", "")) for b in boxes}),
            }
        except Exception as exc:  # noqa: BLE001 - the peer failing on a file is a result
            results[item["name"]] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    versions = {p: metadata.version(p) for p in ("presidio-image-redactor", "presidio-analyzer", "spacy", "pydicom")}
    with open(job["result"], "w") as handle:
        json.dump({"versions": versions, "recognizers": recognizers, "results": results}, handle)


if __name__ == "__main__":
    main()
