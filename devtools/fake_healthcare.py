"""A local stand-in for the slice of the Cloud Healthcare API v1 the pipeline uses.

Run it with `python -m devtools.fake_healthcare --port 0 --store projects/p/locations/l/datasets/d/
dicomStores/s ...`; the first stdout line is `listening on http://127.0.0.1:PORT`. It listens on
127.0.0.1 only and keeps everything in memory.

Surface (all under /v1/): `dicomStores.get` and `.create`; DICOMweb STOW-RS, QIDO-RS (instances) and
WADO-RS (instance) under `{store}/dicomWeb/`; `{store}:deidentify`, `{store}:import` (from the GCS
emulator named by STORAGE_EMULATOR_HOST), `{store}:export` (to it); `operations.get`. Plus an OAuth
token endpoint at `/token` for throwaway service-account credentials, and `/_fake/...` control routes.

Every JSON request body is validated against the official healthcare v1 discovery document
(`devtools.discovery`): unknown fields, wrong types and values outside an enum get HTTP 400, as
they would from the real API. De-identification is done by the project's own DICOM de-identifier
(`deid.dicom.profile`), not by Google's, so outputs differ from the real API's.

Fault injection (POST /_fake/faults, JSON; every field optional, a POST replaces the previous set):
  {"http_errors": [{"status": 429|503|..., "count": N, "match": "substring of METHOD PATH"}],
   "slow_polls": N,            # each operation reports done only on its N+1-th operations.get
   "fail_instances": N,        # deidentify fails the first N instances (sorted by path)
   "revoke_tokens": true,      # tokens issued so far get 401 (a refresh fixes it)
   "reject_tokens": true,      # every bearer token gets 401 (an expired, unrefreshable login)
   "token_endpoint_fails": true,  # /token answers 400 invalid_grant
   "forbidden": true}          # every API call gets 403 PERMISSION_DENIED
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import email.parser
import email.policy
import hashlib
import io
import json
import os
import re
import secrets
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from deid.cloud.healthcare import STORE_RE
from devtools import discovery

_STORE_PATH = r"projects/[^/]+/locations/[^/]+/datasets/[^/]+/dicomStores/[^/:]+"
_OPERATION_RE = re.compile(r"^projects/[^/]+/locations/[^/]+/datasets/[^/]+/operations/[^/]+$")
_META = "type.googleapis.com/google.cloud.healthcare.v1.OperationMetadata"

# (config dict from the deidentify request, Part 10 bytes) -> de-identified Part 10 bytes.
Deidentifier = Callable[[dict[str, Any], bytes], bytes]


@dataclass
class Instance:
    study: str
    series: str
    sop: str
    sop_class: str
    data: bytes


@dataclass
class Operation:
    name: str
    method: str
    created: str
    polls_left: int
    success: int = 0
    failure: int = 0
    error: dict[str, Any] | None = None
    finished: bool = False
    ended: str = ""


@dataclass
class State:
    stores: dict[str, dict[str, Instance]] = field(default_factory=dict)
    operations: dict[str, Operation] = field(default_factory=dict)
    faults: dict[str, Any] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)
    deidentifier_name: str = ""


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ApiError(Exception):
    def __init__(self, code: int, status: str, message: str) -> None:
        super().__init__(message)
        self.code, self.status, self.message = code, status, message


# -- de-identification --------------------------------------------------------------------------


def default_deidentifier(key_secret: bytes) -> tuple[str, Deidentifier]:
    """The project's de-identifier when it is installed; else a labelled minimal stand-in."""
    from deid.keys import DeidKey
    from deid.settings import Limits, ProfileSettings

    key = DeidKey(key_secret)
    try:
        from deid.dicom.profile import deidentify
        from deid.dicom.reader import read_dicom
        from deid.dicom.writer import write_dicom
    except ImportError:
        return "minimal-stand-in", _minimal_deidentifier(key)

    def run(config: dict[str, Any], data: bytes) -> bytes:
        dicom = config.get("dicom", {})
        profile = ProfileSettings(
            keep=tuple(dicom.get("keepList", {}).get("tags", ())),
            remove=tuple(dicom.get("removeList", {}).get("tags", ())),
            retain_uids=bool(dicom.get("skipIdRedaction", False)),
        )
        result = deidentify(read_dicom(data, Limits()), profile, key)
        return bytes(write_dicom(result.dataset))

    return "deid.dicom.profile", run


