"""Burned-in annotation in multi-frame DICOM: every frame redacted, transfer syntax kept or reported."""

from __future__ import annotations

import io
import shutil

import cv2
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

from deid.dicom.pixels import redact_dicom_pixels
from deid.errors import InputTooLargeError, PixelDecodeError
from deid.redaction import RedactionConfig
from deid.redaction.ocr import read_words
from deid.settings import Box
from tests.support.text_images import black_background, draw_text

US_MULTIFRAME = UID("1.2.840.10008.5.1.4.1.1.3.1")
DETECT = RedactionConfig(text_mode="detect")
ROWS, COLUMNS = 240, 320
HEADER = "DOE JOHN 12/03/1961"
FOOTER = "MRN 88412907"


def us_frames(frames: int, photometric: str, *, clean: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Ultrasound-like frames: black margins with white annotation, a speckle sector in the middle.

    Returns (pixels, ink) with ink True where annotation was drawn (the same in every frame).
    """
    channels = 3 if photometric != "MONOCHROME2" else 1
    rng = np.random.default_rng(7)
    out = np.empty((frames, ROWS, COLUMNS, channels), np.uint8)
    ink = np.zeros((ROWS, COLUMNS), bool)
    for index in range(frames):
        frame = black_background(ROWS, COLUMNS, channels=3, seed=index)
        speckle = np.clip(rng.rayleigh(45, size=(120, 200)), 0, 255).astype(np.uint8)
        frame[70:190, 60:260] = speckle[..., None]
        if index not in clean:
            header = draw_text(frame, HEADER, (8, 24), scale=0.6, thickness=1, color=(235, 235, 235))
            footer = draw_text(frame, FOOTER, (170, 228), scale=0.5, thickness=1, color=(255, 255, 0))
            ink = header.ink | footer.ink
        out[index] = frame if channels == 3 else frame[..., :1]
    return (out[..., 0] if channels == 1 else out), ink


def make_dataset(pixels: np.ndarray, photometric: str, syntax: UID) -> Dataset:
    frames = pixels.shape[0]
    samples = 3 if pixels.ndim == 4 else 1
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = US_MULTIFRAME
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = US_MULTIFRAME
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.BurnedInAnnotation = "YES"
    ds.Rows, ds.Columns = ROWS, COLUMNS
    ds.NumberOfFrames = frames
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = "RGB" if samples == 3 else "MONOCHROME2"
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    if syntax == ExplicitVRLittleEndian:
        return ds
    if syntax == ImplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        return ds
    if syntax == RLELossless:
        ds.compress(RLELossless, generate_instance_uid=False)
        return ds
    if syntax == JPEGBaseline8Bit:
        encoded = []
        for frame in pixels:
            buffer = io.BytesIO()
            options = {"subsampling": 1} if samples == 3 else {}
            Image.fromarray(frame).save(buffer, "JPEG", quality=95, **options)
            encoded.append(buffer.getvalue())
        ds.PhotometricInterpretation = "YBR_FULL_422" if samples == 3 else photometric
        ds.LossyImageCompression = "01"
    elif syntax == JPEG2000Lossless:
        encoded = []
        for frame in pixels:
            buffer = io.BytesIO()
            Image.fromarray(frame).save(buffer, "JPEG2000", irreversible=False, no_jp2=True)
            encoded.append(buffer.getvalue())
    else:
        raise AssertionError(syntax)
    ds.PixelData = encapsulate(encoded)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = syntax
    return ds


def roundtrip(ds: Dataset) -> Dataset:
    """Write and read back: the output must be a valid file whose pixels pydicom decodes."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def decoded(ds: Dataset) -> np.ndarray:
    array = ds.pixel_array
    return array if int(ds.NumberOfFrames) > 1 else array[None]


def near_text(ink: np.ndarray, margin: int = 12) -> np.ndarray:
    """The ink's neighbourhood (where redaction boxes may reach): ink dilated by `margin` pixels."""
    kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    return cv2.dilate(ink.astype(np.uint8), kernel).astype(bool)


@pytest.mark.parametrize(
    ("syntax", "photometric"),
    [
        (ExplicitVRLittleEndian, "RGB"),
        (ExplicitVRLittleEndian, "MONOCHROME2"),
        (ImplicitVRLittleEndian, "MONOCHROME2"),
        (RLELossless, "RGB"),
        (RLELossless, "MONOCHROME2"),
    ],
)
def test_lossless_multiframe_text_is_gone_and_other_pixels_kept(syntax: UID, photometric: str) -> None:
    pixels, ink = us_frames(4, photometric)
    ds = make_dataset(pixels, photometric, syntax)
    out, counts = redact_dicom_pixels(ds, DETECT)
    assert counts == {
        "frames_total": 4,
        "frames_redacted": 4,
        "boxes_redacted": counts["boxes_redacted"],
        "transfer_syntax_changed": 0,
    }
    assert counts["boxes_redacted"] >= 8
    back = roundtrip(out)
    assert back.file_meta.TransferSyntaxUID == syntax
    assert back.BurnedInAnnotation == "NO"
    assert back.PhotometricInterpretation == ("RGB" if photometric == "RGB" else "MONOCHROME2")
    after = decoded(back)
    assert after.shape == pixels.shape
    keep = ~near_text(ink)
    for index in range(4):
        frame = after[index].reshape(ROWS, COLUMNS, -1)
        assert (frame[ink] == 0).all(), f"frame {index}: annotation ink left"
        np.testing.assert_array_equal(after[index][keep], pixels[index][keep])
    # The speckle sector is untouched in every frame.
    np.testing.assert_array_equal(after[:, 80:180, 70:250], pixels[:, 80:180, 70:250])


@pytest.mark.needs_tool
@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract is not installed")
def test_tesseract_reads_the_annotation_before_and_nothing_after() -> None:
    pixels, ink = us_frames(3, "RGB")
    band = Box(0, 0, COLUMNS, 40)
    before = [w for w in read_words(pixels[1], [band]) if w.confidence >= 50]
    assert "1961" in " ".join(w.text for w in before)  # tesseract does read the header, confidently
    out, _ = redact_dicom_pixels(make_dataset(pixels, "RGB", RLELossless), DETECT)
    after = decoded(roundtrip(out))
    for frame in after:
        words = read_words(frame, [band, Box(0, 200, COLUMNS, 40)])
        # Binarised sensor noise can yield junk "words" at confidence ~0; no confident text is left.
        assert not [w for w in words if w.confidence >= 50 and sum(c.isalnum() for c in w.text) >= 2]


def test_rle_clean_frames_keep_their_original_bytes() -> None:
    pixels, ink = us_frames(4, "RGB", clean=(1, 3))
    ds = make_dataset(pixels, "RGB", RLELossless)
    original = list(generate_frames(ds.PixelData, number_of_frames=4))
    out, counts = redact_dicom_pixels(ds, DETECT)
    assert counts["frames_redacted"] == 2
    assert counts["transfer_syntax_changed"] == 0
    now = list(generate_frames(roundtrip(out).PixelData, number_of_frames=4))
    assert now[1] == original[1] and now[3] == original[3]
    assert now[0] != original[0] and now[2] != original[2]


@pytest.mark.parametrize("photometric", ["RGB", "MONOCHROME2"])
def test_jpeg_baseline_is_reencoded_per_redacted_frame(photometric: str) -> None:
    pixels, ink = us_frames(3, photometric, clean=(2,))
    ds = make_dataset(pixels, photometric, JPEGBaseline8Bit)
    before = decoded(roundtrip(ds))
    original = list(generate_frames(ds.PixelData, number_of_frames=3))
    out, counts = redact_dicom_pixels(ds, DETECT)
    assert counts["frames_redacted"] == 2
    assert counts["transfer_syntax_changed"] == 0
    back = roundtrip(out)
    assert back.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert back.PhotometricInterpretation == ("YBR_FULL_422" if photometric == "RGB" else "MONOCHROME2")
    assert back.LossyImageCompression == "01"
    after = decoded(back)
    now = list(generate_frames(back.PixelData, number_of_frames=3))
    assert now[2] == original[2]  # the clean frame is passed through byte for byte
    keep = ~near_text(ink)
    for index in (0, 1):
        frame = after[index].reshape(ROWS, COLUMNS, -1).astype(np.int16)
        assert frame[ink].max() < 40, "annotation ink left after JPEG re-encoding"
        difference = np.abs(after[index].astype(np.int16) - before[index].astype(np.int16))
        assert difference[keep].mean() < 2.0


def test_transfer_syntax_without_encoder_falls_back_to_explicit_little_endian() -> None:
    pixels, ink = us_frames(2, "MONOCHROME2")
    ds = make_dataset(pixels, "MONOCHROME2", JPEG2000Lossless)
    out, counts = redact_dicom_pixels(ds, DETECT)
    assert counts["transfer_syntax_changed"] == 1
    back = roundtrip(out)
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert not back["PixelData"].is_undefined_length
    after = decoded(back)
    keep = ~near_text(ink)
    for index in range(2):
        assert (after[index][ink] == 0).all()
        np.testing.assert_array_equal(after[index][keep], pixels[index][keep])


def test_nothing_found_leaves_pixels_and_syntax_alone() -> None:
    pixels, _ = us_frames(2, "RGB", clean=(0, 1))
    ds = make_dataset(pixels, "RGB", RLELossless)
    data = ds.PixelData
    out, counts = redact_dicom_pixels(ds, DETECT)
    assert counts == {"frames_total": 2, "frames_redacted": 0, "boxes_redacted": 0, "transfer_syntax_changed": 0}
    assert out.PixelData == data
    assert out.BurnedInAnnotation == "NO"  # text detection ran over every frame


def test_regions_only_redact_every_frame_and_keep_burned_in_flag() -> None:
    pixels, _ = us_frames(3, "MONOCHROME2")
    ds = make_dataset(pixels, "MONOCHROME2", ExplicitVRLittleEndian)
    out, counts = redact_dicom_pixels(ds, RedactionConfig(regions=(Box(0, 0, COLUMNS, 40), Box(5000, 0, 5, 5))))
    assert counts["frames_redacted"] == 3 and counts["boxes_redacted"] == 3
    after = decoded(roundtrip(out))
    assert (after[:, :40] == 0).all()
    np.testing.assert_array_equal(after[:, 40:], pixels[:, 40:])
    assert out.BurnedInAnnotation == "YES"


def test_inactive_config_changes_nothing() -> None:
    pixels, _ = us_frames(2, "RGB")
    ds = make_dataset(pixels, "RGB", ExplicitVRLittleEndian)
    out, counts = redact_dicom_pixels(ds, RedactionConfig())
    assert counts["frames_total"] == 2 and counts["frames_redacted"] == 0
    assert out.PixelData == pixels.tobytes()
    assert out.BurnedInAnnotation == "YES"


@pytest.mark.parametrize(("photometric", "black"), [("MONOCHROME2", 0), ("MONOCHROME1", 4095)])
def test_deep_frames_are_detected_on_a_view_and_filled_in_depth(photometric: str, black: int) -> None:
    frames = np.full((2, ROWS, COLUMNS), 600, np.uint16)
    frames[:, 60:200, 40:280] = np.random.default_rng(1).integers(500, 3000, size=(2, 140, 240), dtype=np.uint16)
    ink = np.zeros((ROWS, COLUMNS), bool)
    for frame in frames:
        view = np.zeros((ROWS, COLUMNS), np.uint8)
        ink = draw_text(view, HEADER, (8, 30), scale=0.6, thickness=1, color=255).ink
        frame[ink] = 4000
    ds = make_dataset(np.zeros((2, ROWS, COLUMNS), np.uint8), "MONOCHROME2", ExplicitVRLittleEndian)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PhotometricInterpretation = photometric
    ds.PixelData = frames.tobytes()
    out, counts = redact_dicom_pixels(ds, DETECT)
    assert counts["frames_redacted"] == 2
    after = decoded(roundtrip(out))
    assert after.dtype == np.uint16
    for index in range(2):
        assert (after[index][ink] == black).all()
        np.testing.assert_array_equal(after[index][60:200], frames[index][60:200])


def test_real_jpeg_baseline_test_file_with_a_region(tmp_path) -> None:
    from pydicom.data import get_testdata_file

    path = get_testdata_file("examples_ybr_color.dcm")
    if path is None:
        pytest.skip("pydicom test file missing")
    ds = pydicom.dcmread(path)
    before = ds.pixel_array
    out, counts = redact_dicom_pixels(ds, RedactionConfig(regions=(Box(0, 0, 100, 30),)))
    assert counts == {"frames_total": 30, "frames_redacted": 30, "boxes_redacted": 30, "transfer_syntax_changed": 0}
    after = roundtrip(out).pixel_array
    assert (after[:, :30, :100].astype(int).max(axis=-1) < 24).all()
    assert np.abs(after[:, 40:, 110:].astype(int) - before[:, 40:, 110:].astype(int)).mean() < 2.5


def test_no_decoder_is_a_pixel_decode_error() -> None:
    from pydicom.data import get_testdata_file

    path = get_testdata_file("SC_rgb_jpeg_gdcm.dcm")  # JPEG Lossless SV1: no decoder without plugins
    if path is None:
        pytest.skip("pydicom test file missing")
    ds = pydicom.dcmread(path)
    from pydicom.pixels import get_decoder

    if get_decoder(ds.file_meta.TransferSyntaxUID).is_available:
        pytest.skip("a JPEG Lossless decoder is installed here")
    with pytest.raises(PixelDecodeError, match="no pixel data decoder for JPEG Lossless") as caught:
        redact_dicom_pixels(ds, DETECT)
    assert caught.value.error_kind == "pixel_decode"


def test_size_guard_runs_before_decoding() -> None:
    pixels, _ = us_frames(2, "RGB")
    ds = make_dataset(pixels, "RGB", ExplicitVRLittleEndian)
    ds.NumberOfFrames = 100000
    with pytest.raises(InputTooLargeError, match=r"100000 frames of 240x320x3.*limit for pixel redaction"):
        redact_dicom_pixels(ds, DETECT, max_decoded_bytes=1024**3)


def test_malformed_pixel_module_and_truncated_data_are_pixel_decode_errors() -> None:
    pixels, _ = us_frames(2, "RGB")
    ds = make_dataset(pixels, "RGB", ExplicitVRLittleEndian)
    del ds.Rows
    with pytest.raises(PixelDecodeError, match="image pixel module is incomplete"):
        redact_dicom_pixels(ds, DETECT)
    ds = make_dataset(pixels, "RGB", ExplicitVRLittleEndian)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
    with pytest.raises(PixelDecodeError, match="could not be decoded"):
        redact_dicom_pixels(ds, DETECT)
    ds = make_dataset(pixels, "RGB", ExplicitVRLittleEndian)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    with pytest.raises(PixelDecodeError, match="PALETTE COLOR"):
        redact_dicom_pixels(ds, DETECT)


def test_no_pixel_data_is_a_no_op() -> None:
    ds = Dataset()
    ds.Modality = "SR"
    out, counts = redact_dicom_pixels(ds, DETECT)
    assert out is ds and counts["frames_total"] == 0


def test_deflated_test_file_keeps_its_transfer_syntax() -> None:
    from pydicom.data import get_testdata_file

    path = get_testdata_file("image_dfl.dcm")
    if path is None:
        pytest.skip("pydicom test file missing")
    ds = pydicom.dcmread(path)
    before = ds.pixel_array.copy()
    out, counts = redact_dicom_pixels(ds, RedactionConfig(regions=(Box(10, 20, 50, 30),)))
    assert counts["frames_redacted"] == 1 and counts["transfer_syntax_changed"] == 0
    back = roundtrip(out)
    assert back.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    after = back.pixel_array
    assert (after[20:50, 10:60] == 0).all()
    outside = np.ones(before.shape, bool)
    outside[20:50, 10:60] = False
    np.testing.assert_array_equal(after[outside], before[outside])
