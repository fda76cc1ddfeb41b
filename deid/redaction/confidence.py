"""Confidence of each text candidate, in [0, 1], and what a review threshold makes of it.

A *candidate* is a box the redaction engine proposes to redact. Its score says how sure the engine
is that redacting that box is right: that the box holds text and covers it completely.

* `detect`: `detect_score`, the detector's evidence for the line, Platt-scaled. The evidence
  (`detect_evidence`) sums how far the detector's own measurements of the line
  (`deid.redaction.detect.TextLine`: stroke contrast, glyph count, height spread, alignment,
  isolation) lie past the strict test's limits, plus a bonus for passing that test, minus a penalty
  for one lone glyph and for glyphs all alike at one step (dotted lines, dashes, ticks). The Platt
  coefficients were fitted by `scripts/calibrate_text_scores.py` on labelled synthetic images (text
  of random fonts, sizes, contrasts, blur, cut off or half hidden, over five kinds of ground, beside
  confusers: dotted and dashed lines, ruler ticks, rows of blobs, caliper crosses, hatching), where
  a candidate is right when it holds text. Reliability on the held-out third is in the comment at
  PLATT. Calibrated on that mix, not on any site's images: read the score as a ranking with roughly
  those rates, not as a guarantee. Measured on the project's own cases: clear type (ultrasound
  annotations at 160..230 grey levels, 10-40 px) scores 0.84..0.95; type at 85..95 levels over a
  dark ground 0.46..0.69, two characters alone 0.51..0.64.
* `ocr`: `ocr_score` combines tesseract's word confidence (0..100) with what the words matched:
  a harvested value of the instance (names, IDs, dates from its header), a PHI pattern (dates, long
  numbers, `DOE^JOHN`, `MRN:`), or only the PHI-first rule (a word that is not plain clinical
  wording). Boxes whose words are all plain clinical wording read with good confidence are not
  candidates (nothing to redact); boxes tesseract reads nothing in, or reads clinical wording in
  with poor confidence, are candidates with a low score: the machine cannot tell.

A candidate is *redacted* when its score is at or above the review threshold, *covered* when it is
below but lies inside boxes that are redacted anyway (a user region, a confident line), and
*pending* otherwise; an input with a pending candidate is held for review (deid/review/decision.py).
Threshold 0 means no review: every candidate the strict detector or OCR would redact is redacted,
and near misses and undecided OCR boxes are not searched for, as before review existed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from deid.redaction.detect import TextLine
from deid.settings import Box

# Kinds of candidate: found by the detector, confirmed or read by OCR, a user region, a reviewer's box.
CANDIDATE_KINDS = ("detect", "ocr", "region", "reviewer")
STATUSES = ("redacted", "covered", "pending")

# The detector's evidence for a line: how far each measurement lies past the strict test's limit
# (DetectParams), in units of a typical margin, clipped so that no single measurement decides.
# (feature, limit, unit, low clip, high clip, weight); a positive unit means larger is better.
EVIDENCE = (
    ("contrast", 100.0, 40.0, -1.5, 2.0, 1.0),
    ("glyphs", 3.0, 0.0, -1.0, 2.0, 1.0),  # log2(glyphs / 3)
    ("spread", 0.45, -0.2, -2.0, 1.0, 0.5),
    ("align", 0.30, -0.15, -2.0, 1.0, 0.75),
    ("isolation", 0.45, -0.2, -2.0, 1.0, 0.5),
)
STRICT_WEIGHT = 1.0
# Dotted lines, dashes, tick marks, hatching: glyphs all of one height and one width at one step,
# which printed text (letters of different widths, ascenders, digits) rarely is.
REGULAR_SPREAD = 0.1
REGULAR_WIDTH_CV = 0.15
REGULAR_STEP_CV = 0.1
REGULAR_WEIGHT = 3.0
# One glyph is weaker evidence than a line of them (a lone stroke, a ruler).
SINGLE_GLYPH_WEIGHT = 1.5
# Platt scaling of the evidence, fitted by scripts/calibrate_text_scores.py (--seed 7, 1600 images).
PLATT = (0.5856, -1.2742)
# Reliability on the held-out third (774 candidates, 1682 of 2321 positive; AUC 0.745):
#   score 0.2-0.4: 18 candidates, observed text 0.22   score 0.4-0.6: 108, observed 0.30
#   score 0.6-0.8: 225, observed 0.80                   score 0.8-0.9: 335, observed 0.90
#   score 0.9-1.0:  88, observed 0.80 (confusers the detector takes for strong type: ruler ticks)

# Score bands counted in the audit (actions `text_score_<low>_<high>`), fixed whatever the threshold.
SCORE_BANDS = ((0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 0.9), (0.9, 1.0))

# ocr: weight of what the words matched, and the confidence below which a reading is unreliable.
OCR_MATCH_WEIGHTS = {"term": 1.0, "pattern": 0.95, "unclassified": 0.85}
OCR_UNSURE_CONFIDENCE = 60.0
# ocr: a box the detector calls text but tesseract reads nothing in, or reads only clinical wording in
# with poor confidence: the detector's score, scaled down (the words could be anything).
OCR_UNREAD_FACTOR = 0.5


@dataclass(frozen=True)
class Candidate:
    """One proposed redaction: a box (image or level-0 pixels), its score and kind, and its status
    ('redacted', 'covered' or 'pending'; see the module docstring). No text read from the image."""

    box: Box
    score: float
    kind: str = "detect"
    status: str = "redacted"

    @property
    def pending(self) -> bool:
        return self.status == "pending"

    def with_offset(self, dx: int, dy: int) -> Candidate:
        return Candidate(
            Box(self.box.x + dx, self.box.y + dy, self.box.width, self.box.height), self.score, self.kind, self.status
        )


def detect_evidence(line: TextLine) -> float:
    """The detector's evidence that `line` is text it boxes whole (0 near the strict test's limits)."""
    total = STRICT_WEIGHT if line.strict else 0.0
    for name, limit, unit, low, high, weight in EVIDENCE:
        if name == "glyphs":
            margin = math.log2(max(1, line.glyphs) / limit)
        else:
            margin = (float(getattr(line, name)) - limit) / unit
        total += weight * max(low, min(high, margin))
    if (
        line.glyphs >= 3
        and line.spread < REGULAR_SPREAD
        and line.width_cv < REGULAR_WIDTH_CV
        and line.step_cv < REGULAR_STEP_CV
    ):
        total -= REGULAR_WEIGHT
    if line.glyphs <= 1:
        total -= SINGLE_GLYPH_WEIGHT
    return total


def detect_score(line: TextLine, platt: tuple[float, float] = PLATT) -> float:
    """P(redacting this line is right): the evidence, Platt-scaled, in [0, 1]."""
    a, b = platt
    z = a * detect_evidence(line) + b
    return round(1.0 / (1.0 + math.exp(-max(-40.0, min(40.0, z)))), 4)


def ocr_score(match: str | None, confidences: Iterable[float], detect: float) -> float:
    """Score of an OCR-read box: `match` is 'term', 'pattern', 'unclassified' (words that call for
    redaction) or None (no word read, or only clinical wording read with poor confidence);
    `confidences` are tesseract's word confidences (0..100) of the box's words; `detect` is the
    detector's own score of the box."""
    values = [max(0.0, min(100.0, c)) for c in confidences]
    if match is None:
        return round(OCR_UNREAD_FACTOR * detect, 4)
    reading = (sum(values) / len(values) / 100.0) if values else 0.0
    return round(OCR_MATCH_WEIGHTS[match] * (0.5 + 0.5 * reading), 4)


