"""Confirm detected text boxes with tesseract (`--redact_text ocr`).

All candidate boxes of one image are cropped, normalised (dark text on white, upscaled so type is
about 40 px tall) and stacked into one strip that a single `tesseract stdin stdout --psm 6 tsv`
process reads; each recognised word is mapped back to its box by its vertical position. A box is
kept when its words match:

* `ocr_terms`: values harvested from the metadata (names, IDs, dates). Terms are split on
  separators (`^`, space, `-`, `/`, `.`, `,`); each word is compared case-insensitively on its
  letters and digits, allowing one OCR error in tokens of five or more characters. DICOM dates
  (YYYYMMDD) also match their day-month-year and month-day-year digit orders.
* `ocr_phi_patterns`: dates, long digit runs and accession-like letter-digit codes, DICOM
  person names (`DOE^JOHN`) and label words that introduce identifiers (`Name:`, `DOB`, `MRN`, ...);
  and, PHI first, any word that is not plain clinical or technical wording (deid/redaction/wording.py):
  what cannot be classified is redacted.
* with no terms and patterns off: any word with at least two letters or digits.

`ocr_scored` also scores each box (deid/redaction/confidence.py: the words' tesseract confidence and
what they matched) and, under review, returns the boxes OCR cannot decide (nothing read, or clinical
wording read poorly) at a low score, so that a person looks at them.

Recognised text is PHI: it never leaves this module (not logged, not in exceptions).
Limits: tesseract misreads small, low-contrast or stylised type; a misread value escapes term
matching, so terms are a narrowing filter, not a guarantee. Use `detect` (redact every text-like
box) when recall matters more than keeping harmless text such as scale bars.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np

from deid.errors import OcrUnavailableError
from deid.redaction.confidence import OCR_UNSURE_CONFIDENCE, ocr_score
from deid.redaction.detect import to_gray
from deid.redaction.wording import may_stay
from deid.settings import Box

TESSERACT_TIMEOUT_S = 120
TARGET_HEIGHT = 40
MAX_UPSCALE = 4.0
GAP = 24

_MONTHS = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
# Accession-like letter-digit codes; technical values such as '250mAs' look alike, so this pattern
# does not override the clinical-wording classification (wording.py).
_ACCESSION_SOURCE = r"\b(?=[A-Za-z0-9\-]*\d)(?=[A-Za-z0-9\-]*[A-Za-z])[A-Za-z0-9\-]{6,}\b"
_PATTERNS = tuple(
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\b\d{1,2}[/.\-]\d{1,2}[/.\-]\d{2,4}\b",  # 12/03/1961, 3.12.61
        r"\b(?:19|20)\d{2}[/.\-]\d{1,2}[/.\-]\d{1,2}\b",  # 1961-03-12
        r"\b\d{1,2}[\s\-/.]?" + _MONTHS + r"[\s\-/.,]*\d{2,4}\b",  # 12-MAR-1961, 12 March 61
        _MONTHS + r"\s*\d{1,2},?\s*(?:19|20)\d{2}\b",  # March 12, 1961
        r"(?<!\d)(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?!\d)",  # 19610312
        r"(?<![A-Za-z0-9])[A-Za-z]{0,4}[#:\-]?\d[\d\-]{5,}\d?(?![A-Za-z0-9])",  # MRN-like: 6+ digits
        r"[A-Za-z]+\^[A-Za-z^]+",  # DOE^JOHN
        _ACCESSION_SOURCE,
        r"\b(?:name|patient|pat|pt|dob|birth|born|mrn|acc|accession|id|ssn|phone|address)\b\s*[:#.]",
        r"\b(?:dob|mrn|ssn)\b",
    )
)


_ACCESSION_LIKE = next(p for p in _PATTERNS if p.pattern == _ACCESSION_SOURCE)


class _HasOcrSettings(Protocol):
    @property
    def ocr_terms(self) -> tuple[str, ...]: ...

    @property
    def ocr_phi_patterns(self) -> bool: ...


@dataclass(frozen=True)
class Word:
    """One recognised word and the index of the box it came from."""

    box_index: int
    text: str = field(repr=False)  # text read from the pixels: burned-in PHI
    confidence: float


def tesseract_path() -> str:
    path = shutil.which("tesseract")
    if path is None:
        raise OcrUnavailableError(
            "--redact_text ocr needs the tesseract program on PATH (Debian: apt-get install "
            "tesseract-ocr); install it on the workers or use --redact_text detect"
        )
    return path


def ocr_confirm(image: np.ndarray, boxes: Sequence[Box], config: _HasOcrSettings) -> list[Box]:
    """The boxes of `image` whose recognised words match `config` (see the module docstring)."""
    return [box for box, _score in ocr_scored(image, boxes, [1.0] * len(boxes), config)]


def ocr_scored(
    image: np.ndarray,
    boxes: Sequence[Box],
    detect_scores: Sequence[float],
    config: _HasOcrSettings,
    *,
    undecided: bool = False,
) -> list[tuple[Box, float]]:
    """(box, score) of each box OCR calls for redaction, scored by deid.redaction.confidence.ocr_score
    from the words' tesseract confidences and what they matched. With `undecided`, also the boxes
    tesseract reads nothing in, or reads only clinical wording in with less than
    OCR_UNSURE_CONFIDENCE, at a low score (the machine cannot tell: a person should look)."""
    pairs = [(b, s) for b, s in zip(boxes, detect_scores, strict=True) if b.width >= 2 and b.height >= 2]
    if not pairs:
        return []
    words = read_words(image, [b for b, _ in pairs])
    matcher = TermMatcher(config.ocr_terms)
    by_box: dict[int, list[Word]] = {}
    for word in words:
        by_box.setdefault(word.box_index, []).append(word)
    scored = []
    for index, (box, detect) in enumerate(pairs):
        found = by_box.get(index, [])
        match = match_kind([w.text for w in found], matcher, config.ocr_phi_patterns)
        confidences = [w.confidence for w in found]
        if match in ("term", "pattern", "unclassified"):
            scored.append((box, ocr_score(match, confidences, detect)))
        elif undecided and (
            match == "unread" or (sum(confidences) / max(1, len(confidences))) < OCR_UNSURE_CONFIDENCE
        ):
            scored.append((box, ocr_score(None, confidences, detect)))
    return scored


def box_matches(texts: Sequence[str], matcher: TermMatcher, patterns: bool) -> bool:
    """Whether the words of one box call for redaction under the configured terms and patterns."""
    return match_kind(texts, matcher, patterns) in ("term", "pattern", "unclassified")


def match_kind(texts: Sequence[str], matcher: TermMatcher, patterns: bool) -> str:
    """What the words of one box match: 'term' (a harvested value), 'pattern' (a PHI pattern),
    'unclassified' (a word that is not plain clinical wording: PHI first, or any word when neither
    terms nor patterns are configured), 'clinical' (nothing to redact) or 'unread' (no word)."""
    if not texts:
        return "unread"
    if not matcher.active and not patterns:
        return "unclassified" if any(len(_alnum(t)) >= 2 for t in texts) else "clinical"
    if matcher.active and matcher.matches(texts):
        return "term"
    if patterns:
        # PHI first: a box stays only when every word in it is plain clinical wording (wording.py)
        # and no pattern spans its words ('3/9/12' is three short numbers and a date).
        if not all(may_stay(t) for t in texts):
            return "unclassified"
        line = " ".join(texts)
        if any(p.search(line) for p in _PATTERNS if p is not _ACCESSION_LIKE):
            return "pattern"
    return "clinical"


class TermMatcher:
    """Case-insensitive matching of OCR words against metadata values, tolerant of one misread."""

    def __init__(self, terms: Iterable[str]) -> None:
        tokens: set[str] = set()
        digit_forms: set[str] = set()
        for term in terms:
            whole = _alnum(term)
            if len(whole) >= 2:
                tokens.add(whole)
            for part in re.split(r"[\s^\-/.,:;_]+", term):
                part = _alnum(part)
                if len(part) >= 2:
                    tokens.add(part)
            digits = re.sub(r"\D", "", term)
            if len(digits) == 8 and _is_yyyymmdd(digits):
                y, m, d = digits[:4], digits[4:6], digits[6:]
                digit_forms.update({digits, d + m + y, m + d + y, d + m + y[2:], m + d + y[2:]})
            elif len(digits) >= 4:
                digit_forms.add(digits)
        self.tokens = frozenset(tokens)
        self.digit_forms = frozenset(digit_forms)

    @property
    def active(self) -> bool:
        return bool(self.tokens or self.digit_forms)

    def matches(self, texts: Sequence[str]) -> bool:
        words = [_alnum(t) for t in texts]
        for word in words:
            if len(word) < 2:
                continue
            for token in self.tokens:
                if word == token or (len(token) >= 5 and _within_one_edit(word, token)):
                    return True
                if len(token) >= 4 and token in word:
                    return True
        joined = "".join(words)
        if any(len(t) >= 4 and t in joined for t in self.tokens):
            return True
        digits = re.sub(r"\D", "", " ".join(texts))
        return any(form in digits for form in self.digit_forms if len(form) >= 4)


def read_words(image: np.ndarray, boxes: Sequence[Box]) -> list[Word]:
    """Run tesseract once over all boxes of `image` stacked into one strip."""
    strip, spans = _strip(to_gray(image), boxes)
    ok, png = cv2.imencode(".png", strip)
    if not ok:
        raise OcrUnavailableError("could not encode the OCR strip as PNG")
    tsv = _run_tesseract(png.tobytes())
    words = []
    for row in tsv.splitlines()[1:]:
        fields = row.split("\t")
        if len(fields) < 12 or fields[0] != "5" or not fields[11].strip():
            continue
        top, height = int(fields[7]), int(fields[9])
        centre = top + height / 2
        for index, (start, stop) in enumerate(spans):
            if start <= centre < stop:
                words.append(Word(index, fields[11].strip(), float(fields[10])))
                break
    return words


def _strip(gray: np.ndarray, boxes: Sequence[Box]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Crops as dark-on-white, scaled to TARGET_HEIGHT, stacked with white gaps; their y spans."""
    crops = []
    for box in boxes:
        crop = gray[box.y : box.y + box.height, box.x : box.x + box.width]
        if not crop.size:
            crop = np.full((2, 2), 255, np.uint8)
        if float(np.median(crop)) < 128:
            crop = 255 - crop
        factor = min(MAX_UPSCALE, max(1.0, TARGET_HEIGHT / crop.shape[0]))
        if factor > 1.0:
            crop = cv2.resize(crop, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
        crops.append(crop)
    width = max(c.shape[1] for c in crops) + 2 * GAP
    height = sum(c.shape[0] for c in crops) + GAP * (len(crops) + 1)
    strip = np.full((height, width), 255, np.uint8)
    spans = []
    y = GAP
    for crop in crops:
        h, w = crop.shape
        strip[y : y + h, GAP : GAP + w] = crop
        spans.append((y - GAP // 2, y + h + GAP // 2))
        y += h + GAP
    return strip, spans


def _run_tesseract(png: bytes) -> str:
    command = [tesseract_path(), "stdin", "stdout", "--psm", "6", "tsv"]
    env = dict(os.environ, OMP_THREAD_LIMIT="1")
    try:
        done = subprocess.run(command, input=png, capture_output=True, timeout=TESSERACT_TIMEOUT_S, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OcrUnavailableError(f"tesseract could not run ({type(exc).__name__})") from None
    if done.returncode != 0:
        raise OcrUnavailableError(f"tesseract exited with status {done.returncode}")
    return done.stdout.decode("utf-8", errors="replace")


def _alnum(text: str) -> str:
    return re.sub(r"[^0-9a-z]", "", text.casefold())


def _is_yyyymmdd(digits: str) -> bool:
    month, day = int(digits[4:6]), int(digits[6:])
    return digits[:2] in ("18", "19", "20") and 1 <= month <= 12 and 1 <= day <= 31


def _within_one_edit(a: str, b: str) -> bool:
    """Levenshtein distance <= 1."""
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) <= 1
    short, long = (a, b) if len(a) < len(b) else (b, a)
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))
