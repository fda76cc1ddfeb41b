"""Burned-in text on clinical images that carry no BurnedInAnnotation flag (most real CT/CR/DX/MG).

With --redact_text on, every image is searched (--redact_text_scope all, the default): the real
presidio CR and CT localizer of ../shared/data and synthetic CT/DX/MG frames with names and dates in
several fonts, sizes, polarities and positions, flush with the edge included. Every PHI word box
must be filled, and the instance published, not quarantined.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_color_lut

from deid.dicom.instance import InstanceSource, deidentify_instance
from deid.keys import DeidKey
from deid.settings import ProfileSettings, RedactionSettings, RunSettings
from tests.support import dicom_factory
from tests.support.env import SHARED_DATA

PRESIDIO = SHARED_DATA / "dicom_samples" / "presidio"
KEY = DeidKey.generate()
# ground_truth.json boxes are offset by +25 px (presidio pads the image before its OCR).
GT_OFFSET = 25


def _settings(scope: str = "all", mode: str = "detect") -> RunSettings:
    return RunSettings(
        output="unused",
        key_token=KEY.to_token(),
        profile=ProfileSettings(pixel_redaction=True),
        redaction=RedactionSettings(text=mode, scope=scope),
    )


def _run(data: bytes, scope: str = "all", mode: str = "detect") -> tuple[pydicom.Dataset, dict[str, int], bool]:
    settings = _settings(scope, mode)
    result = deidentify_instance(data, settings, KEY, InstanceSource(hashlib.sha256(data).hexdigest()))
    return pydicom.dcmread(io.BytesIO(result.payload)), result.actions, result.leaked


def _filled(frame: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    x, y, w, h = box
    region = frame[y : y + h, x : x + w]
    return region.size > 0 and int(region.max()) == int(region.min())


@pytest.mark.parametrize(
    ("name", "entry", "mode"),
    [
        ("0_ORIGINAL_compressed.dcm", "0", "detect"),
        ("2_ORIGINAL.dicom", "2", "detect"),
        ("0_ORIGINAL_compressed.dcm", "0", "ocr"),
        ("2_ORIGINAL.dicom", "2", "ocr"),
    ],
)
def test_real_presidio_images_every_phi_word_redacted_and_published(name: str, entry: str, mode: str) -> None:
    if not (PRESIDIO / name).is_file():
        pytest.skip("../shared/data/dicom_samples/presidio is not beside this checkout")
    if mode == "ocr" and shutil.which("tesseract") is None:
        pytest.skip("tesseract is not installed (apt-get install tesseract-ocr)")
    data = (PRESIDIO / name).read_bytes()
    assert "BurnedInAnnotation" not in pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    truth = json.loads((PRESIDIO / "ground_truth.json").read_text())[f"sample_data/{entry}_ORIGINAL.dcm"]
    out, actions, leaked = _run(data, mode=mode)
    assert not leaked
    assert actions["pixels_frames_searched"] == 1 and actions["pixels_boxes_redacted"] >= 1
    assert out.BurnedInAnnotation == "NO"
    frame = out.pixel_array
    missed = [
        w["label"]
        for w in truth
        if not _filled(frame, (w["left"] - GT_OFFSET, w["top"] - GT_OFFSET, w["width"], w["height"]))
    ]
    assert missed == []
    # Precision: what was filled is near the words, not the whole image.
    assert actions["pixels_boxes_redacted"] <= 4 * len(truth)


def _anatomy(rows: int, cols: int, low: int, high: int, seed: int) -> np.ndarray:
    """A body-like ellipse with soft texture over a dark field (values between low and high)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols]
    body = ((xx - cols / 2) / (cols * 0.38)) ** 2 + ((yy - rows / 2) / (rows * 0.42)) ** 2 < 1
    texture = cv2.GaussianBlur(rng.normal(0, 1, (rows, cols)).astype(np.float32), (0, 0), 6)
    image = np.where(body, 0.55 + 0.25 * texture / max(float(np.abs(texture).max()), 1e-6), 0.02)
    image += rng.normal(0, 0.01, (rows, cols))
    return (low + np.clip(image, 0, 1) * (high - low)).astype(np.float64)


# (text, position, font, scale, thickness, light text?) drawn into each synthetic image.
WORDS = [
    ("ZQXDOE^ALPHA", "top-left-flush", cv2.FONT_HERSHEY_SIMPLEX, 0.9, 2, True),
    ("DOB 03.09.1951", "top-right", cv2.FONT_HERSHEY_DUPLEX, 0.6, 1, True),
    ("ID 00047431395", "bottom-left", cv2.FONT_HERSHEY_PLAIN, 1.6, 2, True),
    ("09-MAR-2012 10:42", "bottom-right-flush", cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1, True),
    ("ZQXWARBLE Q", "middle", cv2.FONT_HERSHEY_COMPLEX, 0.8, 2, False),
]


