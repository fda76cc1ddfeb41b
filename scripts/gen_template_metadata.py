#!/usr/bin/env python3
"""Generate templates/metadata.json (the Flex Template's parameters) from pipeline.options.DeidOptions.

    python scripts/gen_template_metadata.py          # rewrite templates/metadata.json
    python scripts/gen_template_metadata.py --check  # exit 1 if the committed file is stale

Every option DeidOptions declares becomes one template parameter: its name is the option's dest,
its helpText the option's help, and its paramType, regexes and enumOptions follow from the option's
argparse type and choices (BOOLEAN for parse_bool, NUMBER for the integer types, ENUM for choices).
Only the path options listed in GCS_PATHS get Cloud Storage paramTypes; the other text options get
a regex from TEXT_REGEXES, or, for an option added later and not listed there, one that only rejects
control characters. tests/deploy/test_templates.py regenerates the document and fails on any difference,
so re-running this script is the fix for drift.

Regexes are anchored (^...$) and use only syntax Java and Python read alike, because Dataflow checks
them in Java and the tests check them with Python's re.fullmatch.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline.options import DeidOptions, non_negative_int, parse_bool, positive_int, unit_fraction  # noqa: E402

METADATA_PATH = ROOT / "templates" / "metadata.json"

TEMPLATE_NAME = "deid-pipeline"
TEMPLATE_DESCRIPTION = (
    "De-identifies DICOM studies and whole-slide images (DICOM PS3.15 Basic Profile with its options, "
    "pixel redaction of burned-in text and slide labels) from Cloud Storage, a Cloud Healthcare API "
    "DICOM store or a DICOMweb server, and writes de-identified copies with an audit trail."
)

# A bucket name (3-222 characters, lower case, digits, dots, dashes, underscores) and an optional path.
_BUCKET = r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]"
GCS_PREFIX_REGEX = rf"^gs://{_BUCKET}(/[^\r\n]*)?$"
GCS_OBJECT_REGEX = rf"^gs://{_BUCKET}/[^\r\n]*[^/\r\n]$"

# Path options and their Cloud Storage paramType. Nothing else gets a GCS paramType.
GCS_PATHS: dict[str, tuple[str, str]] = {
    "input": ("GCS_READ_FOLDER", GCS_PREFIX_REGEX),
    "output": ("GCS_WRITE_FOLDER", GCS_PREFIX_REGEX),
    "linkage_output": ("GCS_WRITE_FOLDER", GCS_PREFIX_REGEX),
    "scratch_location": ("GCS_WRITE_FOLDER", GCS_PREFIX_REGEX),
    "healthcare_export_output": ("GCS_WRITE_FOLDER", GCS_PREFIX_REGEX),
    "deid_key_file": ("GCS_READ_FILE", GCS_OBJECT_REGEX),
}

_TAG = r"\(?[0-9A-Fa-f]{4},?[0-9A-Fa-f]{4}\)?"
_KEYWORD = r"[A-Za-z][A-Za-z0-9]*"
_TAG_OR_KEYWORD = rf"({_TAG}|{_KEYWORD})"
_PRIVATE = r"[^:,\r\n]+:[0-9A-Fa-f]{4},[0-9A-Fa-f]{2}"
_STORE = r"projects/[a-z0-9-]+/locations/[a-z0-9-]+/datasets/[A-Za-z0-9_.-]+/dicomStores/[A-Za-z0-9_.-]+"
_SUBSCRIPTION = r"projects/[a-z][a-z0-9.:-]*[a-z0-9]/subscriptions/[A-Za-z][A-Za-z0-9._~%+-]{2,254}"
_URL = r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[^\s]*)?"

# Text options with a known shape. An empty value means "not set" where the option's default is "".
TEXT_REGEXES: dict[str, str] = {
    "safe_private_tags": rf"^({_PRIVATE}( *, *{_PRIVATE})*)?$",
    "keep": rf"^({_TAG_OR_KEYWORD}( *, *{_TAG_OR_KEYWORD})*)?$",
    "remove": rf"^({_TAG_OR_KEYWORD}( *, *{_TAG_OR_KEYWORD})*)?$",
    # Inline JSON (a list or an object) or a gs:// path to a JSON file.
    "redact_regions": rf"^(|[\[{{][\s\S]*[\]}}]|gs://{_BUCKET}/[^\r\n]*[^/\r\n])$",
    "healthcare_source_store": rf"^{_STORE}$",
    "healthcare_destination_store": rf"^{_STORE}$",
    "healthcare_keep_list": rf"^({_KEYWORD}( *, *{_KEYWORD})*)?$",
    "healthcare_remove_list": rf"^({_KEYWORD}( *, *{_KEYWORD})*)?$",
    "healthcare_api_endpoint": rf"^{_URL}$",
    "deid_key_secret": r"^projects/[a-z0-9-]+/(locations/[a-z0-9-]+/)?secrets/[A-Za-z0-9_-]+/versions/([0-9]+|latest)$",
    "secret_manager_endpoint": rf"^{_URL}$",
    "dicomweb_source": rf"^{_URL}$",
    "dicomweb_destination": rf"^{_URL}$",
    "input_subscription": rf"^{_SUBSCRIPTION}(,{_SUBSCRIPTION})*$",
}
# Text options added later and not described above: anything on one line without control characters.
FALLBACK_TEXT_REGEX = r"^[^\x00-\x1f\x7f]*$"

# Options the job cannot run without, although argparse leaves them optional because the pipeline
# itself checks them (pipeline/main.py: "--output is required").
REQUIRED = frozenset({"output"})

# Extra sentences for the template UI, appended to the option's help.
HELP_NOTES: dict[str, str] = {
    "input": "On Dataflow give a gs:// prefix or glob; leave empty when a Healthcare API or DICOMweb source is given.",
    "output": "On Dataflow a gs:// prefix.",
}

# Words whose spelling in labels is not simple capitalisation.
_LABEL_WORDS = {
    "deid": "de-identification",
    "id": "ID",
    "uids": "UIDs",
    "wsi": "WSI",
    "jpeg": "JPEG",
    "qa": "QA",
    "api": "API",
    "dicomweb": "DICOMweb",
    "long": "longitudinal",
    "chars": "characteristics",
}


def label_for(name: str) -> str:
    words = [_LABEL_WORDS.get(word, word) for word in name.split("_")]
    text = " ".join(words)
    return text[0].upper() + text[1:]


def option_actions() -> list[argparse.Action]:
    """The argparse actions DeidOptions declares, in declaration order (help excluded)."""
    parser = argparse.ArgumentParser(add_help=False)
    DeidOptions._add_argparse_args(parser)
    return [action for action in parser._actions if action.option_strings]


def template_value(value: Any) -> str:
    """How a Python default is written as a template parameter value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _number_regex(kind: Callable[..., Any]) -> str:
    if kind is positive_int:
        return r"^[1-9][0-9]*$"
    if kind is non_negative_int:
        return r"^(0|[1-9][0-9]*)$"
    if kind is unit_fraction:
        return r"^(0(\.[0-9]+)?|1(\.0+)?|\.[0-9]+)$"
    if kind is float:
        return r"^-?[0-9]+(\.[0-9]+)?$"
    return r"^-?[0-9]+$"


