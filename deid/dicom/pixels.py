"""Redact burned-in annotation in DICOM pixel data, frame by frame, with the shared redaction engine.

Every frame is decoded with pydicom's decoders (native, deflated, RLE Lossless, JPEG baseline via
Pillow, JPEG 2000 via Pillow when present; whatever `pydicom.pixels` offers here), redacted by
`deid.redaction.redact_image` (user regions plus text detection or OCR), and written back:

* native transfer syntaxes (implicit/explicit VR little endian, deflated) stay as they are;
* RLE Lossless: redacted frames are re-encoded with pydicom's RLE encoder, the others keep their
  original bytes (all frames are re-encoded when decoding changed the colour space);
* JPEG Baseline (8-bit): redacted frames are re-encoded with Pillow (quality 95, the same colour
  model and chroma subsampling as the photometric interpretation declares); the other frames keep
  their original compressed bytes, so clean frames suffer no generation loss;
* anything else (JPEG lossless/extended, JPEG-LS, JPEG 2000, big endian): decoded and written as
  Explicit VR Little Endian (`transfer_syntax_changed` = 1; the caller records it in the audit).

Frames of more than 8 bits are redacted on an 8-bit view (min-max scaled per frame) for detection,
and filled in their own depth. Black is the darkest displayable value (the maximum stored value
for MONOCHROME1, the most negative for signed data). YBR colour data that the decoder converts to
RGB is written as RGB when it is rewritten natively.

The dataset is modified in place and returned. SOP Instance UID handling is left to the profile.
PALETTE COLOR frames are searched on the colours the palette shows and filled with the palette's
darkest entry (the frame stays indexed). Not supported (PixelDecodeError): 1-bit and float pixel data, transfer syntaxes
without a decoder here.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import apply_color_lut, get_decoder, get_encoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
)

from deid.errors import InputTooLargeError, PixelDecodeError
from deid.redaction.confidence import Candidate
from deid.redaction.detect import DEFAULT_PARAMS, DetectParams
from deid.redaction.engine import RedactionConfig, RedactionOutcome, redact_image
from deid.redaction.fill import apply_fill
from deid.redaction.geometry import boxes_mask

DEFAULT_MAX_DECODED_BYTES = 4 * 1024**3
JPEG_QUALITY = 95
_NATIVE_KEPT = (ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)
_PIXEL_DATA = 0x7FE00010


@dataclass(frozen=True)
class _Layout:
    rows: int
    columns: int
    frames: int
    samples: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    photometric: str


@dataclass(frozen=True)
class FrameCandidate:
    """A text candidate (or region) of one frame, in the frame's pixels; no text value."""

    frame: int
    candidate: Candidate


def redact_dicom_pixels(
    ds: Dataset,
    config: RedactionConfig,
    *,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
    params: DetectParams = DEFAULT_PARAMS,
) -> tuple[Dataset, dict[str, int]]:
    """Redact every frame of `ds` in place; return it with counts for the audit.

    Counts: frames_total, frames_redacted, boxes_redacted, transfer_syntax_changed (0/1).
    BurnedInAnnotation becomes NO only when text redaction ran over the frames.
    """
    ds, counts, _ = redact_dicom_frames(ds, config, max_decoded_bytes=max_decoded_bytes, params=params)
    return ds, counts


