"""A local stand-in for Secret Manager v1 `versions.access`, with an OAuth token endpoint.

    python -m devtools.fake_secretmanager --port 0 --version projects/p/secrets/s/versions/1=PATH ...

The first stdout line is `listening on http://127.0.0.1:PORT`; it listens on 127.0.0.1 only. Each
`--version NAME=PATH` adds a secret version whose payload is read from the file PATH (never from the
command line, where `ps` would show it); `--disabled NAME` adds a disabled one.

Every request under /v1/ is checked against the official secretmanager v1 discovery document that
google-api-python-client ships (`devtools.discovery.document("secretmanager.v1")`): the URL must be a
method's `path` template whose `name` parameter matches the pattern the document declares, the HTTP
verb must be the method's, query parameters must be the document's standard ones, and a GET carries
no body; a mismatch is 400 INVALID_ARGUMENT (no method at all: 404). Only `versions.access` is
implemented (global and regional names); any other method of the document answers 501. Every
response body is checked against the method's response schema (AccessSecretVersionResponse) before
it is sent, so the stand-in cannot drift from what the real API returns.

`latest` resolves to the highest version number of the secret. Responses carry `dataCrc32c` as the
real API does. Google-style errors: 401 UNAUTHENTICATED (no or unknown bearer token), 403
PERMISSION_DENIED, 404 NOT_FOUND, 400 FAILED_PRECONDITION (disabled version).

Faults (POST /_fake/faults, JSON; a POST replaces the previous set):
  {"forbidden": true,                          # every access gets 403 PERMISSION_DENIED
   "http_errors": [{"status": 503, "count": N}],  # the next N accesses get that status
   "corrupt_checksum": true,                   # dataCrc32c no longer matches the payload
   "reject_tokens": true}                      # every bearer token gets 401
GET /_fake/requests lists what was asked ({method, path, status, authorized}), never a payload.

Not reproduced: IAM (beyond the `forbidden` switch), version states other than enabled/disabled,
ETags, replication, CMEK, quotas, the project number the real API puts in the returned name (the
name comes back with the project as asked), and every method other than `versions.access`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import re
import secrets
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import google_crc32c

from devtools import discovery

API = "secretmanager.v1"
ACCESS_IDS = (
    "secretmanager.projects.secrets.versions.access",
    "secretmanager.projects.locations.secrets.versions.access",
)


class ApiError(Exception):
    def __init__(self, code: int, status: str, message: str) -> None:
        super().__init__(message)
        self.code, self.status, self.message = code, status, message


@dataclass
class Version:
    payload: bytes
    enabled: bool = True


@dataclass
class State:
    versions: dict[str, Version] = field(default_factory=dict)
    faults: dict[str, Any] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)


def _template_regex(path: str) -> re.Pattern[str]:
    """A discovery `path` ('v1/{+name}:access') as a regex with one named group per parameter."""
    out, pos = "", 0
    for match in re.finditer(r"\{(\+?)([A-Za-z0-9_]+)\}", path):
        out += re.escape(path[pos : match.start()])
        out += f"(?P<{match.group(2)}>.+?)" if match.group(1) else f"(?P<{match.group(2)}>[^/]+?)"
        pos = match.end()
    return re.compile(out + re.escape(path[pos:]))


def match_method(verb: str, path: str, query: dict[str, list[str]], body: bytes) -> tuple[str, dict[str, str]]:
    """(method id, path parameters) of the document's method this request calls; ApiError otherwise."""
    doc = discovery.document(API)
    candidates: list[tuple[str, dict[str, str], list[str]]] = []
    for method_id, spec in discovery.methods_of(doc).items():
        found = _template_regex(spec["path"]).fullmatch(path)
        if not found:
            continue
        params, problems = found.groupdict(), []
        for name, value in params.items():
            pattern = spec.get("parameters", {}).get(name, {}).get("pattern")
            if pattern and not re.fullmatch(pattern, value):
                problems.append(f"{name} does not match {pattern}")
        if spec["httpMethod"] != verb:
            problems.append(f"{method_id} is {spec['httpMethod']}, not {verb}")
        candidates.append((method_id, params, problems))
    if not candidates:
        raise ApiError(404, "NOT_FOUND", "no method of secretmanager v1 has this path")
    fitting = [c for c in candidates if not c[2]]
    if not fitting:
        raise ApiError(400, "INVALID_ARGUMENT", "; ".join(p for c in candidates for p in c[2]))
    # As Google's router does, the most specific template wins: 'v1/{+name}:access' over 'v1/{+name}'.
    methods = discovery.methods_of(doc)
    fitting.sort(key=lambda c: -len(re.sub(r"\{[^}]*\}", "", methods[c[0]]["path"])))
    method_id, params, _ = fitting[0]
    spec = methods[method_id]
    allowed = set(doc.get("parameters", {})) | {
        n for n, p in spec.get("parameters", {}).items() if p.get("location") == "query"
    }
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise ApiError(400, "INVALID_ARGUMENT", f"unknown query parameter(s) {', '.join(unknown)}")
    if verb == "GET" and body:
        raise ApiError(400, "INVALID_ARGUMENT", f"{method_id} takes no request body")
    return method_id, params


