"""What a reviewer looks at: PNG renderings of a held input's de-identified pixels.

The previews show the output as approval would publish it (confident boxes already redacted), so
pending text is readable in them: they live only under OUTPUT/review/<input_sha256>/, like the held
output itself. DICOM: each frame with candidates (pending ones first, at most MAX_FRAMES), else
frame 0. Slides: the pyramid's top level (an overview) and a crop around each pending candidate at
full resolution (at most MAX_CROPS). Boxes are not burned in: the page draws them over the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from pydicom.pixels import apply_color_lut, pixel_array

from deid.qa.report import to_rgb8
from deid.review.held import Preview, ReviewCandidate
from deid.settings import Box

MAX_SIDE = 1024
MAX_FRAMES = 6
MAX_CROPS = 8
CROP_MARGIN = 96


def render(image: np.ndarray, max_side: int = MAX_SIDE) -> tuple[bytes, float, int, int]:
    """(PNG bytes, scale, width, height): `image` as 8-bit RGB, shrunk to fit `max_side`."""
    bgr = to_rgb8(image)
    height, width = bgr.shape[:2]
    scale = min(1.0, max_side / max(height, width, 1))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".png", bgr)
    if not ok:
        raise ValueError("could not encode a review preview as PNG")
    return encoded.tobytes(), bgr.shape[1] / max(width, 1), bgr.shape[1], bgr.shape[0]


def dicom_frame(ds: Any, index: int) -> np.ndarray:
    """Frame `index` of a dataset as shown (palette colour through its LUT)."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    array = np.asarray(pixel_array(ds, index=index if frames > 1 else None))
    if str(ds.get("PhotometricInterpretation", "")).strip() == "PALETTE COLOR":
        array = np.asarray(apply_color_lut(array, ds))
    return array


def dicom_previews(ds: Any, candidates: Sequence[ReviewCandidate]) -> list[tuple[Preview, bytes]]:
    """Previews of the frames that hold candidates (pending first), or of frame 0."""
    frames: list[int] = []
    for candidate in sorted(candidates, key=lambda c: c.status != "pending"):
        frame = candidate.frame or 0
        if frame not in frames:
            frames.append(frame)
    frames = frames[:MAX_FRAMES] or [0]
    out = []
    for number, frame in enumerate(frames):
        png, scale, width, height = render(dicom_frame(ds, frame))
        out.append((Preview(f"preview-{number}.png", width, height, round(scale, 6), (0, 0), frame=frame), png))
    return out


def slide_previews(
    overview: np.ndarray | None, level0: tuple[int, int], crops: Sequence[tuple[Box, np.ndarray]]
) -> list[tuple[Preview, bytes]]:
    """The overview (scaled to the level-0 size `level0` (width, height)) and full-resolution crops."""
    out = []
    if overview is not None and overview.size:
        png, _, width, height = render(overview)
        scale = width / max(1, level0[0])
        out.append((Preview("preview-0.png", width, height, round(scale, 8), (0, 0), level=0), png))
    for index, (box, pixels) in enumerate(crops[:MAX_CROPS], start=len(out)):
        png, scale, width, height = render(pixels)
        out.append((Preview(f"preview-{index}.png", width, height, round(scale, 6), (box.x, box.y), level=0), png))
    return out


def crop_box(candidate: Box, width: int, height: int, margin: int = CROP_MARGIN) -> Box:
    """The level-0 area shown around a candidate: the box and `margin` pixels of context."""
    x0, y0 = max(0, candidate.x - margin), max(0, candidate.y - margin)
    x1 = min(width, candidate.x + candidate.width + margin)
    y1 = min(height, candidate.y + candidate.height + margin)
    return Box(x0, y0, max(1, x1 - x0), max(1, y1 - y0))
