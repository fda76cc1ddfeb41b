"""End to end: a multi-frame ultrasound with text burned into every frame, redacted by the pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom

from pipeline.main import main
from tests.support import dicom_factory
from tests.support.env import BEAM_TEST_ARGS
from tests.support.text_images import black_background, draw_text

FRAMES, ROWS, COLUMNS = 3, 240, 320


def _burned_in_ultrasound(path: Path) -> np.ndarray:
    ds = dicom_factory.ultrasound("YES")
    frames = np.stack([black_background(ROWS, COLUMNS, channels=1, seed=i) for i in range(FRAMES)])
    ink = np.zeros(frames.shape, bool)
    for index in range(FRAMES):
        drawn = draw_text(frames[index], f"ZQX^PATIENT 2024-01-{10 + index}", (20, 40), color=230)
        ink[index] = drawn.ink
    ds.Rows, ds.Columns, ds.NumberOfFrames = ROWS, COLUMNS, FRAMES
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = frames.tobytes()
    path.write_bytes(dicom_factory.to_bytes(ds))
    return ink


def test_burned_in_text_is_redacted_in_every_frame(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    ink = _burned_in_ultrasound(source / "us.dcm")
    before = pydicom.dcmread(source / "us.dcm").pixel_array
    output = tmp_path / "out"

    assert main(["--input", str(source), "--output", str(output), "--redact_text=detect", *BEAM_TEST_ARGS]) == 0

    (record,) = [json.loads(line) for f in (output / "audit").glob("*.jsonl") for line in f.read_text().splitlines()]
    assert record["status"] == "ok", record
    assert record["actions"]["pixels_frames_redacted"] == FRAMES
    out = pydicom.dcmread(output / record["outputs"][0])
    assert out.BurnedInAnnotation == "NO"
    assert "113101" in {str(item.CodeValue) for item in out.DeidentificationMethodCodeSequence}
    after = out.pixel_array
    assert after.shape == before.shape
    for index in range(FRAMES):
        assert (after[index][ink[index]] == 0).mean() >= 0.95, f"text remains in frame {index}"
    # Far from the text nothing changed.
    assert np.array_equal(after[:, 120:, :], before[:, 120:, :])


def test_boxes_alone_do_not_claim_the_text_is_gone(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    _burned_in_ultrasound(source / "us.dcm")
    output = tmp_path / "out"
    assert (
        main(["--input", str(source), "--output", str(output), "--redact_regions=[[0, 0, 320, 60]]", *BEAM_TEST_ARGS])
        == 0
    )
    (record,) = [json.loads(line) for f in (output / "audit").glob("*.jsonl") for line in f.read_text().splitlines()]
    out = pydicom.dcmread(output / record["outputs"][0])
    assert not out.pixel_array[:, :60, :].any()
    assert out.BurnedInAnnotation == "YES"
