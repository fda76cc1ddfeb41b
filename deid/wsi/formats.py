"""Dead-letter reasons a user can act on, for slides OpenSlide will not read.

`unsupported_reason(path)` names what the file is when OpenSlide does not recognise it (a stripped
TIFF photo, a Vectra QPTIFF, ...) instead of a bare "unsupported". `require_volume(headers)` refuses a
DICOM whole-slide series that holds no VOLUME instance (a lone LABEL or OVERVIEW has no pyramid).
Messages name formats, tags and sizes, never a value read from the input.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

import tifffile

from deid.errors import UnsupportedFormatError
from deid.wsi.mirax import is_mrxs_name

GENERIC = "OpenSlide does not recognise this slide format; convert it to a supported format"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_VOLUME = "VOLUME"


def unsupported_reason(path: str) -> str:
    """Why OpenSlide refused `path`, in words a user can act on (GENERIC when nothing more is known)."""
    if is_mrxs_name(path):
        return (
            "OpenSlide does not read this MIRAX slide: its folder is incomplete or of a MIRAX version it "
            "does not know; copy the slide's complete folder (Slidedat.ini, Index.dat, Data*.dat) beside the .mrxs"
        )
    try:
        with open(path, "rb") as handle:
            if handle.read(4) not in _TIFF_MAGICS:
                return GENERIC
        with tifffile.TiffFile(path) as tiff:
            page: Any = tiff.pages[0]
            description = str(getattr(page, "description", "") or "")
            tiled = bool(page.is_tiled)
            width, height = int(page.imagewidth), int(page.imagelength)
            pages = len(tiff.pages)
    except (tifffile.TiffFileError, ValueError, OSError, struct.error, IndexError, KeyError, MemoryError):
        return GENERIC
    if "PerkinElmer-QPI-ImageDescription" in description:
        return (
            "a PerkinElmer/Akoya Vectra QPTIFF (multiplexed fluorescence), a format OpenSlide does not read; "
            "export it from the vendor software as a tiled pyramidal RGB TIFF, or leave it out of --input"
        )
    if not tiled:
        return (
            f"a TIFF whose first image ({width} x {height} pixels, {pages} page(s)) is stored in strips, not "
            "tiles: a photo or scan, not a whole-slide pyramid. OpenSlide reads tiled pyramidal TIFF; convert "
            "it (for example `vips tiffsave in.tif out.tif --tile --pyramid --compression jpeg`) or leave it out"
        )
    return GENERIC


def require_volume(image_types: Iterable[Iterable[str]]) -> None:
    """Refuse a DICOM whole-slide series none of whose instances is a VOLUME image (ImageType value 3)."""
    seen = [tuple(str(v).strip().upper() for v in values) for values in image_types]
    if any(len(values) >= 3 and values[2] == _VOLUME for values in seen):
        return
    kinds = sorted({values[2] for values in seen if len(values) >= 3 and values[2].isalpha()} - {_VOLUME})
    what = ", ".join(kinds) if kinds else "no recognised ImageType"
    raise UnsupportedFormatError(
        f"the DICOM whole-slide series holds no VOLUME instance (only {what} images), so there is no slide "
        "pyramid to de-identify; put the series' VOLUME instances under --input with it (a label or overview "
        "on its own is dropped, it carries the slide label)"
    )
