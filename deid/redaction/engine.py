"""The redaction engine shared by WSI tiles, label/macro images and DICOM frames.

A WSI tile is redacted from an overlapped *window*: the tile's own box (the *core*) plus context on
each side. Text detection (and OCR) runs on the whole window, so a text line that straddles a tile
edge or corner is seen whole from each tile that holds part of it; the resulting mask is then cut
back to the core. Detection uses absolute thresholds and a fixed sampling grid, and the window is
trimmed so its origin sits on that grid, so neighbouring tiles make the same decision about the
same text. A slide band searches a whole row of windows in a few wide pieces instead (`find_text`
on the piece, then `clip_to_core` per tile: deid/wsi/pyramid.py). User regions are intersected with
the core. A core with nothing to redact comes back
unchanged with `changed=False`, so the caller can pass the original compressed tile through.

Every text box is a scored candidate (deid/redaction/confidence.py). With a review threshold, only
candidates at or above it are redacted; the others come back with the outcome, `pending` unless
redacted boxes cover them, for a person to decide (deid/review/). Threshold 0: every candidate the
strict detector (or OCR) finds is redacted and nothing is left pending.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from deid.errors import ConfigError
from deid.redaction import geometry
from deid.redaction.confidence import Candidate, detect_score, settle
from deid.redaction.detect import DEFAULT_PARAMS, DetectParams, detect_text_lines, grid
from deid.redaction.fill import apply_fill
from deid.redaction.ocr import ocr_scored, tesseract_path
from deid.settings import REDACT_FILLS, REDACT_TEXT_MODES, Box, RedactionSettings


@dataclass(frozen=True)
class RedactionConfig:
    """What to redact and how to fill it.

    `regions` are user boxes in the image's level-0 pixels. `text_mode` is off, detect (every
    text-like box) or ocr (detect, then keep boxes whose words match `ocr_terms` or, with
    `ocr_phi_patterns`, PHI patterns; with no terms and patterns off, any recognised text).
    `review_threshold`: text candidates scoring below it are not redacted but left pending for
    review (0: no review, every candidate is redacted).
    """

    regions: tuple[Box, ...] = ()
    text_mode: str = "off"
    fill: str = "black"
    ocr_terms: tuple[str, ...] = field(default=(), repr=False)  # harvested identifying values
    ocr_phi_patterns: bool = True
    review_threshold: float = 0.0

    def __post_init__(self) -> None:
        if self.text_mode not in REDACT_TEXT_MODES:
            raise ConfigError(f"redaction text mode must be one of {', '.join(REDACT_TEXT_MODES)}")
        if self.fill not in REDACT_FILLS:
            raise ConfigError(f"redaction fill must be one of {', '.join(REDACT_FILLS)}")
        if not all(isinstance(b, Box) for b in self.regions):
            raise ConfigError("redaction regions must be Box values")
        if not 0.0 <= self.review_threshold <= 1.0:
            raise ConfigError("the review threshold must be between 0 and 1")

    @property
    def reviewing(self) -> bool:
        """Whether uncertain candidates are searched for and left pending (a threshold above 0)."""
        return self.review_threshold > 0.0 and self.text_mode != "off"

    @property
    def active(self) -> bool:
        """Whether this configuration can change any pixel."""
        return bool(self.regions) or self.text_mode != "off"

    @classmethod
    def for_input(cls, settings: RedactionSettings, input_sha256: str) -> RedactionConfig:
        """The run's redaction for one input: its --redact_regions boxes, the text mode and fill."""
        return cls(
            regions=settings.regions.for_input(input_sha256),
            text_mode=settings.text,
            fill=settings.fill,
            review_threshold=settings.review_threshold,
        )

    def check_tools(self) -> None:
        """Fail early (OcrUnavailableError) when ocr mode is configured and tesseract is missing."""
        if self.text_mode == "ocr":
            tesseract_path()


@dataclass(frozen=True)
class RedactionOutcome:
    """The redacted core, whether any pixel was redacted, the redacted boxes (level-0, in the core),
    and every candidate with its score and status (level-0, clipped to the core)."""

    pixels: np.ndarray
    changed: bool
    boxes: tuple[Box, ...]
    candidates: tuple[Candidate, ...] = ()

    @property
    def pending(self) -> tuple[Candidate, ...]:
        return tuple(c for c in self.candidates if c.pending)


