"""Pipeline options: the only place the job's parameters are declared.

Option names are snake_case and identical to the Flex Template parameters in
`templates/metadata.json` (tests/deploy/test_templates.py derives one from the other). Every option
takes a value (`--name=value`) because Flex Templates pass all parameters that way; booleans
also accept the bare flag (`--retain_uids`).
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Sequence

from apache_beam.options.pipeline_options import PipelineOptions

from deid.errors import ConfigError
from deid.settings import (
    FILTER_PROFILES,
    LABEL_MODES,
    REDACT_FILLS,
    REDACT_TEXT_MODES,
    REDACT_TEXT_SCOPES,
    TEXT_REDACTION_MODES,
    UNLISTED_TEXT_MODES,
    WSI_OUTPUT_FORMATS,
)
from pipeline.cli import DEFAULT_LOG_LEVEL, LOG_LEVELS, program_name


class OptionValueError(ConfigError, argparse.ArgumentTypeError):
    """A malformed option value. A ConfigError; also an ArgumentTypeError, so argparse reports it
    against the option's name."""


def parse_bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in {"true", "1", "yes", "y", "on"}:
        return True
    if lowered in {"false", "0", "no", "n", "off", ""}:
        return False
    raise OptionValueError(f"expected true or false, got {value!r}")


