"""OCR pixel check: text the input showed in a redacted region is not readable there in the output."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from deid.settings import Box
from deid.verify.pixels import check_redacted_regions

pytestmark = pytest.mark.needs_tool


def _image() -> tuple[np.ndarray, Box]:
    image = np.full((200, 700, 3), 240, np.uint8)
    cv2.putText(image, "ZQXNAME ALPHA 4242", (20, 110), cv2.FONT_HERSHEY_SIMPLEX, 1.6, (10, 10, 10), 3)
    return image, Box(10, 60, 660, 70)


@pytest.fixture(autouse=True)
def _needs_tesseract() -> None:
    if not shutil.which("tesseract"):
        pytest.skip("tesseract is not installed")


def test_blacked_out_region_passes() -> None:
    before, box = _image()
    after = before.copy()
    after[box.y : box.y + box.height, box.x : box.x + box.width] = 0
    assert check_redacted_regions(before, after, [box]) == []


def test_unredacted_or_half_redacted_region_fails() -> None:
    before, box = _image()
    leaks = check_redacted_regions(before, before.copy(), [box])
    assert len(leaks) == 1 and leaks[0].box_index == 0 and leaks[0].words >= 2
    half = before.copy()
    half[box.y : box.y + box.height, box.x : box.x + 200] = 0  # the first word only
    assert check_redacted_regions(before, half, [box])
    assert "ZQX" not in leaks[0].describe() and "ZQX" not in repr(leaks)


def test_blurred_fill_passes_and_empty_boxes_are_fine() -> None:
    before, box = _image()
    after = before.copy()
    region = after[box.y : box.y + box.height, box.x : box.x + box.width]
    after[box.y : box.y + box.height, box.x : box.x + box.width] = cv2.GaussianBlur(region, (0, 0), 12)
    assert check_redacted_regions(before, after, [box]) == []
    assert check_redacted_regions(before, after, []) == []