def redact_window(
    window: np.ndarray,
    window_origin: tuple[int, int],
    core: Box,
    config: RedactionConfig,
    *,
    black_value: int | float = 0,
    params: DetectParams = DEFAULT_PARAMS,
    found: Sequence[FoundText] | None = None,
) -> RedactionOutcome:
    """Redact the `core` of an overlapped `window` whose pixel (0, 0) is level-0 `window_origin`.

    `window` is H x W or H x W x C (uint8 for text detection and inpaint); `core` must lie inside
    it. `found`, when given, is what
    `find_text` found on a larger window holding this one (a row of a slide band searches its
    tiles in a few pieces rather than one window each): detection does not run again. Returns the
    core's pixels (a new array) and the level-0 boxes redacted within the core.
    """
    ox, oy = window_origin
    height, width = window.shape[:2]
    if not (
        core.x >= ox and core.y >= oy and core.x + core.width <= ox + width and core.y + core.height <= oy + height
    ):
        raise ValueError("the core box must lie inside the window")
    cx, cy = core.x - ox, core.y - oy
    core_pixels = window[cy : cy + core.height, cx : cx + core.width]

    regions: list[Box] = []
    for region in config.regions:
        clipped = geometry.intersect(region, core)
        if clipped is not None:
            regions.append(clipped)
    text: list[Candidate] = []
    if config.text_mode != "off":
        if found is None:
            found = find_text(window, (ox, oy), core, config, params)
        text = settle(clip_to_core(found, core), config.review_threshold, regions)
    candidates = tuple(Candidate(b, 1.0, "region") for b in geometry.unique(regions)) + tuple(text)
    boxes = geometry.unique([*regions, *(c.box for c in text if c.status == "redacted")])
    if not boxes:
        return RedactionOutcome(np.array(core_pixels, copy=True), False, (), candidates)

    mask = geometry.boxes_mask(boxes, height, width, origin=(ox, oy))
    if config.fill == "black":
        pixels = np.array(core_pixels, copy=True)
        pixels[mask[cy : cy + core.height, cx : cx + core.width]] = black_value
    else:
        # Blur and inpaint read the context around the mask, which the window provides.
        filled = apply_fill(window, mask, config.fill, black_value=black_value)
        pixels = np.array(filled[cy : cy + core.height, cx : cx + core.width], copy=True)
    return RedactionOutcome(pixels, True, boxes, candidates)


def redact_image(
    image: np.ndarray,
    config: RedactionConfig,
    *,
    black_value: int | float = 0,
    params: DetectParams = DEFAULT_PARAMS,
) -> RedactionOutcome:
    """Redact a whole image (label, macro, DICOM frame): the image is both window and core."""
    height, width = image.shape[:2]
    return redact_window(image, (0, 0), Box(0, 0, width, height), config, black_value=black_value, params=params)


@dataclass(frozen=True)
class FoundText:
    """A text box found on a detection window: level-0, not yet cut to any tile's core."""

    box: Box
    score: float
    kind: str  # "detect" or "ocr"


def find_text(
    window: np.ndarray,
    origin: tuple[int, int],
    span: Box,
    config: RedactionConfig,
    params: DetectParams = DEFAULT_PARAMS,
    gray: np.ndarray | None = None,
) -> tuple[FoundText, ...]:
    """Detected (and, in ocr mode, confirmed) text boxes of `window` (pixel (0, 0) at level-0
    `origin`) that touch `span`, the cores the window is searched for, with their scores. Near
    misses and undecided OCR boxes only when reviewing."""
    ox, oy = origin
    # Trim the window so detection samples the level-0 grid the same way from every window.
    step = grid(params)
    tx, ty = (-ox) % step, (-oy) % step
    if tx > span.x - ox or ty > span.y - oy:
        tx = ty = 0  # an unaligned window flush with its core: keep every core pixel in view
    sub = window[ty:, tx:]
    if sub.shape[0] == 0 or sub.shape[1] == 0:
        return ()
    lines = detect_text_lines(sub if gray is None else gray[ty:, tx:], params, near_misses=config.reviewing)
    sx, sy = ox + tx, oy + ty
    touching = [
        (line.box, detect_score(line))
        for line in lines
        if geometry.intersect(Box(line.box.x + sx, line.box.y + sy, line.box.width, line.box.height), span)
        is not None
    ]
    kind = "detect"
    if config.text_mode == "ocr" and touching:
        kind = "ocr"
        touching = ocr_scored(
            sub, [b for b, _ in touching], [s for _, s in touching], config, undecided=config.reviewing
        )
    return tuple(FoundText(Box(b.x + sx, b.y + sy, b.width, b.height), score, kind) for b, score in touching)


def clip_to_core(found: Sequence[FoundText], core: Box) -> list[Candidate]:
    """The found boxes that touch `core`, cut to it, as scored candidates."""
    clipped = []
    for text in found:
        inside = geometry.intersect(text.box, core)
        if inside is not None:
            clipped.append(Candidate(inside, text.score, text.kind))
    return clipped
