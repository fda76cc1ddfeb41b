"""The glyph tests of `deid.redaction.detect`: the glyphs inside one candidate line, whether they look
like printed text (the strict test), and whether they nearly do (the near-miss test of review).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from deid.redaction.detect import DetectParams


@dataclass(frozen=True)
class Glyphs:
    """The glyphs of one candidate line: how many (of at least half the tallest one's height), their
    height spread and their top/baseline misalignment (fractions of the mean height), the tallest;
    for scoring, how much their widths and the steps between them vary (printed text varies, dotted
    lines and tick marks do not) and how much of its bounding box a glyph's strokes fill on average."""

    count: int
    spread: float
    align: float
    tallest: float
    width_cv: float = 0.0
    step_cv: float = 0.0
    fill: float = 0.0


def glyph_stats(strokes: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> Glyphs:
    crop = strokes[y0:y1, x0:x1]
    _, _, stats, _ = cv2.connectedComponentsWithStats(crop, connectivity=8)
    heights = stats[1:, cv2.CC_STAT_HEIGHT].astype(np.float64)
    tops = stats[1:, cv2.CC_STAT_TOP].astype(np.float64)
    widths = stats[1:, cv2.CC_STAT_WIDTH].astype(np.float64)
    areas = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
    centres = stats[1:, cv2.CC_STAT_LEFT] + widths / 2.0
    if not len(heights):
        return Glyphs(0, 0.0, 0.0, 0.0)
    big = heights >= max(3.0, 0.5 * float(heights.max()))
    heights, tops, centres, widths, areas = heights[big], tops[big], centres[big], widths[big], areas[big]
    if not len(heights):
        return Glyphs(0, 0.0, 0.0, 0.0)
    fill = float((areas / np.maximum(widths * heights, 1.0)).mean())
    if len(heights) == 1:
        return Glyphs(1, 0.0, 0.0, float(heights[0]), fill=fill)
    mean_height = float(heights.mean())
    spread = float(heights.std()) / mean_height
    align = min(_line_residual(centres, tops), _line_residual(centres, tops + heights)) / mean_height
    steps = np.diff(np.sort(centres))
    step_cv = float(steps.std() / max(float(steps.mean()), 1e-6)) if len(steps) > 1 else 0.0
    width_cv = float(widths.std() / max(float(widths.mean()), 1e-6))
    return Glyphs(len(heights), spread, min(align, 10.0), float(heights.max()), width_cv, step_cv, fill)


def glyphs_look_like_text(glyphs: Glyphs, contrast: float, params: DetectParams) -> bool:
    """Glyph test inside one candidate line: several glyphs of similar height on a common edge.

    A line of ordinary contrast needs `min_glyphs`; a weaker one (thin anti-aliased type) needs
    `weak_min_glyphs` and tighter alignment; one tall glyph passes only at very high contrast.
    """
    if glyphs.count == 0:
        return False
    if glyphs.count == 1:
        return bool(contrast >= params.single_glyph_contrast and glyphs.tallest >= 2 * params.min_height)
    if contrast >= params.line_contrast:
        need, spread_limit, align_limit = params.min_glyphs, params.max_height_spread, params.max_align_spread
    else:
        need, spread_limit, align_limit = params.weak_min_glyphs, 0.3, 0.15
    return glyphs.count >= need and glyphs.spread <= spread_limit and glyphs.align <= align_limit


def near_miss(glyphs: Glyphs, line: tuple[float, float, float, int], params: DetectParams) -> bool:
    """The looser test of near misses (DetectParams): faint lines of many aligned glyphs alone on
    their ground, or lines of ordinary contrast with few glyphs or looser alignment. `line`:
    (contrast, density, isolation, height)."""
    contrast, density, isolation, height = line
    if contrast >= params.line_contrast:
        # Two glyphs (a short word, a cut-off line) only at the contrast of a lone glyph.
        fewest = params.near_min_glyphs if contrast >= params.single_glyph_contrast else params.min_glyphs
        return (
            glyphs.count >= fewest
            and glyphs.spread <= params.near_max_height_spread
            and glyphs.align <= params.near_max_align_spread
        )
    return (
        glyphs.count >= params.near_faint_min_glyphs
        and glyphs.spread <= params.near_faint_height_spread
        and glyphs.align <= params.near_faint_align_spread
        and density >= params.near_faint_min_density
        and isolation <= params.near_faint_max_isolation
        and height >= params.near_faint_min_height
    )


def _line_residual(x: np.ndarray, y: np.ndarray) -> float:
    """Spread of glyph tops (or bottoms) around a fitted straight line, so slightly skewed lines
    align as well as level ones."""
    if len(x) < 3 or float(x.std()) == 0.0:
        return float(y.std())
    slope = float(((x - x.mean()) * (y - y.mean())).mean() / x.var())
    if abs(slope) > 0.5:  # steeper than ~27 degrees: not a text line this detector handles
        return float("inf")
    return float((y - y.mean() - slope * (x - x.mean())).std())