def redact_dicom_frames(
    ds: Dataset,
    config: RedactionConfig,
    *,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
    params: DetectParams = DEFAULT_PARAMS,
    frames: frozenset[int] | None = None,
) -> tuple[Dataset, dict[str, int], tuple[FrameCandidate, ...]]:
    """`redact_dicom_pixels`, also returning every frame's candidates with their scores and status
    (what a reviewer sees). `frames`: redact only these frame indices (a reviewer's box on one
    frame); the others are left as they are."""
    counts = {"frames_total": 0, "frames_redacted": 0, "boxes_redacted": 0, "transfer_syntax_changed": 0}
    found: list[FrameCandidate] = []
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise PixelDecodeError("pixel redaction does not support float pixel data")
        return ds, counts, ()
    layout = _layout(ds, max_decoded_bytes)
    counts["frames_total"] = layout.frames
    if not config.active:
        return ds, counts, ()
    config.check_tools()
    syntax = _transfer_syntax(ds)

    decoder = _decoder(syntax)
    decoded: list[np.ndarray] = []
    redacted: list[bool] = []
    photometric_out = layout.photometric
    options: dict[str, Any] = {}
    if layout.samples > 1 and "PlanarConfiguration" not in ds and syntax.is_compressed:
        # Type 1C but missing in real files (a VL slide-coordinates JPEG, ../shared/data): a
        # compressed frame's codec fixes the sample order, so the value pydicom insists on is moot.
        options["planar_configuration"] = 0
    iterator = decoder.iter_array(ds, as_rgb=True, **options)
    while True:
        try:
            array, overrides = next(iterator)
        except StopIteration:
            break
        except Exception as exc:  # noqa: BLE001 - decoder errors can quote element values: type only
            raise PixelDecodeError(
                f"pixel data could not be decoded ({type(exc).__name__}); the instance cannot be redacted"
            ) from None
        photometric_out = str(overrides.get("photometric_interpretation", layout.photometric))
        index = len(decoded)
        if frames is not None and index not in frames:
            frame, outcome = array, None
        elif photometric_out == "PALETTE COLOR":
            frame, outcome = _redact_palette_frame(ds, array, config, params)
        else:
            frame, outcome = _redact_frame(array, layout, photometric_out, config, params)
        boxes = len(outcome.boxes) if outcome is not None and outcome.changed else 0
        if outcome is not None:
            found += [FrameCandidate(index, c) for c in outcome.candidates]
        decoded.append(frame)
        redacted.append(bool(boxes))
        counts["boxes_redacted"] += boxes
    if len(decoded) != layout.frames:
        raise PixelDecodeError(f"decoded {len(decoded)} frames where NumberOfFrames declares {layout.frames}")
    counts["frames_redacted"] = sum(redacted)

    if options:
        ds.PlanarConfiguration = 0  # the Type 1C value the frames were decoded with (and are written back in)
    if any(redacted):
        changed_syntax = _write(ds, syntax, layout, photometric_out, decoded, redacted)
        counts["transfer_syntax_changed"] = int(changed_syntax)
    if config.text_mode != "off":
        ds.BurnedInAnnotation = "NO"
    return ds, counts, tuple(found)


