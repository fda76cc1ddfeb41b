"""Synthetic images with text drawn into them, for redaction tests (other test modules import this).

`tissue_background` makes a pinkish H&E-like texture (low-frequency stain variation, fine noise and
soft purple nucleus-like blobs); `black_background` is an ultrasound-style dark field. `draw_text`
burns text in with OpenCV's Hershey fonts and returns the ink mask (the pixels the text changed), so
tests can measure what fraction of the ink a redaction covers. `draw_text_across_corner` centres a
text line on the corner shared by four tiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PINK = (232, 176, 206)
NUCLEUS = (120, 70, 150)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def tissue_background(
    height: int, width: int, *, seed: int = 0, nuclei_per_mpx: int = 1500, glass: bool = False
) -> np.ndarray:
    """An RGB uint8 H&E-like texture: pink stroma, stain gradients, noise and soft nucleus blobs."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(max(2, height // 32), max(2, width // 32))).astype(np.float32)
    field: np.ndarray = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    field = cv2.GaussianBlur(field, (0, 0), 12)
    field = field / max(float(np.abs(field).max()), 1e-6)
    image = np.empty((height, width, 3), np.float32)
    for channel, value in enumerate(PINK):
        image[..., channel] = value + 22 * field
    image += rng.normal(0, 5, size=(height, width, 1)).astype(np.float32)
    if glass:
        image[field < -0.35] = 245
    canvas = np.clip(image, 0, 255).astype(np.uint8)
    count = int(nuclei_per_mpx * height * width / 1e6)
    for _ in range(count):
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (int(rng.integers(3, 8)), int(rng.integers(3, 7)))
        shade = tuple(int(v + rng.integers(-20, 20)) for v in NUCLEUS)
        cv2.ellipse(canvas, center, axes, float(rng.integers(0, 180)), 0, 360, shade, -1, cv2.LINE_AA)
    # Optical blur: nuclei edges in real scans are a few pixels soft, unlike printed glyphs.
    return cv2.GaussianBlur(canvas, (0, 0), 1.0)


def black_background(height: int, width: int, *, channels: int = 3, seed: int = 0) -> np.ndarray:
    """A nearly black field with faint noise (the margin of an ultrasound frame)."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 6, size=(height, width), dtype=np.uint8)
    if channels == 1:
        return noise
    return np.repeat(noise[..., None], channels, axis=2)


@dataclass(frozen=True)
class DrawnText:
    """Where text was drawn: the ink mask (pixels that changed) and its bounding box (x, y, w, h)."""

    ink: np.ndarray
    bbox: tuple[int, int, int, int]


def draw_text(
    image: np.ndarray,
    text: str,
    origin: tuple[int, int],
    *,
    scale: float = 0.8,
    thickness: int = 2,
    color: tuple[int, ...] | int = (10, 10, 10),
) -> DrawnText:
    """Draw `text` in place with its baseline-left at `origin`; return the ink mask of the change."""
    before = image.copy()
    if image.ndim == 2 and isinstance(color, tuple):
        color = int(color[0])
    elif image.ndim == 3 and isinstance(color, int):
        color = (color,) * image.shape[2]
    cv2.putText(image, text, origin, FONT, scale, color, thickness, cv2.LINE_AA)
    diff = image.astype(np.int16) - before.astype(np.int16)
    ink = np.abs(diff).reshape(image.shape[0], image.shape[1], -1).max(axis=2) > 0
    ys, xs = np.nonzero(ink)
    if not len(xs):
        return DrawnText(ink, (0, 0, 0, 0))
    bbox = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
    return DrawnText(ink, bbox)


def text_size(text: str, *, scale: float = 0.8, thickness: int = 2) -> tuple[int, int, int]:
    """(width, height above baseline, baseline depth) of `text` as `draw_text` would draw it."""
    (width, height), baseline = cv2.getTextSize(text, FONT, scale, thickness)
    return width, height, baseline


def draw_text_across_corner(
    image: np.ndarray,
    text: str,
    corner: tuple[int, int],
    *,
    scale: float = 0.8,
    thickness: int = 2,
    color: tuple[int, ...] | int = (10, 10, 10),
) -> DrawnText:
    """Draw `text` centred on `corner` (x, y), the point shared by four tiles, so it straddles all four."""
    width, height, _ = text_size(text, scale=scale, thickness=thickness)
    origin = (corner[0] - width // 2, corner[1] + height // 2)
    return draw_text(image, text, origin, scale=scale, thickness=thickness, color=color)


def ink_coverage(ink: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of ink pixels that `mask` (same height and width, bool) covers."""
    total = int(ink.sum())
    return 1.0 if total == 0 else float((ink & mask).sum()) / total
