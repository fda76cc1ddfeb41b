"""Slide metadata: keep an allow-list of technical fields, drop everything else.

Outputs never copy a description, tag or property from the input: the writers build new ones from
`SlideMetadata`, which holds only the allow-listed technical values (level-0 size, microns per
pixel, objective power, vendor name, ICC colour profile with its text rewritten by deid.iccsafe).
The scrub counts what it left behind so the audit can report `metadata_fields_removed`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from deid.iccsafe import IccStructureError, sanitize_icc

# Properties whose values are copied into the output (after validation as numbers or vendor names).
ALLOWED_PROPERTIES = frozenset(
    {
        "openslide.mpp-x",
        "openslide.mpp-y",
        "openslide.objective-power",
        "openslide.vendor",
        "aperio.AppMag",
        "aperio.MPP",
    }
)
# OpenSlide's own structural properties: derived from geometry, never copied, not counted as removed.
_STRUCTURAL = re.compile(
    r"^openslide\.(level-count|level\[\d+\]\..*|associated\..*|quickhash-1|icc-size|bounds-.*|"
    r"background-color|comment|mpp-.|objective-power|vendor)$"
)
# TIFF tags with free text that vendors and scanners fill with names, dates and hosts.
TIFF_TEXT_TAGS = (
    "ImageDescription",
    "Artist",
    "DateTime",
    "DocumentName",
    "HostComputer",
    "Make",
    "Model",
    "Software",
    "Copyright",
    "PageName",
    "XMP",
)
_VENDORS = frozenset(
    {
        "aperio",
        "hamamatsu",
        "leica",
        "mirax",
        "philips",
        "sakura",
        "trestle",
        "ventana",
        "generic-tiff",
        "dicom",
        "synthetic",
        "zeiss",
    }
)


@dataclass(frozen=True)
class SlideMetadata:
    """The technical fields that survive de-identification.

    `icc_profile` is always rewritten by `deid.iccsafe` (colour data kept, text tags fixed; None
    when it cannot be parsed) and never shown in a repr: Beam logs elements at DEBUG.
    """

    width: int
    height: int
    vendor: str = "generic-tiff"
    mpp_x: float | None = None
    mpp_y: float | None = None
    objective_power: float | None = None
    icc_profile: bytes | None = field(default=None, repr=False)
    fields_removed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "icc_profile", safe_icc(self.icc_profile))

    @property
    def objective_text(self) -> str | None:
        if self.objective_power is None:
            return None
        power = self.objective_power
        return str(int(power)) if power == int(power) else f"{power:g}"


def scrub(
    properties: Mapping[str, str],
    width: int,
    height: int,
    icc_profile: bytes | None = None,
    extra_removed: int = 0,
) -> SlideMetadata:
    """Reduce OpenSlide properties to `SlideMetadata`; count every non-structural field dropped."""
    mpp_x = _positive_float(properties.get("openslide.mpp-x")) or _positive_float(properties.get("aperio.MPP"))
    mpp_y = _positive_float(properties.get("openslide.mpp-y")) or mpp_x
    power = _positive_float(properties.get("openslide.objective-power")) or _positive_float(
        properties.get("aperio.AppMag")
    )
    vendor = properties.get("openslide.vendor", "generic-tiff")
    if vendor not in _VENDORS:
        vendor = "generic-tiff"
    removed = sum(1 for key in properties if key not in ALLOWED_PROPERTIES and not _STRUCTURAL.match(key))
    return SlideMetadata(
        width=width,
        height=height,
        vendor=vendor,
        mpp_x=mpp_x,
        mpp_y=mpp_y,
        objective_power=power,
        icc_profile=icc_profile or None,
        fields_removed=removed + extra_removed,
    )


def safe_icc(profile: bytes | None) -> bytes | None:
    """The profile under the one ICC rule (`deid.iccsafe`); None when absent or unparseable."""
    if not profile:
        return None
    try:
        return sanitize_icc(profile)
    except IccStructureError:
        return None


def _positive_float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if not math.isfinite(number) or number <= 0:
        return None
    return number


def parse_aperio_description(description: str) -> tuple[str, dict[str, str]]:
    """(header, fields) of an Aperio ImageDescription: 'header|Key = value|...'."""
    parts = description.split("|")
    fields: dict[str, str] = {}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    return parts[0], fields


APERIO_LIBRARY = "Aperio Image Library v12.0.0 (de-identified)"


def _aperio_fields(meta: SlideMetadata) -> str:
    fields = []
    if meta.objective_text:
        fields.append(f"AppMag = {meta.objective_text}")
    if meta.mpp_x:
        fields.append(f"MPP = {meta.mpp_x:.6g}")
    return "".join(f"|{field}" for field in fields)


def aperio_level0_description(meta: SlideMetadata, tile: int, quality: int) -> str:
    return f"{APERIO_LIBRARY}\r\n{meta.width}x{meta.height} ({tile}x{tile}) JPEG/RGB Q={quality}{_aperio_fields(meta)}"


def aperio_reduced_description(meta: SlideMetadata, width: int, height: int, tile: int, quality: int) -> str:
    return (
        f"{APERIO_LIBRARY}\r\n{meta.width}x{meta.height} -> {width}x{height} - ({tile}x{tile}) "
        f"JPEG/RGB Q={quality}{_aperio_fields(meta)}"
    )


def aperio_thumbnail_description(meta: SlideMetadata, width: int, height: int) -> str:
    return f"{APERIO_LIBRARY}\r\n{meta.width}x{meta.height} -> {width}x{height} - {_aperio_fields(meta)}"


def aperio_associated_description(name: str, width: int, height: int) -> str:
    return f"{APERIO_LIBRARY}\r\n{name} {width}x{height}"


def resolution_per_cm(mpp: float | None) -> tuple[int, int] | None:
    """TIFF XResolution/YResolution as a rational in pixels per centimetre."""
    if not mpp:
        return None
    return (round(10_000_000 / mpp), 1000)