def option_name(action: argparse.Action) -> str:
    """The name Dataflow passes back as `--name=value`: the option's first long spelling."""
    return next(opt for opt in action.option_strings if opt.startswith("--"))[2:]


def parameter_for(action: argparse.Action) -> dict[str, Any]:
    name = option_name(action)
    help_text = " ".join((action.help or "").split())
    if name in HELP_NOTES:
        help_text = f"{help_text} {HELP_NOTES[name]}".strip()
    param: dict[str, Any] = {
        "name": name,
        "label": label_for(name),
        "helpText": help_text,
        "isOptional": not (action.required or name in REQUIRED),
    }
    if action.choices is not None:
        choices = [str(choice) for choice in action.choices]
        param["paramType"] = "ENUM"
        param["enumOptions"] = [{"value": choice} for choice in choices]
        param["regexes"] = ["^(" + "|".join(re.escape(choice) for choice in choices) + ")$"]
    elif action.type is parse_bool:
        param["paramType"] = "BOOLEAN"
        param["regexes"] = ["^(true|false)$"]
    elif action.type in (positive_int, non_negative_int, unit_fraction, int, float):
        param["paramType"] = "NUMBER"
        param["regexes"] = [_number_regex(action.type)]  # type: ignore[arg-type]
    elif name in GCS_PATHS:
        param["paramType"], regex = GCS_PATHS[name]
        param["regexes"] = [regex]
    else:
        param["paramType"] = "TEXT"
        param["regexes"] = [TEXT_REGEXES.get(name, FALLBACK_TEXT_REGEX)]
    if action.default is not None and action.default != "":
        param["defaultValue"] = template_value(action.default)
    return param


def build_metadata() -> dict[str, Any]:
    return {
        "name": TEMPLATE_NAME,
        "description": TEMPLATE_DESCRIPTION,
        "streaming": False,
        "parameters": [parameter_for(action) for action in option_actions()],
    }


def render(metadata: dict[str, Any]) -> str:
    return json.dumps(metadata, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed file differs")
    parser.add_argument("--output", type=Path, default=METADATA_PATH)
    args = parser.parse_args(argv)
    text = render(build_metadata())
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(
                f"{args.output} is stale: run `python scripts/gen_template_metadata.py` and commit it",
                file=sys.stderr,
            )
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output} ({len(build_metadata()['parameters'])} parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
