"""Confidence per text candidate, the one hold rule, the keyed sample, and review.json."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deid.keys import DeidKey
from deid.redaction.confidence import Candidate, band_counts, detect_score, ocr_score, settle
from deid.redaction.detect import detect_text_boxes, detect_text_lines
from deid.redaction.engine import RedactionConfig, redact_image
from deid.review.decision import SAMPLED, UNCERTAIN, review_reason, sampled
from deid.review.held import HeldInput, Preview, numbered, profile_record
from deid.settings import Box, ProfileSettings
from tests.support.review_inputs import FAINT_LEVEL, us_frame
from tests.support.text_images import black_background, draw_text, tissue_background

THRESHOLD = 0.8


def _covered(ink: np.ndarray, boxes: tuple[Box, ...]) -> float:
    mask = np.zeros(ink.shape, bool)
    for box in boxes:
        mask[box.y : box.y + box.height, box.x : box.x + box.width] = True
    return float((ink & mask).sum()) / max(1, int(ink.sum()))


def test_strong_text_scores_at_or_above_the_threshold_and_is_redacted() -> None:
    frame, drawn = us_frame(strong=True)
    outcome = redact_image(frame, RedactionConfig(text_mode="detect", review_threshold=THRESHOLD))
    assert drawn.strong is not None
    assert _covered(drawn.strong, outcome.boxes) >= 0.95
    assert max(c.score for c in outcome.candidates) >= 0.9
    assert not outcome.pending  # weaker duplicates of the line are covered by the confident box


@pytest.mark.parametrize("what", ["faint", "partial"])
def test_faint_or_partial_text_is_left_pending_not_redacted(what: str) -> None:
    frame, drawn = us_frame(strong=False, faint=what == "faint", partial=what == "partial")
    ink = drawn.faint if what == "faint" else drawn.partial
    assert ink is not None
    outcome = redact_image(frame, RedactionConfig(text_mode="detect", review_threshold=THRESHOLD))
    assert outcome.pending, "the uncertain text must reach a person"
    assert all(c.score < THRESHOLD for c in outcome.pending)
    assert _covered(ink, tuple(c.box for c in outcome.pending)) >= 0.9
    assert _covered(ink, outcome.boxes) < 0.05  # not redacted automatically: the reviewer decides


def test_threshold_zero_keeps_the_detector_as_it_was() -> None:
    frame, _ = us_frame(strong=True, faint=True, partial=True)
    outcome = redact_image(frame, RedactionConfig(text_mode="detect"))
    assert not outcome.pending
    assert set(outcome.boxes) == set(detect_text_boxes(frame))
    assert {line.box for line in detect_text_lines(frame)} == set(detect_text_boxes(frame))


def test_scores_rise_with_contrast_and_tissue_has_no_candidates() -> None:
    scores = []
    for level in (FAINT_LEVEL, 130, 230):
        image = black_background(120, 320, channels=1)
        draw_text(image, "ZQX^PATIENT 2024-01-10", (20, 40), color=level)
        scores.append(max(detect_score(line) for line in detect_text_lines(image, near_misses=True)))
    assert scores == sorted(scores) and scores[0] < THRESHOLD <= scores[-1]
    for seed in range(4):
        assert not detect_text_lines(tissue_background(512, 512, seed=seed), near_misses=True)


def test_ocr_scores_combine_word_confidence_and_match() -> None:
    assert ocr_score("term", [92, 95], 0.9) >= THRESHOLD
    assert ocr_score("term", [30], 0.9) < THRESHOLD
    assert ocr_score("pattern", [90], 0.9) > ocr_score("unclassified", [90], 0.9)
    assert ocr_score(None, [], 0.9) < THRESHOLD  # read nothing: a person decides


def test_settle_covers_low_candidates_inside_redacted_boxes() -> None:
    strong = Candidate(Box(10, 10, 100, 20), 0.95)
    inside = Candidate(Box(12, 12, 90, 16), 0.5)
    apart = Candidate(Box(10, 100, 50, 20), 0.5)
    statuses = [c.status for c in settle([strong, inside, apart], THRESHOLD)]
    assert statuses == ["redacted", "covered", "pending"]
    assert [c.status for c in settle([apart], THRESHOLD, [Box(0, 90, 80, 40)])] == ["covered"]


def test_the_hold_rule() -> None:
    key = DeidKey(b"k" * 32)
    pending = Candidate(Box(0, 0, 5, 5), 0.5, status="pending")
    covered = Candidate(Box(0, 0, 5, 5), 0.5, status="covered")
    assert review_reason([pending], THRESHOLD, 0.0, key, "a" * 64) == UNCERTAIN
    assert review_reason([covered], THRESHOLD, 0.0, key, "a" * 64) is None
    assert review_reason([pending], 0.0, 0.0, key, "a" * 64) is None  # threshold 0: no holding
    assert review_reason([], THRESHOLD, 1.0, key, "a" * 64) == SAMPLED


def test_sample_is_keyed_reproducible_and_near_the_rate() -> None:
    key, other = DeidKey(b"k" * 32), DeidKey(b"o" * 32)
    shas = [f"{i:064x}" for i in range(4000)]
    chosen = {s for s in shas if sampled(key, s, 0.1)}
    assert chosen == {s for s in shas if sampled(DeidKey(b"k" * 32), s, 0.1)}  # same key, same inputs
    assert abs(len(chosen) / len(shas) - 0.1) < 0.015
    assert chosen != {s for s in shas if sampled(other, s, 0.1)}
    assert not any(sampled(key, s, 0.0) for s in shas[:100])


def test_review_json_round_trip_holds_no_text() -> None:
    items = [
        (Candidate(Box(1, 2, 30, 10), 0.61, "detect", "pending"), 0, None),
        (Candidate(Box(1, 40, 30, 10), 0.97, "ocr", "redacted"), 1, None),
    ]
    held = HeldInput(
        "c" * 64,
        "dicom",
        UNCERTAIN,
        THRESHOLD,
        "20261201T000000Z-00000000",
        ("dicom/1/2/3.dcm",),
        candidates=numbered(items),
        previews=(Preview("preview-0.png", 320, 240, 1.0, frame=0),),
        actions={"text_score_60_80": 1},
        profile=profile_record(ProfileSettings(keep=("Manufacturer",))),
        input_size=1234,
        subtype="dicom",
        image_size=(320, 240),
        frames=2,
    )
    text = held.to_json()
    again = HeldInput.from_json(text)
    assert again == held
    assert again.pending[0].number == 1 and again.pending[0].frame == 0
    assert again.profile_settings().keep == ("Manufacturer",)
    assert set(json.loads(text)) >= {"candidates", "previews", "outputs", "threshold", "reason"}
    assert held.held_paths() == [f"review/{'c' * 64}/dicom/1/2/3.dcm"]


def test_band_counts_cover_every_score() -> None:
    counts = band_counts([0.0, 0.19, 0.2, 0.79, 0.8, 0.95, 1.0])
    assert counts["text_score_00_20"] == 2 and counts["text_score_60_80"] == 1
    assert counts["text_score_80_90"] == 1 and counts["text_score_90_100"] == 2
    assert sum(counts.values()) == 7
