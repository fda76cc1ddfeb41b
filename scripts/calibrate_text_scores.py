"""Fit the `detect` confidence model (deid/redaction/confidence.py) on labelled synthetic images.

    python scripts/calibrate_text_scores.py [--images 1600] [--seed 7]

Each image is a ground (ultrasound-dark, light paper, a CT-like disc, grey gradient, H&E-like
tissue) with, at random, text lines (random letters, digits and separators in four Hershey fonts,
6 to 40 px high, contrast 45 to 230 grey levels, sometimes blurred, cut off by the image edge,
only two or three characters long, or half over a bright structure) and confusers that are not
text (dotted and dashed lines, ruler ticks, rows of blobs, caliper crosses, hatching). Every
candidate `detect_text_lines(..., near_misses=True)` returns is labelled positive when it holds at
least a tenth of the ink of some drawn text, negative otherwise (a confuser, tissue, noise).

The candidate's evidence (`confidence.detect_evidence`, a fixed sum of margins past the detector's
limits) is Platt-scaled: a one-feature logistic regression (Newton's method, light L2) fitted on two
thirds of the candidates gives PLATT, printed at the end, to be pasted into confidence.py; the
script also prints reliability on the held-out third (predicted vs observed rate per score band)
and its AUC, for the fitted and for the current values. The images
depend only on --seed; results depend on OpenCV's rendering, so refit after an OpenCV upgrade.
"""

from __future__ import annotations

import argparse
import string
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deid.redaction.confidence import PLATT, detect_evidence, detect_score
from deid.redaction.detect import detect_text_lines

FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_COMPLEX)
ALPHABET = string.ascii_uppercase + string.digits + string.ascii_lowercase + "^-/:. "
HEIGHT, WIDTH = 240, 320


