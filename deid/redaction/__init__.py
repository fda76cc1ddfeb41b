"""Pixel redaction for WSI tiles, label and macro images and DICOM frames (pure: OpenCV, numpy, tesseract).

`redact_window` is the entry point for tiles (overlapped window in, redacted core out),
`redact_image` for whole images. See `engine`, `detect` (text detection and its limits), `ocr`
and `fill`.
"""

from deid.redaction.detect import DetectParams, detect_text_boxes
from deid.redaction.engine import RedactionConfig, RedactionOutcome, redact_image, redact_window
from deid.redaction.fill import apply_fill
from deid.redaction.ocr import ocr_confirm

__all__ = [
    "DetectParams",
    "RedactionConfig",
    "RedactionOutcome",
    "apply_fill",
    "detect_text_boxes",
    "ocr_confirm",
    "redact_image",
    "redact_window",
]
