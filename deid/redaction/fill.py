"""Fill redacted pixels: black, a strong blur, or OpenCV inpainting. Pixels outside the mask never change."""

from __future__ import annotations

import cv2
import numpy as np

from deid.settings import REDACT_FILLS

# Blur strength: at least this sigma, and at least this fraction of the masked component's smaller
# side, so that glyph shapes (whose strokes are a fraction of the line height) cannot be recovered.
MIN_BLUR_SIGMA = 12.0
BLUR_SIGMA_FRACTION = 0.6
INPAINT_RADIUS = 5


def apply_fill(image: np.ndarray, mask: np.ndarray, fill: str, *, black_value: int | float = 0) -> np.ndarray:
    """A copy of `image` whose pixels under `mask` (H x W bool) are filled; the rest is untouched.

    `image` is H x W or H x W x C: uint8, or 16-bit / float DICOM frames. `black_value` is what
    black means (the maximum for MONOCHROME1, the lowest value for signed frames).
    """
    if fill not in REDACT_FILLS:
        raise ValueError(f"fill must be one of {', '.join(REDACT_FILLS)}")
    if mask.shape != image.shape[:2]:
        raise ValueError("mask and image differ in height or width")
    out = image.copy()
    if not mask.any():
        return out
    if fill == "black":
        out[mask] = black_value
    elif fill == "blur":
        _blur(out, mask)
    else:
        _inpaint(out, mask)
    return out


def _components(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return [tuple(int(v) for v in stats[i, :4]) for i in range(1, n)]  # type: ignore[misc]


def _blur(out: np.ndarray, mask: np.ndarray) -> None:
    """Per masked component: a Gaussian blur of a margin-padded crop, copied back under the mask."""
    source = out.copy()
    height, width = mask.shape
    for x, y, w, h in _components(mask):
        sigma = max(MIN_BLUR_SIGMA, BLUR_SIGMA_FRACTION * min(w, h))
        margin = int(np.ceil(3 * sigma))
        x0, y0 = max(0, x - margin), max(0, y - margin)
        x1, y1 = min(width, x + w + margin), min(height, y + h + margin)
        crop = source[y0:y1, x0:x1]
        blurred = cv2.GaussianBlur(crop, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
        # Blur twice more at a coarser scale: a single Gaussian of text leaves faint glyph ghosts.
        blurred = cv2.GaussianBlur(blurred, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
        region = mask[y0:y1, x0:x1]
        out[y0:y1, x0:x1][region] = blurred.reshape(crop.shape)[region]


def _inpaint(out: np.ndarray, mask: np.ndarray) -> None:
    """OpenCV Telea inpainting; images other than uint8 are inpainted per channel in float32."""
    mask8 = mask.astype(np.uint8) * 255
    if out.dtype == np.uint8 and (out.ndim == 2 or out.shape[2] in (1, 3)):
        filled = cv2.inpaint(np.ascontiguousarray(out), mask8, INPAINT_RADIUS, cv2.INPAINT_TELEA)
        out[...] = filled.reshape(out.shape)
        return
    if not (np.issubdtype(out.dtype, np.integer) or np.issubdtype(out.dtype, np.floating)):
        raise ValueError("inpaint fill needs an integer or float image")
    planes = out[..., None] if out.ndim == 2 else out
    for channel in range(planes.shape[2]):
        plane = np.ascontiguousarray(planes[..., channel])
        if plane.dtype == np.uint8:
            planes[..., channel] = cv2.inpaint(plane, mask8, INPAINT_RADIUS, cv2.INPAINT_TELEA)
            continue
        filled = cv2.inpaint(plane.astype(np.float32), mask8, INPAINT_RADIUS, cv2.INPAINT_TELEA)
        if np.issubdtype(plane.dtype, np.integer):
            info = np.iinfo(plane.dtype)
            filled = np.clip(np.rint(filled), info.min, info.max)
        planes[..., channel] = filled.astype(plane.dtype)