def _ground(rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """(uint8 grey image, dark ground?)"""
    kind = rng.integers(0, 5)
    noise = rng.normal(0, rng.uniform(1, 8), size=(HEIGHT, WIDTH))
    if kind == 0:  # ultrasound margin / CT air
        base = np.full((HEIGHT, WIDTH), rng.uniform(0, 25))
        dark = True
    elif kind == 1:  # paper, report screen
        base = np.full((HEIGHT, WIDTH), rng.uniform(200, 250))
        dark = False
    elif kind == 2:  # CT-like disc on black
        base = np.zeros((HEIGHT, WIDTH))
        cv2.circle(
            base,
            (int(rng.integers(80, 240)), int(rng.integers(60, 180))),
            int(rng.integers(60, 140)),
            float(rng.uniform(60, 140)),
            -1,
        )
        base = cv2.GaussianBlur(base, (0, 0), 3)
        dark = True
    elif kind == 3:  # grey gradient
        ramp = np.linspace(rng.uniform(0, 120), rng.uniform(80, 200), WIDTH)
        base = np.tile(ramp, (HEIGHT, 1))
        dark = float(base.mean()) < 128
    else:  # tissue-like: stained texture with nuclei
        base = np.full((HEIGHT, WIDTH), rng.uniform(150, 200))
        coarse = cv2.resize(
            rng.normal(size=(HEIGHT // 24, WIDTH // 24)), (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC
        )
        base += 25 * coarse
        for _ in range(int(rng.integers(20, 120))):
            cv2.ellipse(
                base,
                (int(rng.integers(0, WIDTH)), int(rng.integers(0, HEIGHT))),
                (int(rng.integers(3, 8)), int(rng.integers(3, 6))),
                float(rng.integers(0, 180)),
                0,
                360,
                float(rng.uniform(60, 120)),
                -1,
                cv2.LINE_AA,
            )
        base = cv2.GaussianBlur(base, (0, 0), 1.0)
        dark = False
    return np.clip(base + noise, 0, 255).astype(np.uint8), dark


def _ink_value(ground: float, dark: bool, contrast: float) -> float:
    return min(255.0, ground + contrast) if dark else max(0.0, ground - contrast)


def _text(rng: np.random.Generator, image: np.ndarray, dark: bool, lines: list[np.ndarray]) -> None:
    length = int(rng.choice([2, 3, 5, 8, 12, 18]))
    text = "".join(rng.choice(list(ALPHABET), size=length)).strip() or "AB"
    font = int(rng.choice(FONTS))
    scale = float(rng.uniform(0.3, 1.5))
    thickness = int(rng.integers(1, 4))
    (w, h), _ = cv2.getTextSize(text, font, scale, thickness)
    x = (
        int(rng.integers(-w // 3, max(1, WIDTH - w // 2)))
        if rng.random() < 0.2
        else int(rng.integers(0, max(1, WIDTH - w)))
    )
    y = int(rng.integers(h + 2, HEIGHT - 4))
    ground = float(np.median(image[max(0, y - h) : y + 2, max(0, x) : max(1, x + w)]))
    contrast = float(rng.uniform(45, 230))
    layer = np.zeros_like(image)
    cv2.putText(layer, text, (x, y), font, scale, 255, thickness, cv2.LINE_AA)
    if rng.random() < 0.25:
        layer = cv2.GaussianBlur(layer, (0, 0), float(rng.uniform(0.5, 1.2)))
    alpha = layer.astype(np.float64) / 255.0
    value = _ink_value(ground, dark, contrast)
    before = image.copy()
    image[:] = np.clip(image * (1 - alpha) + value * alpha, 0, 255).astype(np.uint8)
    if rng.random() < 0.15:  # half of the line over a bright structure (partly hidden text)
        x0 = max(0, x + w // 2)
        image[max(0, y - h - 2) : y + 4, x0 : x0 + w] = np.maximum(
            image[max(0, y - h - 2) : y + 4, x0 : x0 + w], int(value)
        )
    # Ink: pixels the text visibly changed (by 30 levels, or 30 % of its contrast for strong text).
    lines.append(np.abs(image.astype(np.int16) - before.astype(np.int16)) > max(30.0, 0.3 * contrast))


def _confuser(rng: np.random.Generator, image: np.ndarray, dark: bool) -> None:
    ground = float(np.median(image))
    value = _ink_value(ground, dark, float(rng.uniform(50, 230)))
    kind = rng.integers(0, 6)
    y = int(rng.integers(10, HEIGHT - 10))
    x0 = int(rng.integers(0, WIDTH // 2))
    x1 = int(rng.integers(x0 + 30, WIDTH))
    step = int(rng.integers(4, 14))
    size = int(rng.integers(1, 5))
    if kind == 0:  # dotted line
        for x in range(x0, x1, step):
            cv2.circle(image, (x, y), size, value, -1, cv2.LINE_AA)
    elif kind == 1:  # dashed line
        for x in range(x0, x1, step * 2):
            cv2.line(image, (x, y), (x + step, y), value, size, cv2.LINE_AA)
    elif kind == 2:  # ruler ticks
        cv2.line(image, (x0, y), (x1, y), value, 1)
        for index, x in enumerate(range(x0, x1, step)):
            length = int(rng.integers(4, 12)) if index % 5 else 14
            cv2.line(image, (x, y), (x, y - length), value, 1)
    elif kind == 3:  # a row of blobs
        for x in range(x0, x1, step + 4):
            cv2.ellipse(
                image, (x, y + int(rng.integers(-2, 3))), (size + 2, size + 3), 0, 0, 360, value, -1, cv2.LINE_AA
            )
    elif kind == 4:  # caliper crosses
        for x in range(x0, x1, step * 3):
            cv2.drawMarker(image, (x, y), value, cv2.MARKER_CROSS, 8 + size * 2, 1)
    else:  # hatching
        for x in range(x0, x1, step):
            cv2.line(image, (x, y - 6), (x + 6, y + 6), value, 1, cv2.LINE_AA)


def _label(box: tuple[int, int, int, int], lines: list[np.ndarray]) -> int:
    """1 when the box holds at least a tenth of some drawn text's ink (not a neighbour's descender)."""
    x, y, w, h = box
    return int(any(ink[y : y + h, x : x + w].sum() >= max(4, 0.1 * ink.sum()) for ink in lines))


def dataset(count: int, seed: int) -> tuple[list, np.ndarray, np.ndarray]:
    """(lines, their evidence, their labels)."""
    rng = np.random.default_rng(seed)
    found: list = []
    labels: list[int] = []
    for _ in range(count):
        image, dark = _ground(rng)
        lines: list[np.ndarray] = []
        for _ in range(int(rng.integers(0, 4))):
            _text(rng, image, dark, lines)
        for _ in range(int(rng.integers(0, 3))):
            _confuser(rng, image, dark)
        for line in detect_text_lines(image, near_misses=True):
            found.append(line)
            labels.append(_label(tuple(line.box.as_list()), lines))  # type: ignore[arg-type]
    evidence = np.asarray([detect_evidence(line) for line in found], np.float64)
    return found, evidence, np.asarray(labels, np.float64)


def fit(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 50) -> np.ndarray:
    design = np.hstack([np.ones((len(x), 1)), x])
    weights = np.zeros(design.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-design @ weights))
        gradient = design.T @ (p - y) + l2 * weights
        hessian = (design * (p * (1 - p))[:, None]).T @ design + l2 * np.eye(len(weights))
        weights -= np.linalg.solve(hessian, gradient)
    return weights


def auc(scores: np.ndarray, y: np.ndarray) -> float:
    order = np.argsort(scores)
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    positives = y == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / max(1, n_pos * n_neg))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1600)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    lines, x, y = dataset(args.images, args.seed)
    split = len(x) * 2 // 3
    weights = fit(x[:split, None], y[:split])
    platt = (float(weights[1]), float(weights[0]))
    print(f"candidates: {len(x)} ({int(y.sum())} positive); fitted on {split}, held out {len(x) - split}")
    print(f"PLATT = ({platt[0]:.4f}, {platt[1]:.4f})")
    for name, coefficients in (("fitted", platt), ("in confidence.py", PLATT)):
        held_y = y[split:]
        scores = np.asarray([detect_score(line, coefficients) for line in lines[split:]])
        print(f"{name}: held-out AUC {auc(scores, held_y):.3f}")
        edges = (0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0001)
        for low, high in zip(edges, edges[1:], strict=False):
            band = (scores >= low) & (scores < high)
            if band.any():
                print(
                    f"  score {low:.1f}-{min(high, 1.0):.1f}: {int(band.sum()):5d} candidates, mean score "
                    f"{scores[band].mean():.2f}, observed positive {held_y[band].mean():.2f}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
