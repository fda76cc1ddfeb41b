"""Find burned-in printed text with OpenCV morphology only (no model, no download).

How it works, per polarity (dark text on light ground, light text on dark ground) and per scale:

1. Strokes: a black-hat (dark text) or top-hat (light text) transform with a small square kernel keeps
   features thinner than the kernel with their contrast against the local ground. Pixels whose
   response reaches `stroke_threshold` are stroke pixels; connected stroke pixels are glyphs.
2. Lines: a horizontal closing joins glyphs into words and text lines; the connected components of
   that mask, taken on a half-resolution copy for speed, are the candidate lines.
3. Line test. Vectorised over all candidates with integral images: plausible height and width,
   stroke density typical of type, mean stroke contrast, and isolation (the bands just above and
   below the line hold far fewer stroke pixels than the line itself: text sits on a ground, tissue
   texture surrounds itself with more texture). Then, for the few survivors, a glyph test on the
   full-resolution crop: at least three glyphs (five when the contrast is only moderate) of similar
   height aligned on a common top or baseline (along a fitted line, so slight skew passes), or one
   tall glyph of very high contrast.
4. Boxes are padded (anti-aliased fringes, dots, accents) and mapped back to image pixels.
5. With `near_misses` (asked for when a review threshold is set, deid/review/), lines that fail the
   line or glyph test by a margin are returned too, marked `strict=False` (deid/redaction/glyphs.py):
   faint lines (stroke contrast from 75, many aligned glyphs alone on their ground) and lines of
   ordinary contrast with few glyphs (two, at the contrast of a lone glyph) or looser alignment.
   Every line comes with the measurements deid/redaction/confidence.py turns into a score. Measured
   false near misses: none in 245 overlapped 576-px windows over the real slides of ../shared/data
   (CMU-1-Small-Region, the TCGA SVS, small_HE_levels, both NDPI) nor in 40 synthetic tissue images;
   before the faint test required isolation and density, dense rows of lymphocytes on the TCGA slide
   gave 7.

Scale 1 finds text of about 6..60 px height with strokes up to ~6 px; scale 4 (an area-downscaled
copy, 1/16 of the pixels) finds big text up to ~250 px with strokes up to ~24 px. All thresholds are
absolute (no per-image statistics such as Otsu), so overlapping windows of the same slide, whose
origins are aligned to the coarsest scale, make the same decision about the same text.

Limits, measured on synthetic text and on real H&E tissue (tests/unit/test_redaction.py, tests/support/text_images.py):
* Found (>= 95 % of ink pixels covered): horizontal machine-printed text of roughly 7..250 px height
  with clear contrast (about >= 100 grey levels between ink and ground for thin 1-px type, less for
  bold type): slide-label print, ultrasound/CT annotations (light on dark), typed stickers, and
  dark text drawn over tissue-like texture. A sweep of 5 Hershey fonts x 6 sizes x 4 grounds found
  111 of 120 lines; the misses were mid-grey text over ultrasound speckle and 5-px-high type.
* Missed or partly missed: low-contrast or coloured text whose luminance is close to its ground;
  type under ~7 px high; text rotated by more than ~10 degrees (glyph alignment is tested along a
  fitted line, so slight skew is fine; the vertical handwriting on the CMU-1 slide label is not
  found); handwriting with irregular baselines; text touching dense, equally dark structures;
  isolated one- or two-character words of ordinary size; barcodes and 2-D codes (not text: drop or
  blank the label, or use a region).
* False positives: none on the 24 overlapped 512-px windows of the real CMU-1-Small-Region H&E
  slide or on synthetic tissue; still, dark elongated nuclei or fibres lined up on a pale ground
  can pass as a short word, and the box is then filled like text. `ocr` mode (tesseract
  confirmation) removes such boxes.
* Speed (one core, 512 x 512 RGB tile, on a shared 2-core machine): about 40-100 MP/s on H&E tissue
  and 30-60 MP/s on a tile full of text (the target is 16 MP/s).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from deid.redaction.glyphs import glyph_stats, glyphs_look_like_text, near_miss
from deid.settings import Box


@dataclass(frozen=True)
class DetectParams:
    """Tuning of `detect_text_boxes`; the defaults are what the pipeline uses."""

    stroke_kernel: int = 7
    stroke_threshold: int = 60
    coarse_stroke_threshold: int = 100
    coarse_line_contrast: int = 150
    coarse_min_height: int = 8
    line_contrast: int = 120
    weak_line_contrast: int = 100
    weak_min_glyphs: int = 5
    join_width: int = 17
    min_height: int = 6
    max_height: int = 64
    min_density: float = 0.12
    max_density: float = 0.75
    max_height_spread: float = 0.45
    max_align_spread: float = 0.30
    max_outside_ratio: float = 0.45
    min_width_ratio: float = 1.5
    min_glyphs: int = 3
    single_glyph_contrast: int = 160
    pad_fraction: float = 0.2
    scales: tuple[int, ...] = (1, 4)
    # Ground added around the image before detection (rounded down to the sampling grid).
    border_margin: int = 16
    # Line completion: word-spaced neighbours within `word_gap` line heights join a found line.
    complete_lines: bool = True
    word_gap: float = 1.0
    max_completions: int = 8
    # Near misses (only searched for when asked, `near_misses=True`): lines that fail the line or glyph
    # test by a margin (fainter, fewer glyphs, looser alignment) but still look like type. They are
    # the uncertain candidates a person reviews (deid/redaction/confidence.py scores them).
    # Faint: contrast from `near_contrast` up, with the glyph structure of the weak test (loosened a
    # little). Partial or irregular: contrast of ordinary type with as few as `near_min_glyphs`
    # glyphs or looser alignment. Tissue texture rarely reaches either (nuclei: low contrast, few).
    near_contrast: int = 75
    near_faint_min_glyphs: int = 5
    near_faint_height_spread: float = 0.35
    near_faint_align_spread: float = 0.15
    near_faint_min_density: float = 0.2
    near_faint_max_isolation: float = 0.25
    near_faint_min_height: int = 10
    near_min_glyphs: int = 2
    near_max_height_spread: float = 0.6
    near_max_align_spread: float = 0.45
    near_max_outside_ratio: float = 0.6


DEFAULT_PARAMS = DetectParams()


def grid(params: DetectParams = DEFAULT_PARAMS) -> int:
    """Detection samples the image on this pixel grid: windows whose origins are multiples of it
    see the same downscaled pixels as the whole image, so their decisions agree."""
    return 2 * max(params.scales)


def to_gray(image: np.ndarray) -> np.ndarray:
    """A uint8 luminance view of an H x W, H x W x 1, x 3 (RGB) or x 4 (RGBA) uint8 image."""
    if image.dtype != np.uint8:
        raise ValueError("text detection needs a uint8 image")
    if image.ndim == 2:
        return image
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError("text detection needs an H x W or H x W x {1, 3, 4} image")
    if image.shape[2] == 1:
        return image[..., 0]
    code = cv2.COLOR_RGB2GRAY if image.shape[2] == 3 else cv2.COLOR_RGBA2GRAY
    return cv2.cvtColor(np.ascontiguousarray(image), code)


# Per-line features kept with each candidate (columns of the feature arrays), for scoring.
FEATURES = (
    "contrast", "glyphs", "spread", "align", "density", "isolation", "height", "scale", "strict",
    "width_cv", "step_cv", "fill",
)


@dataclass(frozen=True)
class TextLine:
    """One candidate line: its padded box and the detector's measurements of it.

    contrast: mean stroke response (grey levels); glyphs: glyphs of similar height found in it;
    spread, align: their height spread and top/baseline misalignment (fractions of glyph height);
    density: stroke pixels per box pixel; isolation: stroke density just above and below the line
    relative to its own (0 = alone on its ground); height: box height before padding; scale: 1 or the
    coarse scale; strict: whether it passes the line and glyph tests (False: a near miss); width_cv,
    step_cv: variation of glyph widths and of the steps between glyphs; fill: mean fraction of a
    glyph's box its strokes fill.
    """

    box: Box
    contrast: float
    glyphs: int
    spread: float
    align: float
    density: float
    isolation: float
    height: int
    scale: int
    strict: bool
    width_cv: float = 0.0
    step_cv: float = 0.0
    fill: float = 0.0


def detect_text_boxes(image: np.ndarray, params: DetectParams = DEFAULT_PARAMS) -> list[Box]:
    """Boxes (image pixels, padded) around text-like regions of `image`; see the module docstring."""
    return [line.box for line in detect_text_lines(image, params)]


def detect_text_lines(
    image: np.ndarray, params: DetectParams = DEFAULT_PARAMS, *, near_misses: bool = False
) -> list[TextLine]:
    """`detect_text_boxes` with each line's measurements; with `near_misses`, also the lines that
    fail the tests by a margin (`strict` False), in the same box geometry."""
    source = np.ascontiguousarray(to_gray(image))
    # Text printed flush with the image edge (CR/CT corner annotations start at pixel 0) has no
    # ground on that side for the morphology and the isolation test: give it some, in the value of
    # the image's outer ring, by a multiple of the sampling grid so that alignment is unchanged.
    margin = params.border_margin - params.border_margin % grid(params)
    gray = _with_margin(source, margin) if margin else source
    boxes, features = _detect(gray, params, near_misses)
    if margin:
        boxes, features = _shift_and_clip(boxes, features, margin, source.shape)
    if params.complete_lines:
        boxes = _complete_lines(source, boxes, params)
    return [
        TextLine(
            Box(int(x0), int(y0), int(x1 - x0), int(y1 - y0)),
            contrast=float(f[0]),
            glyphs=int(f[1]),
            spread=float(f[2]),
            align=float(f[3]),
            density=float(f[4]),
            isolation=float(f[5]),
            height=int(f[6]),
            scale=int(f[7]),
            strict=bool(f[8]),
            width_cv=float(f[9]),
            step_cv=float(f[10]),
            fill=float(f[11]),
        )
        for (x0, y0, x1, y1), f in zip(boxes, features, strict=True)
    ]


def _with_margin(gray: np.ndarray, margin: int) -> np.ndarray:
    ring = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    ground = int(np.median(ring))
    return cv2.copyMakeBorder(gray, margin, margin, margin, margin, cv2.BORDER_CONSTANT, value=ground)


def _shift_and_clip(
    boxes: np.ndarray, features: np.ndarray, margin: int, shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    height, width = shape[:2]
    out = boxes - margin
    out[:, [0, 1]] = np.maximum(out[:, [0, 1]], 0)
    out[:, 2] = np.minimum(out[:, 2], width)
    out[:, 3] = np.minimum(out[:, 3], height)
    keep = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
    return out[keep], features[keep]


def _complete_lines(gray: np.ndarray, boxes: np.ndarray, params: DetectParams) -> np.ndarray:
    """Grow each found line along its own row to the word-spaced neighbours it did not take in.

    A short word beside a found line ("[M]" after a name, a two-digit age) fails the glyph test on
    its own; any stroke component level with the line (half its height in common), of similar
    height and no further than `word_gap` line heights from it joins it, and the search repeats
    from the grown box. PHI first: what stands in a found line's row at word spacing is redacted.
    """
    if not len(boxes):
        return boxes
    height, width = gray.shape
    out = boxes.copy()
    for row in range(len(out)):
        for _ in range(params.max_completions):
            x0, y0, x1, y1 = (int(v) for v in out[row])
            line_h = y1 - y0
            # Strokes as wide as the detection kernel (bold type, a plain 'I') vanish under it: the
            # kernel here grows with the line, so any stroke up to half the line height counts.
            side = max(params.stroke_kernel, (line_h // 2) | 1)
            kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (side, side))
            reach = int(np.ceil(line_h * params.word_gap)) + 1
            bx0, bx1 = max(0, x0 - reach), min(width, x1 + reach)
            by0, by1 = max(0, y0 - line_h // 2), min(height, y1 + line_h // 2)
            band = gray[by0:by1, bx0:bx1]
            grown = (x0, x1)
            for operation in (cv2.MORPH_BLACKHAT, cv2.MORPH_TOPHAT):
                response = cv2.morphologyEx(band, operation, kernel)
                strokes = (response >= params.stroke_threshold).astype(np.uint8)
                count, _, stats, _ = cv2.connectedComponentsWithStats(strokes, connectivity=8)
                for left, top, w, h, _area in stats[1:count]:
                    cx0, cy0 = bx0 + int(left), by0 + int(top)
                    cx1, cy1 = cx0 + int(w), cy0 + int(h)
                    common = min(cy1, y1) - max(cy0, y0)
                    if common < 0.5 * h or not 0.25 * line_h <= h <= 1.5 * line_h:
                        continue
                    if cx1 <= x0 - reach or cx0 >= x1 + reach:
                        continue
                    grown = (min(grown[0], cx0), max(grown[1], cx1))
            if grown == (x0, x1):
                break
            out[row, 0], out[row, 2] = grown
    return out


def _detect(gray: np.ndarray, params: DetectParams, near_misses: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Padded line boxes (x0, y0, x1, y1) of both polarities at every scale, clipped to `gray`, and
    their FEATURES rows. Near misses are searched for at full resolution only."""
    height, width = gray.shape
    found: list[np.ndarray] = []
    measured: list[np.ndarray] = []
    for scale in params.scales:
        if scale == 1:
            level = gray
        else:
            h, w = height // scale, width // scale
            if min(h, w) < params.min_height * 2:
                continue
            level = cv2.resize(gray[: h * scale, : w * scale], (w, h), interpolation=cv2.INTER_AREA)
        level_params = params if scale == 1 else _coarse(params)
        for operation in (cv2.MORPH_BLACKHAT, cv2.MORPH_TOPHAT):
            lines, features = _detect_level(level, operation, level_params, near_misses and scale == 1)
            if not len(lines):
                continue
            lines = lines * scale
            if scale > 1:
                lines = _refine(gray, lines, dark=operation == cv2.MORPH_BLACKHAT, margin=scale)
            features[:, 6] = lines[:, 3] - lines[:, 1]
            features[:, 7] = scale
            found.append(lines + _padding(lines, params))
            measured.append(features)
    if not found:
        return np.zeros((0, 4), np.int64), np.zeros((0, len(FEATURES)), np.float64)
    boxes = np.concatenate(found)
    boxes[:, [0, 1]] = np.maximum(boxes[:, [0, 1]], 0)
    boxes[:, 2] = np.minimum(boxes[:, 2], width)
    boxes[:, 3] = np.minimum(boxes[:, 3], height)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[keep], np.concatenate(measured)[keep]


