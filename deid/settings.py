"""Frozen, picklable settings that the launcher builds from options and DoFns receive in `__init__`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from deid.errors import ConfigError

REDACT_TEXT_MODES = ("off", "detect", "ocr")
REDACT_FILLS = ("black", "blur", "inpaint")
# Which DICOM image instances --redact_text searches: every one, or only those flagged as possibly
# carrying burned-in text (BurnedInAnnotation YES, or US/SC/OT without BurnedInAnnotation NO).
REDACT_TEXT_SCOPES = ("all", "flagged")
LABEL_MODES = ("drop", "blank", "redact")
WSI_OUTPUT_FORMATS = ("tiff", "dicom", "both")
# Healthcare API v1 DicomConfig.filterProfile and ImageConfig.textRedactionMode enums.
FILTER_PROFILES = (
    "DEIDENTIFY_TAG_CONTENTS",
    "MINIMAL_KEEP_LIST_PROFILE",
    "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE",
    "KEEP_ALL_PROFILE",
)
TEXT_REDACTION_MODES = ("REDACT_NO_TEXT", "REDACT_ALL_TEXT", "REDACT_SENSITIVE_TEXT")
# --unlisted_text: free text of standard attributes Table E.1-1 does not list (deid/dicom/unlisted.py).
UNLISTED_TEXT_MODES = ("keep", "clean", "remove")

_TAG_RE = re.compile(r"^\(?([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})\)?$")


def is_glob(location: str) -> bool:
    """True for an --input pattern (`*`, `?`, `[`), False for a directory or prefix."""
    return any(ch in location for ch in "*?[")


def split_list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def split_tag_list(value: str) -> tuple[str, ...]:
    """Split a --keep/--remove list where tags themselves contain a comma: '0010,0010,PatientName'."""
    items: list[str] = []
    parts = [p.strip() for p in value.split(",") if p.strip()]
    index = 0
    while index < len(parts):
        part = parts[index]
        if (
            re.fullmatch(r"\(?[0-9A-Fa-f]{4}", part)
            and index + 1 < len(parts)
            and re.fullmatch(r"[0-9A-Fa-f]{4}\)?", parts[index + 1])
        ):
            items.append(f"{part},{parts[index + 1]}")
            index += 2
        else:
            items.append(part)
            index += 1
    return tuple(items)


def parse_tag(text: str) -> int | None:
    """'(0010,0010)' or '00100010' or '0010,0010' to an int tag; None for keywords."""
    compact = text.replace(" ", "")
    match = _TAG_RE.match(compact) or re.fullmatch(r"([0-9A-Fa-f]{4})([0-9A-Fa-f]{4})", compact)
    if not match:
        return None
    return (int(match.group(1), 16) << 16) | int(match.group(2), 16)


@dataclass(frozen=True)
class ProfileSettings:
    """DICOM PS3.15 Basic Profile and the options applied on top of it."""

    retain_long_full_dates: bool = False
    retain_long_modified_dates: bool = False
    retain_patient_chars: bool = False
    retain_device_id: bool = False
    retain_institution_id: bool = False
    retain_uids: bool = False
    retain_safe_private: bool = False
    clean_descriptors: bool = False
    clean_graphics: bool = False
    safe_private_tags: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    # Pixel redaction configured for DICOM frames (regions or text); without it burned-in
    # annotation sends the instance to dead letter.
    pixel_redaction: bool = False
    # Free text of standard attributes the table does not list: keep, clean or remove.
    unlisted_text: str = "clean"

    def __post_init__(self) -> None:
        if self.retain_long_full_dates and self.retain_long_modified_dates:
            raise ConfigError("--retain_long_full_dates and --retain_long_modified_dates exclude each other; pick one")
        if self.unlisted_text not in UNLISTED_TEXT_MODES:
            raise ConfigError(f"--unlisted_text must be one of {', '.join(UNLISTED_TEXT_MODES)}")


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in level-0 pixels."""

    x: int
    y: int
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0 or self.x < 0 or self.y < 0:
            raise ConfigError(f"redaction box {self.as_list()} must have x, y >= 0 and width, height > 0")

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.width, self.height]


