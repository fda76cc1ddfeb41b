"""Request bodies against the official healthcare v1 discovery document (shipped in
google-api-python-client): our bodies pass, bodies with unknown fields, wrong types or values outside
an enum fail."""

from __future__ import annotations

import itertools

import pytest

from deid.cloud.healthcare import HealthcareSettings
from deid.settings import FILTER_PROFILES, TEXT_REDACTION_MODES
from devtools import discovery

STORE = "projects/p/locations/l/datasets/d/dicomStores/"


def test_the_document_is_the_official_one() -> None:
    doc = discovery.healthcare_v1()
    assert doc["name"] == "healthcare" and doc["version"] == "v1"
    assert discovery.method(discovery.DEIDENTIFY)["request"]["$ref"] == "DeidentifyDicomStoreRequest"


@pytest.mark.parametrize(("profile", "mode"), list(itertools.product(FILTER_PROFILES, TEXT_REDACTION_MODES)))
def test_every_profile_and_text_mode_we_send_is_valid(profile: str, mode: str) -> None:
    settings = HealthcareSettings(STORE + "a", STORE + "b", filter_profile=profile, text_redaction_mode=mode)
    discovery.validate_request(discovery.DEIDENTIFY, settings.deidentify_body())


@pytest.mark.parametrize("lists", [{"keep_list": ("PatientID", "00100020")}, {"remove_list": ("PatientName",)}])
def test_keep_and_remove_lists_replace_the_profile(lists: dict[str, tuple[str, ...]]) -> None:
    body = HealthcareSettings(STORE + "a", STORE + "b", **lists).deidentify_body()  # type: ignore[arg-type]
    discovery.validate_request(discovery.DEIDENTIFY, body)
    assert "filterProfile" not in body["config"]["dicom"]


def test_import_export_and_create_bodies_are_valid() -> None:
    discovery.validate_request(discovery.IMPORT, {"gcsSource": {"uri": "gs://b/in/**.dcm"}})
    discovery.validate_request(discovery.EXPORT, {"gcsDestination": {"uriPrefix": "gs://b/out"}})
    discovery.validate_request(discovery.CREATE_STORE, {})


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({"destinationStore": STORE + "b", "destStore": "x"}, "unknown field 'destStore'"),
        ({"config": {"dicom": {"filterProfile": "BASIC"}}}, "'BASIC' is not one of"),
        ({"config": {"image": {"textRedactionMode": "REDACT_EVERYTHING"}}}, "is not one of"),
        ({"config": {"dicom": {"keepList": {"tags": "PatientID"}}}}, "expected an array"),
        ({"config": {"dicom": {"keepList": {"tags": [7]}}}}, "expected a string"),
        ({"config": {"dicom": {"skipIdRedaction": "yes"}}}, "expected a boolean"),
        ({"config": {"dicom": {"filter_profile": "KEEP_ALL_PROFILE"}}}, "unknown field 'filter_profile'"),
        ({"destinationStore": 5}, "expected a string"),
        ([], "expected an object"),
    ],
)
def test_bad_deidentify_bodies_are_rejected(body: object, complaint: str) -> None:
    with pytest.raises(discovery.RequestBodyError, match=complaint):
        discovery.validate_request(discovery.DEIDENTIFY, body)


def test_bad_import_and_export_bodies_are_rejected() -> None:
    with pytest.raises(discovery.RequestBodyError, match="unknown field 'gcs_source'"):
        discovery.validate_request(discovery.IMPORT, {"gcs_source": {"uri": "gs://b/x"}})
    with pytest.raises(discovery.RequestBodyError, match="unknown field 'prefix'"):
        discovery.validate_request(discovery.EXPORT, {"gcsDestination": {"prefix": "gs://b/x"}})


def test_path_parameters_follow_the_documented_pattern() -> None:
    discovery.validate_path_parameter(discovery.DEIDENTIFY, "sourceStore", STORE + "a")
    with pytest.raises(discovery.RequestBodyError, match="does not match"):
        discovery.validate_path_parameter(discovery.DEIDENTIFY, "sourceStore", "projects/p/dicomStores/a")


def test_int64_counters_are_decimal_strings() -> None:
    assert discovery.schema_errors({"$ref": "ProgressCounter"}, {"success": "3"}, "m") == []
    assert discovery.schema_errors({"$ref": "ProgressCounter"}, {"success": 3}, "m")
    assert discovery.schema_errors({"$ref": "ProgressCounter"}, {"success": "three"}, "m")
