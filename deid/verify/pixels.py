"""Pixel check where text was redacted: OCR each redacted region of the input and of the output.

`check_redacted_regions(before, after, boxes)` reads every box of the input image and of the
de-identified image with tesseract (one process per image, all boxes stacked in one strip, via
deid.redaction.ocr.read_words) and reports the boxes where a word of at least MIN_WORD letters or
digits recognised in the input is recognised again in the output. The words never leave this
function: a `PixelLeak` holds the box index and a count.

Limits: OCR misses small or low-contrast type, so an empty result proves only that tesseract cannot
read the input's words there any more. Needs the tesseract program (OcrUnavailableError otherwise).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from deid.redaction.ocr import read_words
from deid.settings import Box

MIN_WORD = 3


@dataclass(frozen=True)
class PixelLeak:
    """A redacted box where OCR still reads `words` of the input's words."""

    box_index: int
    words: int

    def describe(self) -> str:
        return f"redacted region {self.box_index}: {self.words} word(s) of the input still readable"


def _normal(text: str) -> str:
    return re.sub(r"[^0-9a-z]", "", text.casefold())


def _words_by_box(image: np.ndarray, boxes: Sequence[Box]) -> dict[int, set[str]]:
    found: dict[int, set[str]] = {}
    for word in read_words(image, boxes):
        text = _normal(word.text)
        if len(text) >= MIN_WORD:
            found.setdefault(word.box_index, set()).add(text)
    return found


def check_redacted_regions(before: np.ndarray, after: np.ndarray, boxes: Sequence[Box]) -> list[PixelLeak]:
    """Boxes (in the pixels of both images) whose input words OCR still finds in the output."""
    usable = [
        Box(b.x, b.y, min(b.width, before.shape[1] - b.x), min(b.height, before.shape[0] - b.y))
        for b in boxes
        if b.x < before.shape[1] and b.y < before.shape[0]
    ]
    if not usable:
        return []
    if after.shape[:2] != before.shape[:2]:
        raise ValueError("the input and output images must have the same size for the pixel check")
    read_before = _words_by_box(before, usable)
    if not read_before:
        return []
    read_after = _words_by_box(after, usable)
    leaks = []
    for index, words in sorted(read_before.items()):
        again = words & read_after.get(index, set())
        if again:
            leaks.append(PixelLeak(index, len(again)))
    return leaks
