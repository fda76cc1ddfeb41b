"""Box arithmetic between image, window and level-0 coordinates (boxes are `deid.settings.Box`)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from deid.settings import Box


def make_box(x0: int, y0: int, x1: int, y1: int) -> Box | None:
    """The box [x0, x1) x [y0, y1), clamped at 0; None when empty."""
    x0, y0 = max(0, x0), max(0, y0)
    if x1 <= x0 or y1 <= y0:
        return None
    return Box(x0, y0, x1 - x0, y1 - y0)


def intersect(a: Box, b: Box) -> Box | None:
    return make_box(
        max(a.x, b.x), max(a.y, b.y), min(a.x + a.width, b.x + b.width), min(a.y + a.height, b.y + b.height)
    )


def translate(box: Box, dx: int, dy: int) -> Box | None:
    """Shift a box; the part that would fall at negative coordinates is dropped."""
    return make_box(box.x + dx, box.y + dy, box.x + box.width + dx, box.y + box.height + dy)


def pad(box: Box, amount: int, width: int, height: int) -> Box:
    """Grow a box by `amount` on each side, clipped to an image of `width` x `height`."""
    grown = make_box(
        box.x - amount,
        box.y - amount,
        min(width, box.x + box.width + amount),
        min(height, box.y + box.height + amount),
    )
    return grown if grown is not None else box


def boxes_mask(boxes: Iterable[Box], height: int, width: int, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """A bool mask of `height` x `width` whose pixel (0, 0) sits at `origin`, True inside any box."""
    mask = np.zeros((height, width), dtype=bool)
    ox, oy = origin
    for box in boxes:
        x0, y0 = max(0, box.x - ox), max(0, box.y - oy)
        x1, y1 = min(width, box.x + box.width - ox), min(height, box.y + box.height - oy)
        if x1 > x0 and y1 > y0:
            mask[y0:y1, x0:x1] = True
    return mask


def unique(boxes: Iterable[Box]) -> tuple[Box, ...]:
    """Drop duplicates, keep first-seen order."""
    return tuple(dict.fromkeys(boxes))
