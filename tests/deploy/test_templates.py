"""templates/metadata.json agrees with pipeline.options.DeidOptions, and its regexes mean something.

The parameter list is derived here from DeidOptions' argparse actions, independently of the
generator (scripts/gen_template_metadata.py), and compared in both directions. When a test here
fails after an option was added or changed, run `python scripts/gen_template_metadata.py`.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import re
import subprocess
import sys
from typing import Any

import pytest
from apache_beam.options import pipeline_options as beam_options

from pipeline.options import DeidOptions, parse_bool
from tests.support.env import REPO_ROOT

ROOT = REPO_ROOT
METADATA = ROOT / "templates" / "metadata.json"
GENERATOR = ROOT / "scripts" / "gen_template_metadata.py"

PARAM_TYPES = {
    "TEXT",
    "GCS_READ_FILE",
    "GCS_READ_FOLDER",
    "GCS_WRITE_FILE",
    "GCS_WRITE_FOLDER",
    "BOOLEAN",
    "ENUM",
    "NUMBER",
}
GCS_TYPES = {"GCS_READ_FILE", "GCS_READ_FOLDER", "GCS_WRITE_FILE", "GCS_WRITE_FOLDER"}
# The path options, and the only ones, that get a Cloud Storage paramType.
EXPECTED_GCS = {
    "input": "GCS_READ_FOLDER",
    "output": "GCS_WRITE_FOLDER",
    "linkage_output": "GCS_WRITE_FOLDER",
    "scratch_location": "GCS_WRITE_FOLDER",
    "healthcare_export_output": "GCS_WRITE_FOLDER",
    "deid_key_file": "GCS_READ_FILE",
}

# Values each kind of parameter must accept / reject (written here, not taken from the generator).
GOOD_BY_TYPE = {
    "GCS_READ_FOLDER": ["gs://my-bucket/studies/", "gs://my-bucket/studies/**.dcm", "gs://b.example.org/x"],
    "GCS_WRITE_FOLDER": ["gs://my-bucket/out/", "gs://my_bucket-2/run-1"],
    "GCS_READ_FILE": ["gs://my-bucket/keys/deid.key"],
    "BOOLEAN": ["true", "false"],
}
BAD_BY_TYPE = {
    "GCS_READ_FOLDER": ["/local/dir", "gs://", "s3://bucket/x", "gs://UPPER/x", "gs://b/x\ny"],
    "GCS_WRITE_FOLDER": ["/local/dir", "gs://", "https://storage.googleapis.com/b/x", "gs://a/x\ny"],
    "GCS_READ_FILE": ["/local/key", "gs://my-bucket/keys/", "gs://my-bucket"],
    "BOOLEAN": ["maybe", "", "truee", "yes please"],
    "NUMBER": ["abc", "1.5x", "", "-", "1 000"],
    "ENUM": ["definitely-not-a-choice", ""],
}
GOOD_BY_NAME = {
    "safe_private_tags": ["", "SIEMENS CSA HEADER:0029,08", "SIEMENS CSA HEADER:0029,08, GEMS_IDEN_01:0009,01"],
    "keep": ["", "PatientAge", "PatientAge,0010,0020,(0008,0080)"],
    "remove": ["", "InstitutionName, 0008,1010"],
    "redact_regions": ["", "[[0,0,100,40]]", '{"*": [[0, 0, 10, 10]]}', "gs://my-bucket/regions.json"],
    "healthcare_source_store": ["projects/my-proj/locations/us-central1/datasets/ds/dicomStores/source"],
    "healthcare_destination_store": ["projects/p-1/locations/europe-west4/datasets/d_1/dicomStores/deid"],
    "healthcare_keep_list": ["", "PatientAge", "PatientAge,StudyDate"],
    "healthcare_remove_list": ["", "InstitutionName"],
    "healthcare_api_endpoint": ["https://healthcare.googleapis.com/v1", "http://127.0.0.1:8080/v1"],
    "dicomweb_source": ["https://pacs.example.org/dicom-web", "http://localhost:8042/dicom-web"],
    "dicomweb_destination": ["https://pacs.example.org/dicom-web"],
    "deid_key_secret": [
        "projects/my-proj/secrets/deid-deid-key/versions/1",
        "projects/123456/secrets/k_1/versions/latest",
        "projects/p/locations/europe-west4/secrets/k/versions/12",
    ],
    "secret_manager_endpoint": ["https://secretmanager.googleapis.com/v1", "http://127.0.0.1:9000/v1"],
}
BAD_BY_NAME = {
    "safe_private_tags": ["0029,08", "SIEMENS:29,8", "SIEMENS CSA HEADER"],
    "keep": ["PatientName;DROP", "Patient Name", "0010-0010"],
    "remove": ["Institution Name", "$(whoami)"],
    "redact_regions": ["0,0,10,10", "gs://my-bucket/", "/etc/passwd"],
    "healthcare_source_store": ["my-store", "projects/p/datasets/d/dicomStores/s", "projects/p/locations/l"],
    "healthcare_destination_store": ["projects/p/locations/l/datasets/d/fhirStores/f"],
    "healthcare_keep_list": ["0010,0010", "PatientAge;x"],
    "healthcare_remove_list": ["Institution Name"],
    "healthcare_api_endpoint": ["healthcare.googleapis.com", "ftp://example.org", "https://a b"],
    "dicomweb_source": ["pacs.example.org", "file:///etc/passwd"],
    "dicomweb_destination": ["javascript:alert(1)"],
    "deid_key_secret": ["deid-key", "projects/p/secrets/k", "projects/p/secrets/k/versions/", "gs://b/keys/deid.key"],
    "secret_manager_endpoint": ["secretmanager.googleapis.com", "ftp://example.org"],
}
# Every TEXT parameter without its own entry above must at least reject a control character.
FALLBACK_BAD = ["line\nbreak", "tab\tinside"]


def load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("gen_template_metadata", GENERATOR)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def option_actions() -> dict[str, argparse.Action]:
    """name -> action, straight from DeidOptions (the name is the `--name` Dataflow passes back)."""
    parser = argparse.ArgumentParser(add_help=False)
    DeidOptions._add_argparse_args(parser)
    actions = {}
    for action in parser._actions:
        longs = [opt for opt in action.option_strings if opt.startswith("--")]
        if longs:
            actions[longs[0][2:]] = action
    return actions


def load_metadata() -> dict[str, Any]:
    return json.loads(METADATA.read_text(encoding="utf-8"))


def template_default(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def compare(metadata: dict[str, Any], actions: dict[str, argparse.Action]) -> list[str]:
    """Every difference between the template parameters and the options, in both directions."""
    problems: list[str] = []
    params = {p.get("name"): p for p in metadata.get("parameters", [])}
    if len(params) != len(metadata.get("parameters", [])):
        problems.append("duplicate parameter names")
    for name in sorted(set(actions) - set(params)):
        problems.append(f"option --{name} has no template parameter")
    for name in sorted(set(params) - set(actions)):
        problems.append(f"template parameter {name!r} is not a DeidOptions option")
    for name in sorted(set(params) & set(actions)):
        param, action = params[name], actions[name]
        for key in ("label", "helpText"):
            if not isinstance(param.get(key), str) or not param[key].strip():
                problems.append(f"{name}: {key} missing")
        if " ".join((action.help or "").split()) not in param.get("helpText", ""):
            problems.append(f"{name}: helpText does not carry the option's help")
        if not isinstance(param.get("isOptional"), bool):
            problems.append(f"{name}: isOptional missing")
        elif action.required and param["isOptional"]:
            problems.append(f"{name}: required option marked optional")
        regexes = param.get("regexes")
        if not isinstance(regexes, list) or not regexes:
            problems.append(f"{name}: no regexes")
            regexes = []
        kind = param.get("paramType")
        if kind not in PARAM_TYPES:
            problems.append(f"{name}: unknown paramType {kind!r}")
        if action.choices is not None:
            if kind != "ENUM":
                problems.append(f"{name}: has choices but paramType {kind}")
            values = [o.get("value") for o in param.get("enumOptions", [])]
            if values != [str(c) for c in action.choices]:
                problems.append(f"{name}: enumOptions {values} != choices {list(action.choices)}")
        elif kind == "ENUM" or "enumOptions" in param:
            problems.append(f"{name}: ENUM without choices")
        if (action.type is parse_bool) != (kind == "BOOLEAN"):
            problems.append(f"{name}: BOOLEAN paramType iff type=parse_bool")
        if kind in GCS_TYPES and EXPECTED_GCS.get(name) != kind:
            problems.append(f"{name}: unexpected GCS paramType {kind}")
        if name in EXPECTED_GCS and kind != EXPECTED_GCS[name]:
            problems.append(f"{name}: paramType {kind}, expected {EXPECTED_GCS[name]}")
        if action.default is None:
            if "defaultValue" in param:
                problems.append(f"{name}: defaultValue for an option without default")
        else:
            default = template_default(action.default)
            if default and param.get("defaultValue") != default:
                problems.append(f"{name}: defaultValue {param.get('defaultValue')!r} != {default!r}")
            for regex in regexes:
                if not re.fullmatch(regex, default):
                    problems.append(f"{name}: regex {regex!r} rejects the default {default!r}")
    return problems


def test_committed_metadata_is_what_the_generator_writes():
    generator = load_generator()
    assert METADATA.read_text(encoding="utf-8") == generator.render(generator.build_metadata()), (
        "templates/metadata.json is stale: run `python scripts/gen_template_metadata.py`"
    )


def test_every_option_is_a_parameter_and_every_parameter_an_option():
    assert compare(load_metadata(), option_actions()) == []


def test_parameter_names_are_the_option_dests():
    # Beam stores --name under dest; Flex Templates pass parameters back as --name=value.
    for name, action in option_actions().items():
        assert action.dest == name


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda m: m["parameters"].pop(0), "has no template parameter"),
        (lambda m: m["parameters"].append({**m["parameters"][-1], "name": "no_such_option"}), "not a DeidOptions"),
        (lambda m: m["parameters"][0].update(name="inputs"), "not a DeidOptions"),
        (lambda m: _param(m, "redact_fill")["enumOptions"].pop(), "enumOptions"),
        (lambda m: _param(m, "redact_fill").update(paramType="TEXT"), "has choices"),
        (lambda m: _param(m, "retain_uids").update(paramType="TEXT"), "BOOLEAN"),
        (lambda m: _param(m, "tile_size").update(defaultValue="256"), "defaultValue"),
        (lambda m: _param(m, "tile_size").update(regexes=["^[0-9]{1,2}$"]), "rejects the default"),
        (lambda m: _param(m, "keep").update(paramType="GCS_READ_FOLDER"), "unexpected GCS"),
        (lambda m: _param(m, "output").update(paramType="TEXT"), "expected GCS_WRITE_FOLDER"),
        (lambda m: _param(m, "input").update(helpText="Input."), "helpText"),
        (lambda m: _param(m, "input").pop("regexes"), "no regexes"),
        (lambda m: m["parameters"].append(copy.deepcopy(m["parameters"][0])), "duplicate"),
    ],
)
def test_comparison_catches_drift(mutate, expected):
    metadata = copy.deepcopy(load_metadata())
    mutate(metadata)
    problems = compare(metadata, option_actions())
    assert any(expected in problem for problem in problems), problems


def test_comparison_catches_a_new_option():
    parser = argparse.ArgumentParser(add_help=False)
    DeidOptions._add_argparse_args(parser)
    parser.add_argument("--brand_new_option", default="x", help="added after the metadata was generated")
    actions = option_actions()
    actions["brand_new_option"] = parser._actions[-1]
    assert "option --brand_new_option has no template parameter" in compare(load_metadata(), actions)


# Options that take a number from 0 to 1 (pipeline.options.unit_fraction).
FRACTIONS = ("review_threshold", "review_sample_rate")


def _param(metadata: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in metadata["parameters"] if p["name"] == name)


def _params() -> list[dict[str, Any]]:
    return load_metadata()["parameters"]


@pytest.mark.parametrize("param", _params(), ids=lambda p: p["name"])
def test_regexes_accept_good_values_and_reject_bad_ones(param):
    name, kind = param["name"], param["paramType"]
    regexes = [re.compile(regex) for regex in param["regexes"]]

    def accepted(value: str) -> bool:
        return all(regex.fullmatch(value) for regex in regexes)

    good = list(GOOD_BY_TYPE.get(kind, [])) + GOOD_BY_NAME.get(name, [])
    bad = list(BAD_BY_TYPE.get(kind, [])) + BAD_BY_NAME.get(name, [])
    if kind == "ENUM":
        choices = [o["value"] for o in param["enumOptions"]]
        good += choices
        bad += [choices[0] + "x", choices[0].swapcase() if choices[0].swapcase() not in choices else "?"]
    if kind == "NUMBER" and name in FRACTIONS:  # 0..1: a threshold or a rate
        good += ["0", "1", "0.8", "0.05", "1.0"]
        bad += ["1.5", "2", "-0.1", "512"]
    elif kind == "NUMBER":
        good += ["1", "512", "40000000000"]
    if kind == "TEXT" and name not in BAD_BY_NAME:
        bad += FALLBACK_BAD
    assert bad, f"no bad value to try on {name}"
    for value in good:
        assert accepted(value), f"{name}: {value!r} should be accepted"
    for value in bad:
        assert not accepted(value), f"{name}: {value!r} should be rejected"


@pytest.mark.parametrize("name", sorted(option_actions()))
def test_what_a_regex_accepts_the_option_parses(name):
    action = option_actions()[name]
    param = _param(load_metadata(), name)
    regexes = [re.compile(regex) for regex in param["regexes"]]
    candidates = ["0", "1", "-1", "7", "65536", "true", "false", "yes", "", "x", "off", "none", "1.5"]
    candidates += [str(c) for c in action.choices or ()]
    for value in candidates:
        if not all(regex.fullmatch(value) for regex in regexes):
            continue
        if action.type is not None:
            action.type(value)  # raises if the template let through a value the job refuses
        if action.choices is not None:
            assert value in [str(c) for c in action.choices]
    if name == "tile_size":
        assert not regexes[0].fullmatch("0"), "positive_int options must reject 0"


def test_input_is_optional_and_says_when():
    param = _param(load_metadata(), "input")
    assert param["isOptional"] is True
    assert "healthcare_source_store" in param["helpText"] and "dicomweb_source" in param["helpText"]
    assert _param(load_metadata(), "output")["isOptional"] is False


def test_no_parameter_shadows_a_beam_option():
    beam_names: set[str] = set()

    def walk(cls: type) -> None:
        for sub in cls.__subclasses__():
            if sub.__module__.startswith("apache_beam"):
                parser = beam_options._BeamArgumentParser(add_help=False, conflict_handler="resolve")
                sub._add_argparse_args(parser)
                beam_names.update(o[2:] for a in parser._actions for o in a.option_strings if o[:2] == "--")
            walk(sub)

    walk(beam_options.PipelineOptions)
    assert {"runner", "project", "sdk_container_image", "labels", "temp_location"} <= beam_names
    assert not (set(option_actions()) & beam_names)


def test_generator_check_mode_flags_a_stale_file(tmp_path):
    stale = tmp_path / "metadata.json"
    metadata = load_metadata()
    metadata["parameters"].pop()
    stale.write_text(json.dumps(metadata, indent=2) + "\n")
    cmd = [sys.executable, str(GENERATOR), "--check", "--output", str(stale)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 1 and "stale" in result.stderr
    subprocess.run([sys.executable, str(GENERATOR), "--output", str(stale)], check=True, capture_output=True)
    assert subprocess.run(cmd, capture_output=True, check=False).returncode == 0
    assert stale.read_text() == METADATA.read_text()
