"""Values hidden inside binary attributes of a de-identified dataset: compressed frames and ICC profiles.

`sanitize_embedded` runs on every instance after the profile and any pixel redaction, whether or
not pixels were redacted (deid.dicom.instance):

* every frame of an encapsulated PixelData of a JPEG (baseline, extended, lossless, retired
  processes), JPEG-LS, JPEG 2000 or HTJ2K transfer syntax goes through the one segment rule of its
  codec (`deid.jpegsafe`, `deid.j2ksafe`): comments, APPn payloads, boxes and bytes after the end
  marker go, the entropy-coded data stays. PixelData is rewritten (one fragment per frame, a new
  Basic Offset Table, no Extended Offset Table) only when a frame changed. A frame that is not a
  well-formed stream of its transfer syntax makes the instance `pixel_decode_error`;
* every ICCProfile (0028,2000), at the top level and in any sequence item (OpticalPathSequence of
  VL Whole Slide Microscopy, and others), is rewritten by `deid.iccsafe` (colour data kept, text
  tags fixed); a profile that cannot be parsed is replaced by a fixed sRGB profile.

Not covered: RLE Lossless segments (they carry no comments), and video (MPEG-2, MPEG-4, HEVC) and
JPEG XL frames, whose user-data and metadata boxes are left as they are; the leak check still
scans every byte of the output.
"""

from __future__ import annotations

from collections.abc import Callable

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import JPEG2000TransferSyntaxes, JPEGLSTransferSyntaxes, JPEGTransferSyntaxes

from deid.errors import PixelDecodeError
from deid.iccsafe import IccStructureError, sanitize_icc, srgb_profile
from deid.j2ksafe import sanitize_j2k
from deid.jpegsafe import sanitize_jpeg

ICC_PROFILE = 0x00282000
_PIXEL_DATA = 0x7FE00010
# JPEG processes 1-14 (most retired) and process 14 SV1: 1.2.840.10008.1.2.4.50 to .66 and .70.
_JPEG = frozenset(JPEGTransferSyntaxes) | {f"1.2.840.10008.1.2.4.{n}" for n in range(50, 67)}
_SANITIZERS: dict[str, Callable[[bytes], bytes]] = {
    **{str(uid): sanitize_jpeg for uid in _JPEG | frozenset(JPEGLSTransferSyntaxes)},
    **{str(uid): sanitize_j2k for uid in JPEG2000TransferSyntaxes},
}


def sanitize_embedded(ds: Dataset) -> dict[str, int]:
    """Clean the frames and ICC profiles of `ds` in place; counts for the audit."""
    return {"frames_sanitized": _sanitize_frames(ds), "icc_profiles_rewritten": _sanitize_profiles(ds)}


def frame_sanitizer(transfer_syntax: str) -> Callable[[bytes], bytes] | None:
    """The segment rule for the frames of `transfer_syntax`; None when it has none here."""
    return _SANITIZERS.get(str(transfer_syntax))


def _sanitize_frames(ds: Dataset) -> int:
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    sanitizer = frame_sanitizer(syntax)
    if sanitizer is None or _PIXEL_DATA not in ds:
        return 0
    element = ds[_PIXEL_DATA]
    if not element.is_undefined_length or not element.value:
        return 0
    try:
        count = int(ds.get("NumberOfFrames", 1) or 1)
        frames = list(generate_frames(element.value, number_of_frames=count))
    except Exception as exc:  # noqa: BLE001 - malformed encapsulation: report the type only
        raise PixelDecodeError(f"encapsulated pixel data is malformed ({type(exc).__name__})") from None
    try:
        cleaned = [sanitizer(bytes(frame)) for frame in frames]
    except ValueError as exc:  # the sanitizers' errors name the structure, never a value
        raise PixelDecodeError(f"an encapsulated frame cannot be sanitized: {exc}") from None
    changed = sum(1 for old, new in zip(frames, cleaned, strict=True) if old not in (new, new + b"\0"))
    if changed:
        for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
            if keyword in ds:
                del ds[keyword]
        total = sum(len(frame) + 16 for frame in cleaned)
        ds[_PIXEL_DATA] = DataElement(
            _PIXEL_DATA, "OB", encapsulate(cleaned, has_bot=total < 2**32 - 1), is_undefined_length=True
        )
    return changed


def _sanitize_profiles(ds: Dataset) -> int:
    rewritten = 0
    for element in ds:
        if element.tag == ICC_PROFILE and element.value:
            element.value = _safe_profile(bytes(element.value))
            element.VR = "OB"
            rewritten += 1
        elif element.VR == "SQ":
            for item in element.value or ():
                rewritten += _sanitize_profiles(item)
    return rewritten


def _safe_profile(data: bytes) -> bytes:
    try:
        return sanitize_icc(data)
    except IccStructureError:
        return srgb_profile()