def _layout(ds: Dataset, max_decoded_bytes: int) -> _Layout:
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits_allocated = int(ds.BitsAllocated)
        bits_stored = int(ds.get("BitsStored", bits_allocated) or bits_allocated)
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        photometric = str(ds.PhotometricInterpretation).strip()
    except (AttributeError, TypeError, ValueError):
        raise PixelDecodeError(
            "the image pixel module is incomplete or malformed (Rows, Columns, BitsAllocated, "
            "PhotometricInterpretation, NumberOfFrames)"
        ) from None
    if rows <= 0 or columns <= 0 or frames <= 0 or samples not in (1, 3):
        raise PixelDecodeError("Rows, Columns, NumberOfFrames or SamplesPerPixel is out of range")
    if bits_allocated not in (8, 16, 32):
        raise PixelDecodeError(f"pixel redaction supports BitsAllocated 8, 16 or 32, not {bits_allocated}")
    if not 1 <= bits_stored <= bits_allocated:
        raise PixelDecodeError("BitsStored is out of range for BitsAllocated")
    decoded = rows * columns * frames * samples * (bits_allocated // 8)
    if decoded > max_decoded_bytes:
        raise InputTooLargeError(
            f"decoded pixel data would take {decoded} bytes ({frames} frames of {rows}x{columns}x{samples}), "
            f"more than the {max_decoded_bytes}-byte limit for pixel redaction"
        )
    return _Layout(rows, columns, frames, samples, bits_allocated, bits_stored, signed, photometric)


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is None:
        raise PixelDecodeError("the file meta information has no TransferSyntaxUID")
    return UID(str(syntax))


def _syntax_name(syntax: UID) -> str:
    return syntax.name if syntax.is_transfer_syntax else "an unknown transfer syntax"


def _decoder(syntax: UID) -> Any:
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise PixelDecodeError(f"no pixel data decoder exists for {_syntax_name(syntax)}") from None
    if not decoder.is_available:
        raise PixelDecodeError(
            f"no pixel data decoder for {_syntax_name(syntax)} is installed here "
            "(pylibjpeg, pillow or gdcm plugins add decoders)"
        )
    return decoder


def _black_value(layout: _Layout, photometric: str, dtype: np.dtype) -> int | float:
    if np.issubdtype(dtype, np.floating):
        return 0.0
    bits = layout.bits_stored
    if photometric == "MONOCHROME1":
        return (1 << (bits - 1)) - 1 if layout.signed else (1 << bits) - 1
    if photometric == "MONOCHROME2" and layout.signed:
        return -(1 << (bits - 1))
    return 0


def _redact_palette_frame(
    ds: Dataset, indices: np.ndarray, config: RedactionConfig, params: DetectParams
) -> tuple[np.ndarray, RedactionOutcome]:
    """PALETTE COLOR: text is searched on the colours the palette shows, and redacted pixels get the
    palette index of its darkest entry, so the frame stays indexed with its own palette (every
    fill is black: blurring or inpainting indices would make colours the palette never meant)."""
    try:
        shown = apply_color_lut(indices, ds)
        entries = apply_color_lut(np.arange(int(indices.max()) + 1, dtype=indices.dtype), ds)
    except Exception as exc:  # noqa: BLE001 - LUT errors can quote element values: type only
        raise PixelDecodeError(
            f"the palette of this PALETTE COLOR image could not be applied ({type(exc).__name__})"
        ) from None
    view = shown if shown.dtype == np.uint8 else _view8(shown)
    outcome = redact_image(np.ascontiguousarray(view), replace(config, fill="black"), params=params)
    if not outcome.changed:
        return indices, outcome
    darkest = int(np.argmin(np.asarray(entries, np.float64).reshape(len(entries), -1).sum(axis=1)))
    mask = boxes_mask(outcome.boxes, indices.shape[0], indices.shape[1])
    out = indices.copy()
    out[mask] = darkest
    return out, outcome


def _view8(frame: np.ndarray) -> np.ndarray:
    """An 8-bit view of a deep frame for detection: min-max scaled (per frame)."""
    low, high = float(frame.min()), float(frame.max())
    if high <= low:
        return np.zeros(frame.shape, np.uint8)
    scaled = (frame.astype(np.float32) - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _redact_frame(
    frame: np.ndarray, layout: _Layout, photometric: str, config: RedactionConfig, params: DetectParams
) -> tuple[np.ndarray, RedactionOutcome]:
    """One frame redacted, and the engine's outcome (unchanged: the frame is untouched)."""
    black = _black_value(layout, photometric, frame.dtype)
    if frame.dtype == np.uint8:
        outcome = redact_image(frame, config, black_value=black, params=params)
        return (outcome.pixels if outcome.changed else frame), outcome
    # Deep frames: find boxes on an 8-bit view, fill in the frame's own depth.
    outcome = redact_image(_view8(frame), replace(config, fill="black"), params=params)
    if not outcome.changed:
        return frame, outcome
    mask = boxes_mask(outcome.boxes, frame.shape[0], frame.shape[1])
    return apply_fill(frame, mask, config.fill, black_value=black), outcome


def _write(
    ds: Dataset,
    syntax: UID,
    layout: _Layout,
    photometric: str,
    frames: list[np.ndarray],
    redacted: list[bool],
) -> bool:
    """Store the frames in `ds`; True when the transfer syntax had to change."""
    converted = photometric != layout.photometric
    if syntax in _NATIVE_KEPT:
        _write_native(ds, layout, photometric, frames)
        return False
    if syntax == RLELossless and _encoder_available(RLELossless):
        originals = _original_frames(ds, layout)
        encoded = [
            _encode_rle(frame, layout, photometric) if (changed or converted) else original
            for frame, changed, original in zip(frames, redacted, originals, strict=True)
        ]
        _write_encapsulated(ds, encoded)
        ds.PhotometricInterpretation = photometric
        return False
    if syntax == JPEGBaseline8Bit and layout.bits_allocated == 8 and _jpeg_model(layout.photometric) is not None:
        originals = _original_frames(ds, layout)
        encoded = [
            _encode_jpeg(frame, layout.photometric) if changed else original
            for frame, changed, original in zip(frames, redacted, originals, strict=True)
        ]
        _write_encapsulated(ds, encoded)
        ds.LossyImageCompression = "01"
        return False
    _write_native(ds, layout, photometric, frames)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return True


def _write_native(ds: Dataset, layout: _Layout, photometric: str, frames: list[np.ndarray]) -> None:
    stacked = np.stack(frames)
    dtype = stacked.dtype.newbyteorder("<")
    data = stacked.astype(dtype, copy=False).tobytes()
    if len(data) % 2:
        data += b"\0"
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in ds:
            del ds[keyword]
    bits = stacked.dtype.itemsize * 8
    ds[_PIXEL_DATA] = DataElement(_PIXEL_DATA, "OW" if bits > 8 else "OB", data)
    ds.BitsAllocated = bits
    ds.PhotometricInterpretation = photometric
    if layout.samples == 3:
        ds.PlanarConfiguration = 0


def _write_encapsulated(ds: Dataset, encoded: list[bytes]) -> None:
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in ds:
            del ds[keyword]
    total = sum(len(f) + 16 for f in encoded)
    data = encapsulate(encoded, has_bot=total < 2**32 - 1)
    ds[_PIXEL_DATA] = DataElement(_PIXEL_DATA, "OB", data, is_undefined_length=True)


def _original_frames(ds: Dataset, layout: _Layout) -> list[bytes]:
    try:
        frames = list(generate_frames(ds.PixelData, number_of_frames=layout.frames))
    except Exception as exc:  # noqa: BLE001 - malformed encapsulation: report the type only
        raise PixelDecodeError(f"encapsulated pixel data is malformed ({type(exc).__name__})") from None
    if len(frames) != layout.frames:
        raise PixelDecodeError("encapsulated pixel data holds a different number of frames than declared")
    return frames


def _encoder_available(syntax: UID) -> bool:
    try:
        return bool(get_encoder(syntax).is_available)
    except NotImplementedError:
        return False


def _encode_rle(frame: np.ndarray, layout: _Layout, photometric: str) -> bytes:
    encoder = get_encoder(RLELossless)
    return bytes(
        encoder.encode(
            np.ascontiguousarray(frame),
            rows=layout.rows,
            columns=layout.columns,
            samples_per_pixel=layout.samples,
            bits_allocated=frame.dtype.itemsize * 8,
            bits_stored=layout.bits_stored,
            pixel_representation=int(layout.signed),
            photometric_interpretation=photometric,
            number_of_frames=1,
            planar_configuration=0,
        )
    )


def _jpeg_model(photometric: str) -> dict[str, Any] | None:
    """Pillow save options that produce a JPEG stream matching the declared photometric."""
    return {
        "MONOCHROME1": {},
        "MONOCHROME2": {},
        "YBR_FULL_422": {"subsampling": 1},
        "YBR_FULL": {"subsampling": 0},
        "RGB": {"subsampling": 0, "keep_rgb": True},
    }.get(photometric)


def _encode_jpeg(frame: np.ndarray, photometric: str) -> bytes:
    options = _jpeg_model(photometric)
    if options is None or frame.dtype != np.uint8:
        raise PixelDecodeError("this JPEG Baseline frame layout cannot be re-encoded")
    image = Image.fromarray(frame[..., 0] if frame.ndim == 3 and frame.shape[2] == 1 else frame)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=JPEG_QUALITY, **options)
    return buffer.getvalue()