# A candidate below the threshold is covered when this much of it lies inside redacted boxes (the
# rest is the padding around its glyphs).
COVERED_FRACTION = 0.9


def settle(candidates: Iterable[Candidate], threshold: float, applied: Iterable[Box] = ()) -> list[Candidate]:
    """Each candidate's status under `threshold`: redacted at or above it, covered when below it but
    at least COVERED_FRACTION inside the union of `applied` boxes and the redacted candidates,
    pending otherwise."""
    items = list(candidates)
    redacting = [c.box for c in items if c.score >= threshold] + list(applied)
    out = []
    for candidate in items:
        if candidate.score >= threshold:
            status = "redacted"
        elif _inside_union(candidate.box, redacting):
            status = "covered"
        else:
            status = "pending"
        out.append(Candidate(candidate.box, candidate.score, candidate.kind, status))
    return out


def _inside_union(box: Box, boxes: Sequence[Box]) -> bool:
    """Whether COVERED_FRACTION of the pixels of `box` lie in the union of `boxes`."""
    overlapping = [b for b in boxes if _overlaps(box, b)]
    if not overlapping:
        return False
    mask = np.zeros((box.height, box.width), bool)
    for other in overlapping:
        x0, y0 = max(0, other.x - box.x), max(0, other.y - box.y)
        x1 = min(box.width, other.x + other.width - box.x)
        y1 = min(box.height, other.y + other.height - box.y)
        mask[y0:y1, x0:x1] = True
    return float(mask.mean()) >= COVERED_FRACTION


def _overlaps(a: Box, b: Box) -> bool:
    return a.x < b.x + b.width and b.x < a.x + a.width and a.y < b.y + b.height and b.y < a.y + a.height


def band_name(low: float, high: float) -> str:
    return f"text_score_{round(low * 100):02d}_{round(high * 100):02d}"


def band_counts(scores: Iterable[float]) -> dict[str, int]:
    """Counts per SCORE_BANDS band (the last band includes 1.0), named for the audit's actions."""
    counts = {band_name(low, high): 0 for low, high in SCORE_BANDS}
    for score in scores:
        for low, high in SCORE_BANDS:
            if low <= score < high or (high == 1.0 and score >= 1.0):
                counts[band_name(low, high)] += 1
                break
    return counts