def _int(value: str, expected: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise OptionValueError(f"expected {expected}, got {value!r}") from None


def positive_int(value: str) -> int:
    number = _int(value, "a positive integer")
    if number <= 0:
        raise OptionValueError(f"expected a positive integer, got {value!r}")
    return number


def non_negative_int(value: str) -> int:
    number = _int(value, "zero or a positive integer")
    if number < 0:
        raise OptionValueError(f"expected zero or a positive integer, got {value!r}")
    return number


def unit_fraction(value: str) -> float:
    """A number from 0 to 1 (a threshold or a rate)."""
    try:
        number = float(value)
    except ValueError:
        raise OptionValueError(f"expected a number from 0 to 1, got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise OptionValueError(f"expected a number from 0 to 1, got {value!r}")
    return number


def _flag(parser: argparse._ActionsContainer, name: str, help_text: str) -> None:
    parser.add_argument(
        f"--{name}", type=parse_bool, nargs="?", const=True, default=False, metavar="true|false", help=help_text
    )


class DeidOptions(PipelineOptions):
    """Options of the de-identification job (`python -m pipeline --help`)."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("de-identification")
        # Inputs and outputs.
        group.add_argument(
            "--input",
            default=None,
            help="Local directory, gs://bucket/prefix/ or glob (** recurses) of DICOM files and slides. "
            "Optional when --healthcare_source_store or --dicomweb_source supplies the studies.",
        )
        group.add_argument(
            "--output",
            default=None,
            help="Local directory or gs:// prefix for dicom/, wsi/, audit/ and dead_letter/.",
        )
        group.add_argument(
            "--deid_key_file",
            default=None,
            help="File holding the secret for keyed pseudonyms (UIDs, IDs, date shifts, file names). "
            "Without it (or --deid_key_secret) a random key is made for the run and results will not "
            "link to other runs.",
        )
        group.add_argument(
            "--deid_key_secret",
            default=None,
            help="Secret Manager version holding that secret, projects/P/secrets/S/versions/V: read by the "
            "launcher and by each worker at start, never logged or put in the job graph. Instead of "
            "--deid_key_file.",
        )
        group.add_argument(
            "--secret_manager_endpoint",
            default="https://secretmanager.googleapis.com/v1",
            help="Base URL of the Secret Manager API v1 (tests point it at a local server).",
        )
        group.add_argument(
            "--linkage_output",
            default=None,
            help="Optional prefix for uid_mapping.csv and patient_id_mapping.csv (id_old,id_new). "
            "The only place original identifiers are written; keep it private.",
        )
        # DICOM PS3.15 Basic Profile options.
        _flag(group, "retain_long_full_dates", "Retain Longitudinal Temporal Information, Full Dates option.")
        _flag(
            group,
            "retain_long_modified_dates",
            "Retain Longitudinal Temporal Information, Modified Dates option: a keyed per-patient date shift.",
        )
        _flag(group, "retain_patient_chars", "Retain Patient Characteristics option (sex, age, size, ...).")
        _flag(group, "retain_device_id", "Retain Device Identity option (serial numbers, station names).")
        _flag(group, "retain_institution_id", "Retain Institution Identity option.")
        _flag(group, "retain_uids", "Retain UIDs option: keep Study/Series/SOP and other UIDs unchanged.")
        _flag(group, "retain_safe_private", "Retain Safe Private option: keep allow-listed private elements.")
        group.add_argument(
            "--safe_private_tags",
            default="",
            help="Comma-separated 'Creator:gggg,ee' pairs added to the built-in safe private allow-list "
            "(used with --retain_safe_private), e.g. 'SIEMENS CSA HEADER:0029,08'.",
        )
        _flag(group, "clean_descriptors", "Clean Descriptors option: keep descriptions with PHI scrubbed.")
        _flag(group, "clean_graphics", "Clean Graphics option: remove overlay planes (60xx) and annotations.")
        group.add_argument(
            "--unlisted_text",
            choices=UNLISTED_TEXT_MODES,
            default="clean",
            help="Free text of standard attributes the Basic Profile table does not list (outside a "
            "short list of technical ones): clean (cut names, IDs, dates), keep verbatim or remove.",
        )
        group.add_argument(
            "--keep",
            default="",
            help="Comma-separated keywords or tags (gggg,eeee) kept unchanged whatever the profile says.",
        )
        group.add_argument(
            "--remove",
            default="",
            help="Comma-separated keywords or tags (gggg,eeee) removed whatever the profile says.",
        )
        # Whole-slide images and pixel redaction.
        group.add_argument(
            "--tile_size", type=positive_int, default=512, help="Tile edge in level-0 pixels (multiple of 16)."
        )
        group.add_argument(
            "--tile_overlap",
            type=non_negative_int,
            default=64,
            help="Pixels of context on each side of a tile used when detecting text.",
        )
        group.add_argument(
            "--redact_regions",
            default="",
            help="JSON list of boxes in level-0 pixels, global [[x,y,w,h],...] or per slide "
            '{"<input sha256>": [[x,y,w,h],...], "*": [...]}; or a path to such a JSON file.',
        )
        group.add_argument(
            "--redact_text",
            choices=REDACT_TEXT_MODES,
            default="off",
            help="Burned-in text: off, detect (OpenCV text-like regions) or ocr (detect, then tesseract).",
        )
        group.add_argument(
            "--redact_fill", choices=REDACT_FILLS, default="black", help="How redacted pixels are filled."
        )
        group.add_argument(
            "--redact_text_scope",
            choices=REDACT_TEXT_SCOPES,
            default="all",
            help="With --redact_text on, which DICOM images are searched for burned-in text: all (every "
            "frame of every image, whatever BurnedInAnnotation or the modality says) or flagged (only "
            "BurnedInAnnotation YES, and US/SC/OT without BurnedInAnnotation NO).",
        )
        group.add_argument(
            "--review_threshold",
            type=unit_fraction,
            default=0.8,
            help="With --redact_text detect|ocr: text candidates scoring at or above it (0..1) are redacted "
            "automatically; an input with any candidate below it is held for human review under "
            "OUTPUT/review/ instead of being published. 0 disables holding.",
        )
        group.add_argument(
            "--review_sample_rate",
            type=unit_fraction,
            default=0.0,
            help="Fraction (0..1) of the inputs that would be published that is held for review too, "
            "chosen by the key (reproducible with the same --deid_key_file).",
        )
        group.add_argument(
            # Not --label: Beam already owns that name (Dataflow job labels).
            "--label_macro",
            choices=LABEL_MODES,
            default="drop",
            help="Slide label and macro images: drop, blank, or redact with the text engine.",
        )
        group.add_argument(
            "--wsi_output_format",
            choices=WSI_OUTPUT_FORMATS,
            default="tiff",
            help="De-identified slide format: tiled pyramidal TIFF, DICOM VL Whole Slide Microscopy, or both.",
        )
        group.add_argument(
            "--jpeg_quality", type=positive_int, default=90, help="JPEG quality (1-100) of re-encoded tiles."
        )
        # Limits against hostile inputs.
        group.add_argument(
            "--max_pixels",
            type=positive_int,
            default=200_000 * 200_000,
            help="Largest declared image (width x height x frames) accepted; larger inputs are dead-lettered.",
        )
        group.add_argument(
            "--max_file_bytes",
            type=positive_int,
            default=64 * 1024**3,
            help="Largest input file accepted, in bytes; larger inputs are dead-lettered.",
        )
        group.add_argument(
            "--scratch_location",
            default=None,
            help="Where tile pixels wait between stages (local directory or gs:// prefix). "
            "Defaults to a worker-local temporary directory, or --temp_location on Dataflow.",
        )
        _flag(group, "qa_report", "Write OUTPUT/qa/index.html with before/after thumbnails and counts.")
        group.add_argument(
            "--log_level",
            type=str.upper,
            choices=LOG_LEVELS,
            default=DEFAULT_LOG_LEVEL,
            help="Console log level of the launcher. WARNING shows warnings and the job's own lines "
            "(progress, summary); INFO or DEBUG add Beam's own messages.",
        )
        # Google Cloud Healthcare API.
        group.add_argument(
            "--healthcare_source_store",
            default=None,
            help="projects/P/locations/L/datasets/D/dicomStores/S: studies to de-identify with the API.",
        )
        group.add_argument(
            "--healthcare_destination_store",
            default=None,
            help="projects/P/locations/L/datasets/D/dicomStores/S: where the API writes de-identified data.",
        )
        group.add_argument(
            "--healthcare_filter_profile",
            choices=FILTER_PROFILES,
            default="DEIDENTIFY_TAG_CONTENTS",
            help="The Healthcare API v1 DicomConfig filterProfile.",
        )
        group.add_argument(
            "--healthcare_text_redaction_mode",
            choices=TEXT_REDACTION_MODES,
            default="REDACT_NO_TEXT",
            help="The Healthcare API v1 ImageConfig textRedactionMode for burned-in text.",
        )
        group.add_argument("--healthcare_keep_list", default="", help="Comma-separated DICOM keywords the API keeps.")
        group.add_argument(
            "--healthcare_remove_list", default="", help="Comma-separated DICOM keywords the API removes."
        )
        group.add_argument(
            "--healthcare_api_endpoint",
            default="https://healthcare.googleapis.com/v1",
            help="Base URL of the Healthcare API v1 (tests point it at a local server).",
        )
        group.add_argument(
            "--healthcare_export_output",
            default=None,
            help="Optional gs:// prefix: export the destination store there when de-identification ends.",
        )
        # DICOMweb servers beyond Google.
        group.add_argument(
            "--dicomweb_source", default=None, help="DICOMweb base URL to read studies from (QIDO/WADO)."
        )
        group.add_argument(
            "--dicomweb_destination",
            default=None,
            help="DICOMweb base URL to store de-identified instances into (STOW-RS).",
        )
        # Event-driven mode (pipeline/events.py, README "Event-driven mode").
        group.add_argument(
            "--input_subscription",
            default=None,
            help="Pub/Sub subscriptions projects/P/subscriptions/S (comma-separated): run as a streaming "
            "job that de-identifies each object a Cloud Storage notification (OBJECT_FINALIZE) names "
            "under --input, and each instance a --healthcare_source_store notification names, into "
            "--healthcare_destination_store or --dicomweb_destination.",
        )
        _flag(
            group,
            "watch",
            "Run as a streaming job that polls --input (local or gs://) every --watch_interval seconds "
            "and de-identifies each new or changed file once it stopped changing.",
        )
        group.add_argument(
            "--watch_interval", type=positive_int, default=10, help="Seconds between two polls of --input (--watch)."
        )
        group.add_argument(
            "--settle_seconds",
            type=positive_int,
            default=30,
            help="Event mode: a file, MIRAX slide or DICOM-WSI series is taken this many seconds after "
            "its last notice or change, so multi-file units wait for all their files.",
        )
        group.add_argument(
            "--window_seconds",
            type=positive_int,
            default=60,
            help="Event mode: audit and dead-letter records are written as new files per window of this many seconds.",
        )


def check_argv(argv: Sequence[str]) -> None:
    """Parse the DeidOptions in `argv` once, raising ConfigError for a malformed value (a bad number,
    boolean or choice, a missing value) instead of argparse's usage message and SystemExit, which
    is what Beam's own parser gives. Other (Beam) arguments are left alone."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    DeidOptions._add_argparse_args(parser)
    try:
        _, rest = parser.parse_known_args(list(argv))
    except argparse.ArgumentError as exc:
        raise ConfigError(str(exc)) from None
    _check_known(rest)


def _beam_parser() -> argparse.ArgumentParser:
    """Every option Beam itself declares (all PipelineOptions subclasses other than ours)."""
    parser = argparse.ArgumentParser(
        add_help=False, allow_abbrev=False, exit_on_error=False, conflict_handler="resolve"
    )
    pending = list(PipelineOptions.__subclasses__())
    seen: set[type] = set()
    while pending:
        cls = pending.pop()
        if cls in seen:
            continue
        seen.add(cls)
        pending += cls.__subclasses__()
        if cls is not DeidOptions:
            cls._add_argparse_args(parser)  # type: ignore[arg-type]  # a plain parser is all Beam uses
    return parser


def _check_known(rest: Sequence[str]) -> None:
    """Refuse what neither our options nor Beam's declare: Beam would log "Discarding unparseable
    args" and run without them (a misspelt --redact-text would silently turn redaction off)."""
    if not rest:
        return
    try:
        _, unknown = _beam_parser().parse_known_args(list(rest))
    except argparse.ArgumentError as exc:
        raise ConfigError(str(exc)) from None
    if not unknown:
        return
    first = next((arg for arg in unknown if arg.startswith("-")), unknown[0])
    if not first.startswith("-"):
        raise ConfigError(f"unexpected argument {first!r}: every option is --name=value")
    name = first.split("=", 1)[0]
    known = [a for a in _all_option_names() if a.startswith("--")]
    close = difflib.get_close_matches(name.replace("-", "_").lstrip("_"), [k[2:] for k in known], n=1)
    hint = f"; did you mean --{close[0]}?" if close else f"; {program_name()} --help lists the options"
    raise ConfigError(f"unknown option {name}{hint}")


def option_names() -> list[str]:
    """The destinations of our own options (`deid_key_file`, `tile_size`, ...), sorted."""
    ours = argparse.ArgumentParser(add_help=False)
    DeidOptions._add_argparse_args(ours)
    return sorted({action.dest for action in ours._actions})


def _all_option_names() -> list[str]:
    ours = argparse.ArgumentParser(add_help=False)
    DeidOptions._add_argparse_args(ours)
    return sorted(set(ours._option_string_actions) | set(_beam_parser()._option_string_actions))