def checked_response(method_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """`body`, after checking it against the method's response schema in the discovery document."""
    doc = discovery.document(API)
    response = discovery.methods_of(doc)[method_id]["response"]
    errors = discovery.schema_errors({"$ref": response["$ref"]}, body, "response", schemas=doc["schemas"])
    if errors:
        raise RuntimeError("the stand-in built a response the API would not send: " + "; ".join(errors))
    return body


class FakeSecretManager:
    def __init__(self, versions: dict[str, Version]) -> None:
        self.state = State(versions=dict(versions))

    def issue_token(self) -> dict[str, Any]:
        token = "fake-sm-" + secrets.token_hex(16)
        with self.state.lock:
            self.state.tokens.add(token)
        return {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}

    def check_auth(self, header: str | None) -> bool:
        token = (header or "").removeprefix("Bearer ").strip()
        with self.state.lock:
            known = token in self.state.tokens
        if self.state.faults.get("reject_tokens") or not known:
            raise ApiError(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        return True

    def injected_error(self) -> ApiError | None:
        with self.state.lock:
            for rule in self.state.faults.get("http_errors", []):
                if rule.get("count", 0) > 0:
                    rule["count"] -= 1
                    code = int(rule.get("status", 503))
                    word = {429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE", 500: "INTERNAL"}.get(code, "UNKNOWN")
                    return ApiError(code, word, f"injected fault {code}")
        return None

    def resolve(self, name: str) -> str:
        if not name.endswith("/versions/latest"):
            return name
        secret = name.removesuffix("/latest")
        numbers = [int(n.rsplit("/", 1)[1]) for n in self.state.versions if n.startswith(secret + "/")]
        if not numbers:
            parent = secret.removesuffix("/versions")
            raise ApiError(404, "NOT_FOUND", f"Secret [{parent}] not found or has no versions.")
        return f"{secret}/{max(numbers)}"

    def access(self, name: str) -> dict[str, Any]:
        if self.state.faults.get("forbidden"):
            raise ApiError(
                403,
                "PERMISSION_DENIED",
                f"Permission 'secretmanager.versions.access' denied for resource '{name}' (or it may not exist).",
            )
        resolved = self.resolve(name)
        version = self.state.versions.get(resolved)
        if version is None:
            raise ApiError(404, "NOT_FOUND", f"Secret Version [{resolved}] not found.")
        if not version.enabled:
            raise ApiError(400, "FAILED_PRECONDITION", f"Secret Version [{resolved}] is in DISABLED state.")
        crc = google_crc32c.value(version.payload)
        if self.state.faults.get("corrupt_checksum"):
            crc ^= 1
        return {
            "name": resolved,
            "payload": {"data": base64.b64encode(version.payload).decode("ascii"), "dataCrc32c": str(crc)},
        }


def make_handler(app: FakeSecretManager) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _json(self, code: int, value: Any) -> None:
            body = json.dumps(value).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def _dispatch(self, verb: str) -> None:
            url = urlsplit(self.path)
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if url.path == "/token":
                self._json(200, app.issue_token())
                return
            if url.path == "/_fake/faults" and verb == "POST":
                with app.state.lock:
                    app.state.faults = json.loads(raw or b"{}")
                self._json(200, {"ok": True})
                return
            if url.path == "/_fake/requests":
                with app.state.lock:
                    self._json(200, list(app.state.requests))
                return
            record: dict[str, Any] = {"method": verb, "path": url.path, "status": 0, "authorized": False}
            with app.state.lock:
                app.state.requests.append(record)
            try:
                if not url.path.startswith("/v1/"):
                    raise ApiError(404, "NOT_FOUND", "unknown path")
                method_id, params = match_method(verb, url.path[1:], parse_qs(url.query), raw)
                record["authorized"] = app.check_auth(self.headers.get("Authorization"))
                injected = app.injected_error()
                if injected:
                    raise injected
                if method_id not in ACCESS_IDS:
                    raise ApiError(501, "UNIMPLEMENTED", f"{method_id} is not implemented by the stand-in")
                body = checked_response(method_id, app.access(params["name"]))
                record["status"] = 200
                self._json(200, body)
            except ApiError as exc:
                record["status"] = exc.code
                self._json(exc.code, {"error": {"code": exc.code, "message": exc.message, "status": exc.status}})

    return Handler


def serve(port: int, versions: dict[str, Version]) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(FakeSecretManager(versions)))
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local fake of Secret Manager v1 versions.access")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--version", action="append", default=[], help="NAME=PATH: a version and its payload file")
    parser.add_argument("--disabled", action="append", default=[], help="NAME of a disabled version")
    args = parser.parse_args(argv)
    versions: dict[str, Version] = {}
    for item in args.version:
        name, sep, path = item.partition("=")
        if not sep:
            parser.error("--version takes NAME=PATH")
        versions[name] = Version(Path(path).read_bytes())
    for name in args.disabled:
        versions[name] = Version(b"disabled", enabled=False)
    server = serve(args.port, versions)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
