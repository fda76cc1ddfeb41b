"""The pixel redaction engine: regions, text detection, overlapped windows, fills and OCR."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deid.errors import ConfigError, OcrUnavailableError
from deid.redaction import (
    RedactionConfig,
    apply_fill,
    detect_text_boxes,
    ocr_confirm,
    redact_image,
    redact_window,
)
from deid.redaction import ocr as ocr_module
from deid.redaction.geometry import boxes_mask
from deid.redaction.ocr import TermMatcher, box_matches
from deid.settings import Box
from tests.support.text_images import (
    black_background,
    draw_text,
    draw_text_across_corner,
    ink_coverage,
    tissue_background,
)

needs_tesseract = pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract is not installed")

DETECT = RedactionConfig(text_mode="detect")


def window_for(core: Box, size: tuple[int, int], overlap: int) -> Box:
    height, width = size
    x0, y0 = max(0, core.x - overlap), max(0, core.y - overlap)
    x1 = min(width, core.x + core.width + overlap)
    y1 = min(height, core.y + core.height + overlap)
    return Box(x0, y0, x1 - x0, y1 - y0)


def redact_tiled(image: np.ndarray, config: RedactionConfig, tile: int, overlap: int) -> tuple[np.ndarray, list]:
    """Redact `image` tile by tile through overlapped windows; reassemble the cores."""
    out = np.empty_like(image)
    outcomes = []
    height, width = image.shape[:2]
    for y in range(0, height, tile):
        for x in range(0, width, tile):
            core = Box(x, y, min(tile, width - x), min(tile, height - y))
            win = window_for(core, (height, width), overlap)
            window = image[win.y : win.y + win.height, win.x : win.x + win.width]
            outcome = redact_window(window, (win.x, win.y), core, config)
            out[y : y + core.height, x : x + core.width] = outcome.pixels
            outcomes.append((core, outcome))
    return out, outcomes


# --- configuration and regions ---------------------------------------------------------------


def test_config_rejects_unknown_mode_and_fill() -> None:
    with pytest.raises(ConfigError, match="text mode must be one of off, detect, ocr"):
        RedactionConfig(text_mode="all")
    with pytest.raises(ConfigError, match="fill must be one of black, blur, inpaint"):
        RedactionConfig(fill="white")


def test_region_is_clipped_to_the_core_in_level0_coordinates() -> None:
    rng = np.random.default_rng(1)
    window = rng.integers(1, 255, size=(200, 300, 3), dtype=np.uint8)
    origin = (1000, 2000)
    core = Box(1050, 2040, 128, 128)  # window pixels x 50..178, y 40..168
    config = RedactionConfig(regions=(Box(1100, 2000, 500, 60), Box(0, 0, 10, 10)))
    outcome = redact_window(window, origin, core, config)
    assert outcome.changed
    assert outcome.boxes == (Box(1100, 2040, 78, 20),)
    expected = window[40:168, 50:178].copy()
    expected[0:20, 50:128] = 0
    np.testing.assert_array_equal(outcome.pixels, expected)


@settings(max_examples=60, deadline=None)
@given(
    rx=st.integers(0, 300),
    ry=st.integers(0, 300),
    rw=st.integers(1, 200),
    rh=st.integers(1, 200),
    cx=st.integers(0, 150),
    cy=st.integers(0, 150),
)
def test_region_mask_equals_box_intersection(rx: int, ry: int, rw: int, rh: int, cx: int, cy: int) -> None:
    window = np.full((250, 250), 200, np.uint8)
    core = Box(10 + cx, 20 + cy, 90, 80)
    outcome = redact_window(window, (10, 20), core, RedactionConfig(regions=(Box(rx, ry, rw, rh),)))
    ys, xs = np.mgrid[core.y : core.y + core.height, core.x : core.x + core.width]
    inside = (xs >= rx) & (xs < rx + rw) & (ys >= ry) & (ys < ry + rh)
    np.testing.assert_array_equal(outcome.pixels == 0, inside)
    assert outcome.changed == bool(inside.any())
    for box in outcome.boxes:
        assert core.x <= box.x and box.x + box.width <= core.x + core.width
        assert core.y <= box.y and box.y + box.height <= core.y + core.height


def test_core_outside_window_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="core box must lie inside the window"):
        redact_window(np.zeros((10, 10), np.uint8), (0, 0), Box(5, 5, 10, 10), RedactionConfig())


# --- text detection ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "scale", "thickness"),
    [
        ("DOE JOHN 12/03/1961", 0.8, 2),
        ("MRN 12345678", 0.45, 1),
        ("St. Mary Hospital", 1.2, 2),
        ("ACC 998877", 3.0, 6),
    ],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_detect_covers_dark_text_on_tissue(text: str, scale: float, thickness: int, seed: int) -> None:
    image = tissue_background(512, 512, seed=seed)
    drawn = draw_text(image, text, (20, 260), scale=scale, thickness=thickness)
    boxes = detect_text_boxes(image)
    assert ink_coverage(drawn.ink, boxes_mask(boxes, 512, 512)) >= 0.95


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(("scale", "thickness"), [(0.4, 1), (0.7, 1), (1.0, 2)])
def test_detect_covers_light_text_on_black(channels: int, scale: float, thickness: int) -> None:
    image = black_background(300, 500, channels=channels)
    header = draw_text(image, "PATIENT DOE 2021-03-12 10:44", (10, 30), scale=scale, thickness=thickness, color=230)
    footer = draw_text(image, "ID 45127788", (300, 280), scale=scale, thickness=thickness, color=(255, 255, 0)[0])
    mask = boxes_mask(detect_text_boxes(image), 300, 500)
    assert ink_coverage(header.ink, mask) >= 0.95
    assert ink_coverage(footer.ink, mask) >= 0.95
    # The boxes hug the text: most of the frame stays unredacted.
    assert mask.mean() < 0.15


@pytest.mark.parametrize("angle", [-8, 4])
def test_detect_covers_slightly_skewed_text(angle: float) -> None:
    image: np.ndarray = np.full((400, 400, 3), 235, np.uint8)
    drawn = draw_text(image, "DOE JOHN 12/03/1961", (60, 200), scale=0.6, thickness=1)
    turn = cv2.getRotationMatrix2D((200, 200), angle, 1.0)
    image = cv2.warpAffine(image, turn, (400, 400), borderValue=(235, 235, 235))
    ink = cv2.warpAffine(drawn.ink.astype(np.uint8), turn, (400, 400), flags=cv2.INTER_NEAREST) > 0
    assert ink_coverage(ink, boxes_mask(detect_text_boxes(image), 400, 400)) >= 0.95


@pytest.mark.parametrize("seed", range(8))
def test_detect_ignores_tissue_texture(seed: int) -> None:
    image = tissue_background(512, 512, seed=seed, glass=seed % 2 == 0, nuclei_per_mpx=3000)
    assert len(detect_text_boxes(image)) <= 1


def test_detect_ignores_real_he_tissue(shared_data) -> None:
    tifffile = pytest.importorskip("tifffile")
    path = shared_data / "wsi" / "CMU-1-Small-Region.svs"
    if not path.exists():
        pytest.skip("CMU-1-Small-Region.svs is not in the shared data")
    level0 = tifffile.imread(path, key=0)
    height, width = level0.shape[:2]
    redacted, outcomes = redact_tiled(level0, DETECT, 512, 64)
    changed_fraction = float((redacted != level0).any(axis=2).mean())
    assert sum(len(o.boxes) for _, o in outcomes) <= 2
    assert changed_fraction < 0.002


def test_detect_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="needs a uint8 image"):
        detect_text_boxes(np.zeros((20, 20), np.uint16))
    with pytest.raises(ValueError, match="needs an H x W"):
        detect_text_boxes(np.zeros((20, 20, 2), np.uint8))
    assert detect_text_boxes(np.zeros((3, 3), np.uint8)) == []


# --- windows and tiles ------------------------------------------------------------------------


@pytest.mark.parametrize("background", ["tissue", "black"])
def test_text_across_a_tile_corner_is_redacted_in_all_four_tiles(background: str) -> None:
    if background == "tissue":
        image = tissue_background(1024, 1024, seed=5)
        color: int | tuple[int, ...] = (10, 10, 10)
    else:
        image = black_background(1024, 1024)
        color = (240, 240, 240)
    drawn = draw_text_across_corner(image, "MRN 12345678 DOE JOHN", (512, 512), scale=0.9, color=color)
    tiled, outcomes = redact_tiled(image, DETECT, 512, 64)

    whole = redact_image(image, DETECT)
    np.testing.assert_array_equal(tiled, whole.pixels)
    assert len(outcomes) == 4
    for core, outcome in outcomes:
        core_ink = drawn.ink[core.y : core.y + core.height, core.x : core.x + core.width]
        assert core_ink.any()
        assert outcome.changed
        redacted = np.zeros(drawn.ink.shape, bool)
        redacted[core.y : core.y + core.height, core.x : core.x + core.width] = (outcome.pixels == 0).all(axis=2)
        covered = ink_coverage(core_ink, redacted[core.y : core.y + core.height, core.x : core.x + core.width])
        assert covered >= 0.95
    # Every box reported by a tile lies in its core.
    for core, outcome in outcomes:
        for box in outcome.boxes:
            assert core.x <= box.x and box.x + box.width <= core.x + core.width
            assert core.y <= box.y and box.y + box.height <= core.y + core.height


def test_unaligned_window_still_sees_the_whole_core() -> None:
    image = np.full((300, 400, 3), 235, np.uint8)
    drawn = draw_text(image, "DOB 03/04/1977", (3, 20), scale=0.6, thickness=1)
    # Window origin (3, 5) is off the detection grid and flush with the core.
    window = image[5:, 3:]
    outcome = redact_window(window, (3, 5), Box(3, 5, 397, 295), DETECT)
    redacted = np.zeros((300, 400), bool)
    redacted[5:, 3:] = (outcome.pixels == 0).all(axis=2)
    assert ink_coverage(drawn.ink, redacted) >= 0.95


def test_clean_tile_is_unchanged() -> None:
    image = tissue_background(640, 640, seed=3)
    core = Box(64, 64, 512, 512)
    config = RedactionConfig(text_mode="detect", regions=(Box(700, 0, 10, 10),))
    outcome = redact_window(image, (0, 0), core, config)
    assert not outcome.changed
    assert outcome.boxes == ()
    np.testing.assert_array_equal(outcome.pixels, image[64:576, 64:576])
    assert outcome.pixels.flags.c_contiguous


# --- fills -------------------------------------------------------------------------------------


def _text_tile() -> tuple[np.ndarray, np.ndarray]:
    image = tissue_background(200, 300, seed=7)
    draw_text(image, "DOE JOHN", (40, 110), scale=1.0, thickness=2)
    mask = np.zeros((200, 300), bool)
    mask[80:125, 30:200] = True
    return image, mask


def test_black_fill_zeroes_only_the_mask() -> None:
    image, mask = _text_tile()
    out = apply_fill(image, mask, "black")
    assert (out[mask] == 0).all()
    np.testing.assert_array_equal(out[~mask], image[~mask])
    assert (apply_fill(image[..., 0], mask, "black", black_value=255)[mask] == 255).all()


@pytest.mark.parametrize("fill", ["blur", "inpaint"])
def test_blur_and_inpaint_change_only_the_mask_and_remove_the_text(fill: str) -> None:
    image, mask = _text_tile()
    out = apply_fill(image, mask, fill)
    np.testing.assert_array_equal(out[~mask], image[~mask])
    region_before = image[mask].astype(np.int16)
    region_after = out[mask].astype(np.int16)
    assert np.abs(region_after - region_before).mean() > 10
    # The dark glyphs are gone: no near-black pixels left and far less contrast inside the box.
    assert (out[mask].max(axis=1) < 60).sum() == 0
    assert region_after.std() < 0.5 * region_before.std()


def test_fill_validates_arguments() -> None:
    with pytest.raises(ValueError, match="fill must be one of"):
        apply_fill(np.zeros((4, 4), np.uint8), np.zeros((4, 4), bool), "white")
    with pytest.raises(ValueError, match="differ in height or width"):
        apply_fill(np.zeros((4, 4), np.uint8), np.zeros((4, 5), bool), "black")
    with pytest.raises(ValueError, match="inpaint fill needs an integer or float image"):
        apply_fill(np.zeros((4, 4), bool), np.ones((4, 4), bool), "inpaint")


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.float32])
@pytest.mark.parametrize("fill", ["blur", "inpaint"])
def test_fills_work_on_deep_frames(dtype: type, fill: str) -> None:
    image: np.ndarray = np.full((80, 120), 1000, dtype)
    image[30:40, 20:100] = 4000  # a bright "text" bar
    mask = np.zeros((80, 120), bool)
    mask[25:45, 15:105] = True
    out = apply_fill(image, mask, fill)
    assert out.dtype == image.dtype
    np.testing.assert_array_equal(out[~mask], image[~mask])
    assert out[30:40, 20:100].max() < 3000


@pytest.mark.parametrize("fill", ["blur", "inpaint"])
def test_window_fill_uses_context_and_stays_in_core(fill: str) -> None:
    image = tissue_background(640, 640, seed=2)
    draw_text(image, "MRN 12345678 DOE JOHN", (150, 330), scale=0.9, thickness=2)
    core = Box(64, 64, 512, 512)
    outcome = redact_window(image, (0, 0), core, RedactionConfig(text_mode="detect", fill=fill))
    assert outcome.changed and outcome.boxes
    before = image[64:576, 64:576]
    mask = boxes_mask(outcome.boxes, 512, 512, origin=(64, 64))
    np.testing.assert_array_equal(outcome.pixels[~mask], before[~mask])
    assert (outcome.pixels[mask].max(axis=1) < 60).sum() == 0


# --- OCR ----------------------------------------------------------------------------------------


def test_term_matcher_dates_names_and_one_misread() -> None:
    matcher = TermMatcher(("DOE^JOHNATHAN", "19610312", "MRN-778899"))
    assert matcher.matches(["Doe,"])
    assert matcher.matches(["J0HNATHAN"])  # one OCR error in a long token
    assert matcher.matches(["12/03/1961"])  # DICOM date as day/month/year
    assert matcher.matches(["03-12-1961"])  # and month-day-year
    assert matcher.matches(["ID:", "778899"])
    assert not matcher.matches(["LIVER", "5.2cm"])
    assert not TermMatcher(()).active


def test_box_matches_patterns_and_any_text() -> None:
    empty = TermMatcher(())
    assert box_matches(["DOB", "1961-03-12"], empty, patterns=True)
    assert box_matches(["12-MAR-1961"], empty, patterns=True)
    assert box_matches(["DOE^JOHN"], empty, patterns=True)
    assert box_matches(["Acc", "A1234567"], empty, patterns=True)
    assert box_matches(["Name:", "Smith"], empty, patterns=True)
    assert not box_matches(["LIVER", "TRANSVERSE"], empty, patterns=True)
    assert not box_matches(["LIVER"], TermMatcher(("SMITH",)), patterns=False)
    assert box_matches(["LIVER"], empty, patterns=False)
    assert not box_matches([], empty, patterns=False)


def test_missing_tesseract_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ocr_module.shutil, "which", lambda name: None)
    image = np.full((60, 200), 255, np.uint8)
    with pytest.raises(OcrUnavailableError, match="needs the tesseract program"):
        ocr_confirm(image, [Box(0, 0, 200, 60)], RedactionConfig(text_mode="ocr"))
    with pytest.raises(OcrUnavailableError, match="needs the tesseract program"):
        RedactionConfig(text_mode="ocr").check_tools()
    assert OcrUnavailableError.error_kind == "ocr_unavailable"


def _ocr_page() -> tuple[np.ndarray, dict[str, tuple[int, int, int, int]]]:
    image = np.full((260, 520, 3), 238, np.uint8)
    lines = {
        "date": draw_text(image, "DOB 12/03/1961", (20, 50), scale=1.0, thickness=2).bbox,
        "name": draw_text(image, "SMITH JOHN", (20, 130), scale=1.0, thickness=2).bbox,
        "organ": draw_text(image, "LIVER TRANSVERSE", (20, 210), scale=1.0, thickness=2).bbox,
    }
    return image, lines


def _covers(boxes: list[Box], bbox: tuple[int, int, int, int]) -> bool:
    x, y, w, h = bbox
    mask = boxes_mask(boxes, 260, 520)
    return bool(mask[y : y + h, x : x + w].mean() > 0.95)


@pytest.mark.needs_tool
@needs_tesseract
def test_ocr_keeps_dates_and_drops_harmless_words() -> None:
    image, lines = _ocr_page()
    config = RedactionConfig(text_mode="ocr", ocr_phi_patterns=True)
    candidates = detect_text_boxes(image)
    assert all(_covers(candidates, bbox) for bbox in lines.values())
    kept = ocr_confirm(image, candidates, config)
    assert _covers(kept, lines["date"])
    assert not _covers(kept, lines["organ"])


@pytest.mark.needs_tool
@needs_tesseract
def test_ocr_terms_select_only_matching_boxes() -> None:
    image, lines = _ocr_page()
    config = RedactionConfig(text_mode="ocr", ocr_terms=("SMITH^JOHN",), ocr_phi_patterns=False)
    outcome = redact_image(image, config)
    kept = list(outcome.boxes)
    assert _covers(kept, lines["name"])
    assert not _covers(kept, lines["date"])
    assert not _covers(kept, lines["organ"])
    # With no terms and patterns off, every box with text is kept.
    everything = redact_image(image, RedactionConfig(text_mode="ocr", ocr_phi_patterns=False))
    assert all(_covers(list(everything.boxes), bbox) for bbox in lines.values())


@pytest.mark.parametrize(
    "words",
    [["PORTABLE", "AP"], ["Semi-Upright", "Portable", "L"], ["120kV", "250mAs"], ["50", "mm/s"], ["96", "HR"], ["R"]],
)
def test_plain_clinical_wording_may_stay(words: list[str]) -> None:
    assert not box_matches(words, TermMatcher(()), patterns=True)


@pytest.mark.parametrize(
    "words",
    [
        ["DAVIDSON", "DOUGLAS"],  # unclassified words: PHI first
        ["03.09.2012"],
        ["3/9/2012"],
        ["2012-03-09"],
        ["09-MAR-2012"],
        ["10:42:26"],
        ["PORTABLE", "KAUFMAN"],
    ],
)
def test_names_dates_times_and_unclassified_words_are_redacted(words: list[str]) -> None:
    assert box_matches(words, TermMatcher(()), patterns=True)


def test_harvested_name_matches_in_any_order_and_case() -> None:
    matcher = TermMatcher(("DAVIDSON^DOUGLAS", "19760616"))
    assert matcher.matches(["douglas", "davidson"]) and matcher.matches(["06.16.1976"])