@dataclass(frozen=True)
class RedactRegions:
    """User boxes: applied to every slide (`everywhere`) and per input sha256 (`by_input`)."""

    everywhere: tuple[Box, ...] = ()
    by_input: tuple[tuple[str, tuple[Box, ...]], ...] = ()

    def for_input(self, input_sha256: str) -> tuple[Box, ...]:
        extra = dict(self.by_input).get(input_sha256, ())
        return self.everywhere + extra

    @classmethod
    def parse(cls, text: str) -> RedactRegions:
        text = text.strip()
        if not text:
            return cls()
        if not text.startswith(("[", "{")):
            try:
                text = Path(text).read_text()
            except OSError as exc:
                raise ConfigError(f"--redact_regions is neither JSON nor a readable file: {exc.strerror}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--redact_regions is not valid JSON: {exc.msg} at position {exc.pos}") from None

        def boxes(items: object) -> tuple[Box, ...]:
            if not isinstance(items, list) or not all(
                isinstance(b, list) and len(b) == 4 and all(isinstance(v, int) for v in b) for b in items
            ):
                raise ConfigError("--redact_regions boxes must be lists of four integers [x, y, width, height]")
            return tuple(Box(*b) for b in items)

        if isinstance(data, list):
            return cls(everywhere=boxes(data))
        if isinstance(data, dict):
            everywhere = boxes(data.get("*", []))
            by_input = tuple(sorted((k.lower(), boxes(v)) for k, v in data.items() if k != "*"))
            return cls(everywhere=everywhere, by_input=by_input)
        raise ConfigError("--redact_regions must be a JSON list of boxes or an object keyed by input sha256")


@dataclass(frozen=True)
class RedactionSettings:
    """Burned-in pixel redaction, one configuration for DICOM frames, slide tiles and label/macro
    images: the text mode (--redact_text), the fill (--redact_fill) and user boxes (--redact_regions)."""

    text: str = "off"
    fill: str = "black"
    regions: RedactRegions = field(default_factory=RedactRegions)
    scope: str = "all"
    # --review_threshold: text candidates scoring below it hold their input for review (0: no review).
    review_threshold: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.review_threshold <= 1.0:
            raise ConfigError("--review_threshold must be between 0 and 1")
        for name, value, allowed in (
            ("--redact_text", self.text, REDACT_TEXT_MODES),
            ("--redact_fill", self.fill, REDACT_FILLS),
            ("--redact_text_scope", self.scope, REDACT_TEXT_SCOPES),
        ):
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}")

    def searches_every_image(self) -> bool:
        """Whether every DICOM image is searched for text, whatever its flag or modality."""
        return self.text != "off" and self.scope == "all"

    @property
    def configured(self) -> bool:
        """Whether any pixel may be redacted in some input (boxes for any input, or text search)."""
        return bool(self.regions.everywhere or self.regions.by_input) or self.text != "off"


@dataclass(frozen=True)
class WsiSettings:
    tile_size: int = 512
    tile_overlap: int = 64
    label: str = "drop"
    output_format: str = "tiff"
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        if self.tile_size % 16:
            raise ConfigError(f"--tile_size {self.tile_size} must be a multiple of 16 (TIFF tile rule)")
        if self.tile_overlap * 2 >= self.tile_size:
            raise ConfigError("--tile_overlap must be less than half of --tile_size")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError("--jpeg_quality must be between 1 and 100")
        for name, value, allowed in (
            ("--label", self.label, LABEL_MODES),
            ("--wsi_output_format", self.output_format, WSI_OUTPUT_FORMATS),
        ):
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}")


@dataclass(frozen=True)
class Limits:
    max_pixels: int = 200_000 * 200_000
    max_file_bytes: int = 64 * 1024**3


@dataclass(frozen=True)
class RunSettings:
    """Everything a worker needs, built once by the launcher.

    The run's secret travels as `key_file` (a path workers read in setup(), so a key from
    --deid_key_file never enters the pickled job graph), as `key_secret` (a Secret Manager version
    name workers read in setup(), `deid.cloud.secrets`; `secret_endpoint` "" is Google's) or, for a
    key generated for this run only, as `key_token`.
    """

    output: str
    key_token: str = field(default="", repr=False)
    profile: ProfileSettings = field(default_factory=ProfileSettings)
    wsi: WsiSettings = field(default_factory=WsiSettings)
    redaction: RedactionSettings = field(default_factory=RedactionSettings)
    limits: Limits = field(default_factory=Limits)
    linkage: bool = False
    scratch_location: str | None = None
    key_file: str | None = None
    # The --input directory (None for a glob): path components below it are harvested for the leak check.
    input_root: str | None = None
    # --qa_report: branches emit QaEntry thumbnails to the "qa" output.
    qa_report: bool = False
    # Names this run's record files and manifest (UTC start time and a random suffix; no input value).
    run_id: str = "run"
    key_secret: str | None = None
    secret_endpoint: str = ""
    # A local run's progress directory (`transforms.progress`); None: no progress taps in the graph.
    progress_dir: str | None = None
    # --review_sample_rate: a keyed fraction of inputs that would be published is held for review.
    review_sample_rate: float = 0.0

    def __post_init__(self) -> None:
        if not self.key_token and not self.key_file and not self.key_secret:
            raise ConfigError("RunSettings needs key_file, key_secret or key_token")
        if self.key_file and self.key_secret:
            raise ConfigError("--deid_key_file and --deid_key_secret exclude each other; give one")
        if not 0.0 <= self.review_sample_rate <= 1.0:
            raise ConfigError("--review_sample_rate must be between 0 and 1")
