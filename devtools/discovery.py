"""Validate requests against the official discovery documents of the APIs the stand-ins imitate.

The documents are the ones google-api-python-client ships (`googleapiclient/discovery_cache/documents/
healthcare.v1.json`, `secretmanager.v1.json`), so tests check our requests against what the real API
publishes, not against our own idea of it. The fake Healthcare server runs every body it receives
through `validate_request`; the fake Secret Manager uses `document`, `methods_of` and
`schema_errors(..., schemas=...)` for its requests and its own responses.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

DEIDENTIFY = "healthcare.projects.locations.datasets.dicomStores.deidentify"
IMPORT = "healthcare.projects.locations.datasets.dicomStores.import"
EXPORT = "healthcare.projects.locations.datasets.dicomStores.export"
CREATE_STORE = "healthcare.projects.locations.datasets.dicomStores.create"


class RequestBodyError(ValueError):
    """A request body does not match the method's request schema in the discovery document."""


@functools.cache
def document(api: str) -> dict[str, Any]:
    """A discovery document shipped inside google-api-python-client, e.g. 'secretmanager.v1'."""
    documents = resources.files("googleapiclient") / "discovery_cache" / "documents" / f"{api}.json"
    loaded: dict[str, Any] = json.loads(documents.read_text(encoding="utf-8"))
    return loaded


def healthcare_v1() -> dict[str, Any]:
    """The healthcare v1 discovery document shipped inside google-api-python-client."""
    return document("healthcare.v1")


def methods_of(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every method of a discovery document by id."""
    return _methods(doc)


def _methods(resource: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for method in resource.get("methods", {}).values():
        found[method["id"]] = method
    for child in resource.get("resources", {}).values():
        found.update(_methods(child))
    return found


@functools.cache
def methods() -> dict[str, dict[str, Any]]:
    """Every method of the document by id, e.g. 'healthcare.projects.locations.datasets.dicomStores.get'."""
    return _methods(healthcare_v1())


def method(method_id: str) -> dict[str, Any]:
    try:
        return methods()[method_id]
    except KeyError:
        raise RequestBodyError(f"{method_id} is not a method of healthcare v1") from None


def validate_path_parameter(method_id: str, name: str, value: str) -> None:
    """Check a path parameter (e.g. sourceStore) against the pattern the document declares."""
    parameter = method(method_id).get("parameters", {}).get(name)
    if parameter is None:
        raise RequestBodyError(f"{method_id} has no parameter {name}")
    pattern = parameter.get("pattern")
    if pattern and not re.fullmatch(pattern, value):
        raise RequestBodyError(f"{name} does not match {pattern}")


def validate_request(method_id: str, body: object) -> None:
    """Raise RequestBodyError when `body` does not fit the request schema of `method_id`."""
    spec = method(method_id)
    request = spec.get("request")
    if request is None:
        if body not in (None, {}):
            raise RequestBodyError(f"{method_id} takes no request body")
        return
    errors = schema_errors({"$ref": request["$ref"]}, body, "body")
    if errors:
        raise RequestBodyError(f"{method_id}: " + "; ".join(errors))


def schema_errors(
    schema: Mapping[str, Any], value: object, where: str, schemas: Mapping[str, Any] | None = None
) -> list[str]:
    """Every mismatch between `value` and a discovery-document schema (unknown fields included).

    `schemas`: the document's "schemas", where $refs resolve (default: the healthcare v1 document's).
    """
    schemas = healthcare_v1()["schemas"] if schemas is None else schemas
    if "$ref" in schema:
        ref = schema["$ref"]
        resolved = schemas.get(ref)
        if resolved is None:
            return [f"{where}: unknown schema {ref}"]
        return schema_errors(resolved, value, where, schemas)
    kind = schema.get("type", "any")
    if kind == "any":
        return []
    if kind == "object":
        return _object_errors(schema, value, where, schemas)
    if kind == "array":
        if not isinstance(value, list):
            return [f"{where}: expected an array, got {type(value).__name__}"]
        items = schema.get("items", {"type": "any"})
        errors: list[str] = []
        for index, item in enumerate(value):
            errors += schema_errors(items, item, f"{where}[{index}]", schemas)
        return errors
    return _scalar_errors(schema, value, where)


def _object_errors(schema: Mapping[str, Any], value: object, where: str, schemas: Mapping[str, Any]) -> list[str]:
    if not isinstance(value, dict):
        return [f"{where}: expected an object, got {type(value).__name__}"]
    properties: Mapping[str, Any] = schema.get("properties", {})
    additional = schema.get("additionalProperties")
    errors: list[str] = []
    for name, item in value.items():
        if name in properties:
            errors += schema_errors(properties[name], item, f"{where}.{name}", schemas)
        elif additional is not None:
            errors += schema_errors(additional, item, f"{where}.{name}", schemas)
        else:
            errors.append(f"{where}: unknown field {name!r}")
    return errors


def _scalar_errors(schema: Mapping[str, Any], value: object, where: str) -> list[str]:
    kind = schema.get("type")
    fmt = schema.get("format", "")
    if kind == "string":
        if not isinstance(value, str):
            return [f"{where}: expected a string, got {type(value).__name__}"]
        if fmt in ("int64", "uint64") and not re.fullmatch(r"-?\d+", value):
            return [f"{where}: expected an {fmt} decimal string"]
        if fmt == "byte" and not re.fullmatch(r"[A-Za-z0-9+/_-]*={0,2}", value):
            return [f"{where}: expected base64 bytes"]
        enum = schema.get("enum")
        if enum is not None and value not in enum:
            return [f"{where}: {value!r} is not one of {', '.join(enum)}"]
        return []
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{where}: expected a boolean, got {type(value).__name__}"]
    if kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{where}: expected an integer, got {type(value).__name__}"]
    if kind == "number":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return [] if ok else [f"{where}: expected a number, got {type(value).__name__}"]
    return [f"{where}: unsupported schema type {kind}"]