def _draw(image: np.ndarray, low: float, high: float) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    rows, cols = image.shape
    boxes = []
    for text, where, font, scale, thick, light in WORDS:
        (tw, th), base = cv2.getTextSize(text, font, scale, thick)
        x = {"left": 6, "right": cols - tw - 8, "flush": 0}.get(where.split("-")[1] if "-" in where else "", cols // 3)
        if where.endswith("flush"):
            x = 0 if "left" in where else cols - tw
        y = {"top": th + 6, "bottom": rows - base - 6, "middle": rows // 2}[where.split("-")[0]]
        if where.startswith("top") and where.endswith("flush"):
            y = th
        if where.startswith("bottom") and where.endswith("flush"):
            y = rows - base
        mask = np.zeros((rows, cols), np.uint8)
        cv2.putText(mask, text, (x, y), font, scale, 255, thick, cv2.LINE_AA)
        value = high if light else low
        image = np.where(mask > 0, value, image)
        ys, xs = np.nonzero(mask)
        boxes.append((int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)))
    return image, boxes


def _synthetic(modality: str, sop_class: str, rows: int, cols: int, bits: int, signed: bool, mono: str) -> bytes:
    ds = dicom_factory.instance(1, 7, rows, cols)
    del ds.BurnedInAnnotation  # unflagged, like most real CT/CR/DX/MG exports
    for group in [e.tag for e in ds if e.tag.group == 0x6000]:
        del ds[group]
    ds.Modality = modality
    ds.SOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    low, high = (-1024, 2000) if signed else (0, (1 << bits) - 1)
    # Anatomy up to 90 % of the range: the dark word over it then has the >= 100 grey levels of
    # contrast (in the 8-bit detection view) that the detector documents as its limit.
    image, _ = _draw(_anatomy(rows, cols, low, high * 0.9, seed=rows), low, high)
    dtype = np.int16 if signed else np.uint16
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, mono
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = np.rint(image).astype(dtype).tobytes()
    return dicom_factory.to_bytes(ds)


SYNTHETIC = [
    ("CT", "1.2.840.10008.5.1.4.1.1.2", 512, 512, 16, True, "MONOCHROME2"),
    ("DX", "1.2.840.10008.5.1.4.1.1.1.1", 900, 760, 12, False, "MONOCHROME1"),
    ("MG", "1.2.840.10008.5.1.4.1.1.1.2", 1024, 640, 14, False, "MONOCHROME2"),
]


@pytest.mark.parametrize("spec", SYNTHETIC, ids=[s[0] for s in SYNTHETIC])
def test_synthetic_clinical_images_every_word_redacted_and_published(spec: tuple) -> None:
    data = _synthetic(*spec)
    rows, cols = spec[2], spec[3]
    _, boxes = _draw(np.zeros((rows, cols)), 0, 1)
    out, actions, leaked = _run(data)
    assert not leaked
    assert actions["pixels_frames_searched"] == 1
    frame = out.pixel_array
    missed = [WORDS[i][0] for i, box in enumerate(boxes) if not _filled(frame, box)]
    assert missed == []


def test_scope_flagged_leaves_unflagged_images_unsearched() -> None:
    data = _synthetic(*SYNTHETIC[0])
    before = pydicom.dcmread(io.BytesIO(data)).pixel_array
    out, actions, _ = _run(data, scope="flagged")
    assert "pixels_frames_searched" not in actions
    assert np.array_equal(out.pixel_array, before)
    assert "BurnedInAnnotation" not in out


def test_palette_colour_ultrasound_is_redacted_in_its_own_palette() -> None:
    """pydicom-data's OBXXXX1A.dcm: PALETTE COLOR with the patient ID, institution and date in its
    header band; searched on the shown colours, filled with the palette's darkest entry."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file("OBXXXX1A.dcm")
    if path is None:
        pytest.skip("pydicom-data is not installed (pip install -e '.[test]')")
    data = Path(path).read_bytes()
    before = pydicom.dcmread(io.BytesIO(data)).pixel_array
    out, actions, leaked = _run(data)
    assert not leaked and out.PhotometricInterpretation == "PALETTE COLOR"
    assert actions["pixels_boxes_redacted"] >= 5
    original = pydicom.dcmread(io.BytesIO(data))
    shown_before = apply_color_lut(before, original)
    shown_after = apply_color_lut(out.pixel_array, out)
    band = (shown_before[:60] != shown_after[:60]).any(axis=-1)  # the header band with the text
    assert band.mean() > 0.05
    fan = (slice(90, 140), slice(380, 540))  # ultrasound image, no text: the colours shown are unchanged
    assert np.array_equal(shown_before[fan], shown_after[fan])


def test_a_colour_jpeg_without_planar_configuration_is_searched() -> None:
    """A real VL slide-coordinates image (JPEG baseline, YBR_FULL_422, three samples) lacks the Type
    1C PlanarConfiguration, which pydicom's decoder requires: the codec fixes the sample order, so
    it is searched (and published) instead of ending as a pixel_decode dead letter."""
    path = SHARED_DATA / "wsi_samples" / "dicom" / "gcp-slide-coordinates.dcm"
    if not path.is_file():
        pytest.skip("../shared/data/wsi_samples/dicom is not beside this checkout")
    data = path.read_bytes()
    header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    assert "PlanarConfiguration" not in header and int(header.SamplesPerPixel) == 3
    settings = _settings()
    result = deidentify_instance(data, settings, KEY, InstanceSource(hashlib.sha256(data).hexdigest()))
    assert not result.leaked
    assert result.actions["pixels_frames_searched"] == 1
    out = pydicom.dcmread(io.BytesIO(result.payload))
    assert out.pixel_array.shape == (int(header.Rows), int(header.Columns), 3)