def _padding(lines: np.ndarray, params: DetectParams) -> np.ndarray:
    """Per-box padding offsets (-p, -p, +p, +p), p growing with the line height (fringes, accents)."""
    amount = np.maximum(2, np.ceil((lines[:, 3] - lines[:, 1]) * params.pad_fraction)).astype(np.int64) + 1
    return np.stack([-amount, -amount, amount, amount], axis=1)


def _refine(gray: np.ndarray, lines: np.ndarray, *, dark: bool, margin: int) -> np.ndarray:
    """Tighten coarse-scale boxes to the full-resolution ink: pixels past the midpoint between the
    crop's ground (its median) and its extreme (darkest or lightest) value."""
    height, width = gray.shape
    out = lines.copy()
    for row, (x0, y0, x1, y1) in enumerate(lines):
        cx0, cy0 = max(0, x0 - margin), max(0, y0 - margin)
        cx1, cy1 = min(width, x1 + margin), min(height, y1 + margin)
        crop = gray[cy0:cy1, cx0:cx1]
        if not crop.size:
            continue
        ground = float(np.median(crop))
        extreme = float(crop.min() if dark else crop.max())
        middle = (ground + extreme) / 2
        ink = crop <= middle if dark else crop >= middle
        rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
        if len(rows) and len(cols):
            out[row] = (cx0 + cols[0], cy0 + rows[0], cx0 + cols[-1] + 1, cy0 + rows[-1] + 1)
    return out