def _minimal_deidentifier(key: Any) -> Deidentifier:
    def run(config: dict[str, Any], data: bytes) -> bytes:
        import pydicom

        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName"):
            if keyword in ds:
                delattr(ds, keyword)
        ds.remove_private_tags()
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            if keyword in ds:
                setattr(ds, keyword, key.uid(str(getattr(ds, keyword))))
        if getattr(ds, "file_meta", None) is not None and "SOPInstanceUID" in ds:
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=False)
        return out.getvalue()

    return run


def parse_instance(data: bytes) -> Instance:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True)
    try:
        return Instance(
            str(ds.StudyInstanceUID),
            str(ds.SeriesInstanceUID),
            str(ds.SOPInstanceUID),
            str(ds.SOPClassUID),
            data,
        )
    except AttributeError:
        raise ApiError(400, "INVALID_ARGUMENT", "instance lacks a study, series, SOP instance or class UID") from None


# -- the server ---------------------------------------------------------------------------------


class FakeHealthcare:
    """The server's logic, independent of the HTTP plumbing."""

    def __init__(self, deidentifier: tuple[str, Deidentifier], stores: list[str], require_auth: bool = True) -> None:
        self.state = State(deidentifier_name=deidentifier[0])
        self.deidentify_fn = deidentifier[1]
        self.require_auth = require_auth
        for store in stores:
            self.state.stores[store] = {}

    # faults ---------------------------------------------------------------------------------

    def injected_error(self, line: str) -> ApiError | None:
        with self.state.lock:
            for rule in self.state.faults.get("http_errors", []):
                if rule.get("count", 0) > 0 and rule.get("match", "") in line:
                    rule["count"] -= 1
                    code = int(rule.get("status", 503))
                    status = {429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE", 500: "INTERNAL"}.get(code, "UNKNOWN")
                    return ApiError(code, status, f"injected fault {code}")
        return None

    def check_auth(self, header: str | None) -> None:
        faults = self.state.faults
        if faults.get("forbidden"):
            raise ApiError(403, "PERMISSION_DENIED", "Permission denied (injected)")
        if not self.require_auth:
            return
        token = (header or "").removeprefix("Bearer ").strip()
        if faults.get("reject_tokens") or token not in self.state.tokens:
            raise ApiError(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")

    def issue_token(self) -> dict[str, Any]:
        if self.state.faults.get("token_endpoint_fails"):
            raise ApiError(400, "invalid_grant", "Invalid JWT Signature.")
        token = "fake-" + secrets.token_hex(16)
        with self.state.lock:
            self.state.tokens.add(token)
        return {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}

    def set_faults(self, faults: dict[str, Any]) -> None:
        with self.state.lock:
            self.state.faults = faults
            if faults.get("revoke_tokens"):
                self.state.tokens.clear()

    # stores ---------------------------------------------------------------------------------

    def store(self, name: str) -> dict[str, Instance]:
        try:
            return self.state.stores[name]
        except KeyError:
            raise ApiError(404, "NOT_FOUND", f"DICOM store {name} not found") from None

    def create_store(self, parent: str, store_id: str, body: dict[str, Any]) -> dict[str, Any]:
        discovery.validate_request(discovery.CREATE_STORE, body)
        name = f"{parent}/dicomStores/{store_id}"
        if not STORE_RE.fullmatch(name):
            raise ApiError(400, "INVALID_ARGUMENT", "invalid dicomStoreId")
        with self.state.lock:
            if name in self.state.stores:
                raise ApiError(409, "ALREADY_EXISTS", f"DICOM store {name} already exists")
            self.state.stores[name] = {}
        return {"name": name}

    def stow(self, store: str, instances: list[bytes], base_url: str) -> tuple[int, dict[str, Any]]:
        target = self.store(store)
        referenced, failed = [], []
        for data in instances:
            try:
                instance = parse_instance(data)
            except ApiError:
                failed.append({"00081197": {"vr": "US", "Value": [0xC000]}})
                continue
            with self.state.lock:
                path = _instance_path(instance)
                if path in target:
                    failed.append(_sop_ref(instance) | {"00081197": {"vr": "US", "Value": [0x0111]}})
                    continue
                target[path] = instance
            referenced.append(_sop_ref(instance) | {"00081190": {"vr": "UR", "Value": [base_url + path]}})
        body: dict[str, Any] = {}
        if referenced:
            body["00081199"] = {"vr": "SQ", "Value": referenced}
        if failed:
            body["00081198"] = {"vr": "SQ", "Value": failed}
        status = 200 if not failed else (409 if not referenced else 202)
        return status, body

    def qido(self, store: str, query: dict[str, list[str]], study: str | None, series: str | None) -> list[Any]:
        items = sorted(self.store(store).items())
        selected = [
            i for _p, i in items if (study is None or i.study == study) and (series is None or i.series == series)
        ]
        offset = int(query.get("offset", ["0"])[0])
        limit = int(query.get("limit", ["5000"])[0])
        return [
            {
                "0020000D": {"vr": "UI", "Value": [i.study]},
                "0020000E": {"vr": "UI", "Value": [i.series]},
                "00080018": {"vr": "UI", "Value": [i.sop]},
                "00080016": {"vr": "UI", "Value": [i.sop_class]},
            }
            for i in selected[offset : offset + limit]
        ]

    def wado(self, store: str, study: str, series: str, sop: str) -> bytes:
        instance = self.store(store).get(f"/studies/{study}/series/{series}/instances/{sop}")
        if instance is None:
            raise ApiError(404, "NOT_FOUND", "instance not found")
        return instance.data

    # long-running operations ----------------------------------------------------------------

    def _new_operation(self, store: str, method: str) -> Operation:
        dataset = store.split("/dicomStores/")[0]
        name = f"{dataset}/operations/{uuid.uuid4().int % 10**19}"
        operation = Operation(name, method, _now(), int(self.state.faults.get("slow_polls", 0)))
        with self.state.lock:
            self.state.operations[name] = operation
        return operation

    def deidentify(self, source: str, body: dict[str, Any]) -> dict[str, Any]:
        discovery.validate_request(discovery.DEIDENTIFY, body)
        dicom = body.get("config", {}).get("dicom", {})
        if sum(k in dicom for k in ("keepList", "removeList", "filterProfile")) > 1:
            raise ApiError(400, "INVALID_ARGUMENT", "only one of keepList, removeList and filterProfile may be set")
        if "destinationStore" not in body:
            raise ApiError(400, "INVALID_ARGUMENT", "destinationStore is required")
        if "config" in body and "gcsConfigUri" in body:
            raise ApiError(400, "INVALID_ARGUMENT", "only one of config and gcsConfigUri may be set")
        instances = sorted(self.store(source).items())
        destination = self.store(body["destinationStore"])
        operation = self._new_operation(source, "google.cloud.healthcare.v1.dicom.DicomService.DeidentifyDicomStore")
        fail_first = int(self.state.faults.get("fail_instances", 0))
        config = body.get("config", {})
        for index, (_path, instance) in enumerate(instances):
            try:
                if index < fail_first:
                    raise ValueError("injected instance failure")
                out = parse_instance(self.deidentify_fn(config, instance.data))
            except Exception:  # noqa: BLE001 - one instance failing must not stop the operation
                operation.failure += 1
                continue
            with self.state.lock:
                destination[_instance_path(out)] = out
            operation.success += 1
        operation.finished, operation.ended = True, _now()
        return self.operation_json(operation, peek=True)

    def import_gcs(self, store: str, body: dict[str, Any]) -> dict[str, Any]:
        discovery.validate_request(discovery.IMPORT, body)
        uri = body.get("gcsSource", {}).get("uri", "")
        target = self.store(store)
        operation = self._new_operation(store, "google.cloud.healthcare.v1.dicom.DicomService.ImportDicomData")
        for data in _gcs_read_matching(uri):
            try:
                instance = parse_instance(data)
            except ApiError:
                operation.failure += 1
                continue
            with self.state.lock:
                target.setdefault(_instance_path(instance), instance)
            operation.success += 1
        if operation.failure:
            operation.error = {"code": 3, "message": f"{operation.failure} files are not DICOM; see the logs"}
        operation.finished, operation.ended = True, _now()
        return self.operation_json(operation, peek=True)

    def export_gcs(self, store: str, body: dict[str, Any]) -> dict[str, Any]:
        discovery.validate_request(discovery.EXPORT, body)
        prefix = body.get("gcsDestination", {}).get("uriPrefix", "")
        if not prefix.startswith("gs://"):
            raise ApiError(400, "INVALID_ARGUMENT", "gcsDestination.uriPrefix must be a gs:// URI")
        operation = self._new_operation(store, "google.cloud.healthcare.v1.dicom.DicomService.ExportDicomData")
        for path, instance in sorted(self.store(store).items()):
            rel = path.replace("/studies/", "").replace("/series/", "/").replace("/instances/", "/") + ".dcm"
            _gcs_write(prefix.rstrip("/") + "/" + rel, instance.data)
            operation.success += 1
        operation.finished, operation.ended = True, _now()
        return self.operation_json(operation, peek=True)

    def get_operation(self, name: str) -> dict[str, Any]:
        operation = self.state.operations.get(name)
        if operation is None:
            raise ApiError(404, "NOT_FOUND", "operation not found")
        return self.operation_json(operation, peek=False)

    def operation_json(self, operation: Operation, peek: bool) -> dict[str, Any]:
        with self.state.lock:
            if peek:
                done = False
            elif operation.polls_left > 0:
                operation.polls_left -= 1
                done = False
            else:
                done = operation.finished
        total = operation.success + operation.failure
        counter = (
            {"success": str(operation.success), "failure": str(operation.failure)} if done else {"pending": str(total)}
        )
        metadata: dict[str, Any] = {
            "@type": _META,
            "apiMethodName": operation.method,
            "createTime": operation.created,
            "counter": counter,
            "logsUrl": "https://console.cloud.google.com/logs/query?fake-operation="
            + operation.name.rsplit("/", 1)[-1],
        }
        result: dict[str, Any] = {"name": operation.name, "metadata": metadata}
        if done:
            metadata["endTime"] = operation.ended
            result["done"] = True
            if operation.error:
                result["error"] = operation.error
            else:
                result["response"] = {"@type": "type.googleapis.com/google.cloud.healthcare.v1.dicom.DeidentifySummary"}
        return result


def _instance_path(instance: Instance) -> str:
    return f"/studies/{instance.study}/series/{instance.series}/instances/{instance.sop}"


def _sop_ref(instance: Instance) -> dict[str, Any]:
    return {
        "00081150": {"vr": "UI", "Value": [instance.sop_class]},
        "00081155": {"vr": "UI", "Value": [instance.sop]},
    }


def _gcs_client() -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage  # type: ignore[attr-defined]

    if not os.environ.get("STORAGE_EMULATOR_HOST"):
        raise ApiError(400, "FAILED_PRECONDITION", "the fake server has no GCS emulator (STORAGE_EMULATOR_HOST)")
    return storage.Client(project="fake-project", credentials=AnonymousCredentials())


def _split_gs(uri: str) -> tuple[str, str]:
    if not uri.startswith("gs://") or "/" not in uri[5:]:
        raise ApiError(400, "INVALID_ARGUMENT", "expected gs://bucket/object")
    bucket, _, name = uri[5:].partition("/")
    return bucket, name


def _glob_to_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**", index):
            out, index = out + ".*", index + 2
        elif pattern[index] == "*":
            out, index = out + "[^/]*", index + 1
        elif pattern[index] == "?":
            out, index = out + "[^/]", index + 1
        else:
            out, index = out + re.escape(pattern[index]), index + 1
    return re.compile(out + "$")


def _gcs_read_matching(uri: str) -> list[bytes]:
    bucket_name, pattern = _split_gs(uri)
    client = _gcs_client()
    literal = re.split(r"[*?]", pattern, maxsplit=1)[0]
    matcher = _glob_to_regex(pattern)
    blobs = [b for b in client.list_blobs(bucket_name, prefix=literal) if matcher.match(b.name)]
    if not blobs:
        raise ApiError(404, "NOT_FOUND", "no object matches gcsSource.uri")
    return [b.download_as_bytes() for b in sorted(blobs, key=lambda b: b.name)]


def _gcs_write(uri: str, data: bytes) -> None:
    bucket_name, name = _split_gs(uri)
    _gcs_client().bucket(bucket_name).blob(name).upload_from_string(data, content_type="application/dicom")


# -- HTTP plumbing ------------------------------------------------------------------------------


def _multipart_parts(content_type: str, body: bytes) -> list[bytes]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        return [body]
    parts: list[bytes] = []
    for part in message.iter_parts():
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            parts.append(payload)
    return parts


def make_handler(app: FakeHealthcare) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _body(self) -> bytes:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, value: Any, content_type: str = "application/json") -> None:
            self._send(code, json.dumps(value).encode(), content_type)

        def _error(self, error: ApiError) -> None:
            self._json(error.code, {"error": {"code": error.code, "message": error.message, "status": error.status}})

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def _dispatch(self, verb: str) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            raw = self._body()
            record = {"method": verb, "path": url.path, "validated": ""}
            try:
                if url.path == "/token":
                    self._json(200, app.issue_token())
                    return
                if url.path.startswith("/_fake/"):
                    self._control(verb, url.path, raw)
                    return
                with app.state.lock:
                    app.state.requests.append(record)
                injected = app.injected_error(f"{verb} {url.path}")
                if injected:
                    raise injected
                app.check_auth(self.headers.get("Authorization"))
                if not url.path.startswith("/v1/"):
                    raise ApiError(404, "NOT_FOUND", "unknown path")
                self._route(verb, url.path[len("/v1/") :], query, raw, record)
            except discovery.RequestBodyError as exc:
                self._error(ApiError(400, "INVALID_ARGUMENT", str(exc)))
            except ApiError as exc:
                if url.path == "/token":
                    self._json(exc.code, {"error": exc.status, "error_description": exc.message})
                else:
                    self._error(exc)
            except json.JSONDecodeError:
                self._error(ApiError(400, "INVALID_ARGUMENT", "the body is not JSON"))

        def _control(self, verb: str, path: str, raw: bytes) -> None:
            if path == "/_fake/faults" and verb == "POST":
                app.set_faults(json.loads(raw or b"{}"))
                self._json(200, {"ok": True})
            elif path == "/_fake/requests":
                with app.state.lock:
                    self._json(200, list(app.state.requests))
            elif path == "/_fake/info":
                self._json(
                    200,
                    {
                        "deidentifier": app.state.deidentifier_name,
                        "stores": {name: len(items) for name, items in app.state.stores.items()},
                    },
                )
            else:
                raise ApiError(404, "NOT_FOUND", "unknown control route")

        def _route(self, verb: str, path: str, query: dict[str, list[str]], raw: bytes, record: dict[str, Any]) -> None:
            body = json.loads(raw) if raw and verb == "POST" and "dicomWeb" not in path else {}
            if match := re.fullmatch(rf"({_STORE_PATH}):(deidentify|import|export)", path):
                store, action = match.groups()
                record["validated"] = action
                call = {"deidentify": app.deidentify, "import": app.import_gcs, "export": app.export_gcs}[action]
                self._json(200, call(store, body))
            elif match := re.fullmatch(rf"({_STORE_PATH})/dicomWeb/(.*)", path):
                self._dicomweb(verb, match.group(1), match.group(2), query, raw)
            elif verb == "GET" and STORE_RE.fullmatch(path):
                app.store(path)
                self._json(200, {"name": path})
            elif verb == "POST" and (
                match := re.fullmatch(r"(projects/[^/]+/locations/[^/]+/datasets/[^/]+)/dicomStores", path)
            ):
                record["validated"] = "create"
                self._json(200, app.create_store(match.group(1), query.get("dicomStoreId", [""])[0], body))
            elif verb == "GET" and _OPERATION_RE.fullmatch(path):
                self._json(200, app.get_operation(path))
            else:
                raise ApiError(404, "NOT_FOUND", "unknown method")

        def _dicomweb(self, verb: str, store: str, rest: str, query: dict[str, list[str]], raw: bytes) -> None:
            base = f"http://{self.headers.get('Host', '127.0.0.1')}/v1/{store}/dicomWeb"
            if verb == "POST" and re.fullmatch(r"studies(/[^/]+)?", rest):
                parts = _multipart_parts(self.headers.get("Content-Type", ""), raw)
                code, body = app.stow(store, parts, base)
                self._json(code, body, "application/dicom+json")
                return
            if verb == "GET" and (match := re.fullmatch(r"(?:studies/([^/]+)/)?(?:series/([^/]+)/)?instances", rest)):
                self._json(200, app.qido(store, query, match.group(1), match.group(2)), "application/dicom+json")
                return
            if verb == "GET" and (match := re.fullmatch(r"studies/([^/]+)/series/([^/]+)/instances/([^/]+)", rest)):
                data = app.wado(store, *match.groups())
                boundary = hashlib.sha256(data[:4096]).hexdigest()[:32]
                payload = (
                    f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                    + data
                    + f"\r\n--{boundary}--\r\n".encode()
                )
                self._send(200, payload, f'multipart/related; type="application/dicom"; boundary={boundary}')
                return
            raise ApiError(404, "NOT_FOUND", "unsupported DICOMweb path")

    return Handler


def serve(port: int, stores: list[str], key_secret: bytes, require_auth: bool = True) -> ThreadingHTTPServer:
    app = FakeHealthcare(default_deidentifier(key_secret), stores, require_auth)
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(app))
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local fake of the Healthcare API v1 DICOM subset")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--store", action="append", default=[], help="a DICOM store to create at start")
    parser.add_argument("--key_file", default=None, help="de-identification key (default: random)")
    parser.add_argument("--no_auth", action="store_true", help="accept requests without a bearer token")
    args = parser.parse_args(argv)
    for store in args.store:
        if not STORE_RE.fullmatch(store):
            parser.error("--store must be projects/P/locations/L/datasets/D/dicomStores/S")
    secret = Path(args.key_file).read_bytes().strip() if args.key_file else secrets.token_bytes(32)
    server = serve(args.port, args.store, secret, require_auth=not args.no_auth)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