def _coarse(params: DetectParams) -> DetectParams:
    """Thresholds for the downscaled pass: tissue specks survive downscaling, big type keeps contrast."""
    return replace(
        params,
        stroke_threshold=params.coarse_stroke_threshold,
        line_contrast=params.coarse_line_contrast,
        weak_line_contrast=params.coarse_line_contrast,
        min_height=params.coarse_min_height,
    )


def _detect_level(
    gray: np.ndarray, operation: int, params: DetectParams, near_misses: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Text lines of one polarity at one scale, as an N x 4 int64 array of (x0, y0, x1, y1), and their
    N x len(FEATURES) measurements (height and scale are filled in by the caller)."""
    empty = np.zeros((0, 4), np.int64), np.zeros((0, len(FEATURES)), np.float64)
    height, width = gray.shape
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (params.stroke_kernel, params.stroke_kernel))
    response = cv2.morphologyEx(gray, operation, kernel)
    _, strokes = cv2.threshold(response, params.stroke_threshold - 1, 255, cv2.THRESH_BINARY)
    if cv2.countNonZero(strokes) < params.min_height * 2:
        return empty
    joined = cv2.morphologyEx(strokes, cv2.MORPH_CLOSE, np.ones((1, params.join_width), np.uint8))

    # Candidates on a half-resolution copy of the joined mask (any stroke pixel in a 2 x 2 cell):
    # a quarter of the pixels for the connected-component pass, boxes at most 1 px too large.
    half_h, half_w = height // 2, width // 2
    if min(half_h, half_w) < params.min_height:
        return empty
    cells = (half_w, half_h)
    half = cv2.resize(joined[: half_h * 2, : half_w * 2], cells, interpolation=cv2.INTER_AREA)
    _, occupied = cv2.threshold(half, 0, 255, cv2.THRESH_BINARY)
    _, _, stats, _ = cv2.connectedComponentsWithStats(occupied, connectivity=8)
    boxes: np.ndarray = stats[1:].astype(np.int64)
    sx0, sy0 = boxes[:, 0], boxes[:, 1]
    sx1, sy1 = sx0 + boxes[:, 2], sy0 + boxes[:, 3]
    sw, sh = boxes[:, 2], boxes[:, 3]
    plausible = (
        (sh * 2 >= params.min_height)
        & (sh * 2 <= params.max_height + 2)
        & (sw * 2 >= params.min_height)
        & (sw >= params.min_width_ratio * sh)
    )
    if not plausible.any():
        return empty
    sx0, sy0, sx1, sy1, sw, sh = (v[plausible] for v in (sx0, sy0, sx1, sy1, sw, sh))

    # Box statistics from half-resolution integral images (each cell holds the mean of its four
    # pixels, so sums scale exactly): stroke density, mean stroke contrast, isolation.
    ones = cv2.integral(
        cv2.resize(strokes[: half_h * 2, : half_w * 2], cells, interpolation=cv2.INTER_AREA), sdepth=cv2.CV_64F
    )
    masked = cv2.bitwise_and(response, strokes)[: half_h * 2, : half_w * 2]
    weighted = cv2.integral(cv2.resize(masked, cells, interpolation=cv2.INTER_AREA), sdepth=cv2.CV_64F)
    ink = _box_sum(ones, sx0, sy0, sx1, sy1)
    density = ink / 255 / np.maximum(sw * sh, 1)
    contrast = _box_sum(weighted, sx0, sy0, sx1, sy1) * 255 / np.maximum(ink, 1)
    band = np.maximum(1, sh // 3)
    top, bottom = np.maximum(sy0 - band, 0), np.minimum(sy1 + band, half_h)
    above = _box_sum(ones, sx0, top, sx1, sy0)
    below = _box_sum(ones, sx0, sy1, sx1, bottom)
    outside = (above + below) / 255 / np.maximum((sy0 - top + bottom - sy1) * sw, 1)
    cheap = (
        (density >= params.min_density)
        & (density <= params.max_density)
        & (contrast >= params.weak_line_contrast)
        & (outside <= params.max_outside_ratio * density)
    )
    if near_misses:
        near = (
            (density >= params.min_density)
            & (density <= params.max_density)
            & (contrast >= params.near_contrast)
            & (outside <= params.near_max_outside_ratio * density)
        )
    else:
        near = cheap
    # Full-resolution boxes; a component reaching the last cell also takes an odd last row/column.
    x0, y0 = sx0 * 2, sy0 * 2
    x1 = np.where(sx1 == half_w, width, sx1 * 2)
    y1 = np.where(sy1 == half_h, height, sy1 * 2)
    kept: list[int] = []
    rows: list[list[float]] = []
    for i in np.flatnonzero(cheap | near):
        glyphs = glyph_stats(strokes, x0[i], y0[i], x1[i], y1[i])
        strict = bool(cheap[i]) and glyphs_look_like_text(glyphs, contrast[i], params)
        isolation = float(outside[i] / max(density[i], 1e-6))
        line = (contrast[i], density[i], isolation, int(y1[i] - y0[i]))
        if not strict and not (near_misses and near_miss(glyphs, line, params)):
            continue
        kept.append(int(i))
        rows.append(
            [float(contrast[i]), glyphs.count, glyphs.spread, glyphs.align, float(density[i]), isolation, 0, 1,
             strict, glyphs.width_cv, glyphs.step_cv, glyphs.fill]
        )
    if not kept:
        return empty
    index = np.asarray(kept, np.int64)
    boxes = np.stack([x0[index], y0[index], x1[index], y1[index]], axis=1)
    return boxes, np.asarray(rows, np.float64)


def _box_sum(integral: np.ndarray, x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray) -> np.ndarray:
    y1 = np.maximum(y1, y0)
    return (integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]).astype(np.float64)
