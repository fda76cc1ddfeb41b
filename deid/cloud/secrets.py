"""Read the pseudonym key from Secret Manager: one `versions.access` call over the REST API.

`--deid_key_secret projects/P/secrets/S/versions/V` names the secret version. The launcher reads it
once before the run (so a 403 or 404 stops the run at start with one line, exit 2) and every DoFn
reads it again in `setup()` (`transforms.common.load_run_key`), so the key itself never enters the
pickled job graph, the pipeline options or a log: only the version's name travels.

Requests go through google-auth's `AuthorizedSession` over Application Default Credentials (on
Dataflow, the worker service account, which the Terraform lets read only this one secret). The
payload's CRC32C, which Secret Manager returns with every version, is checked. 408/429/5xx and
connection errors are retried with bounded backoff; any other status is final. Messages name the
version, the HTTP status and what to do, never the payload; no request or response is logged.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Callable

import google.auth
import google_crc32c
import requests
from google.auth.exceptions import DefaultCredentialsError
from google.auth.transport.requests import AuthorizedSession

from deid.cloud.retry import Backoff, send_with_retries
from deid.errors import ConfigError

DEFAULT_ENDPOINT = "https://secretmanager.googleapis.com/v1"
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
# The two forms versions.access takes (global and regional secrets); `latest` is an alias.
SECRET_VERSION_RE = re.compile(r"^projects/[^/]+/(locations/[^/]+/)?secrets/[^/]+/versions/[^/]+$")
# Secret Manager refuses payloads above 64 KiB; anything larger is not a Secret Manager answer.
MAX_PAYLOAD_BYTES = 64 * 1024


class SecretAccessError(ConfigError):
    """The key could not be read from Secret Manager. One line; never the payload.

    A ConfigError, so the launcher stops before the run with exit status 2. `status` is the HTTP
    status of the final response (None when no response came back or the payload was unusable).
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    def __reduce__(self) -> tuple[object, ...]:
        return type(self), (str(self), self.status)


def check_secret_version_name(name: str) -> str:
    """`name` stripped, or a one-line ConfigError giving the expected form (never the value)."""
    name = (name or "").strip().strip("/")
    if not SECRET_VERSION_RE.fullmatch(name):
        raise ConfigError(
            "--deid_key_secret must look like projects/P/secrets/S/versions/V (V a number or latest; "
            f"got {len(name.split('/'))} path segments)"
        )
    return name


def default_session() -> requests.Session:
    """google-auth Application Default Credentials with the cloud-platform scope."""
    try:
        credentials, _project = google.auth.default(scopes=list(SCOPES))
    except DefaultCredentialsError:
        raise SecretAccessError(
            "no Google credentials found to read --deid_key_secret; run `gcloud auth application-default "
            "login` or set GOOGLE_APPLICATION_CREDENTIALS"
        ) from None
    return AuthorizedSession(credentials)


def _hint(status: int) -> str:
    if status == 401:
        return (
            "the credentials were rejected (expired or revoked); refresh them or check GOOGLE_APPLICATION_CREDENTIALS"
        )
    if status == 403:
        return (
            "permission denied; the account needs roles/secretmanager.secretAccessor on this secret "
            "(and the Secret Manager API enabled)"
        )
    if status == 404:
        return (
            "not found; check the project, secret and version (a secret made by Terraform has no "
            "version until one is added: see README 'Security model')"
        )
    if status == 400:
        return "refused (a disabled or destroyed version, or a malformed name)"
    return "request failed"


def _status_word(response: requests.Response) -> str:
    try:
        return str(response.json().get("error", {}).get("status") or response.reason or "")
    except ValueError:
        return str(response.reason or "")


def _payload(body: object, what: str) -> bytes:
    """The decoded `payload.data` of an AccessSecretVersionResponse, its CRC32C checked."""
    payload = body.get("payload") if isinstance(body, dict) else None
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, str):
        raise SecretAccessError(f"{what}: the response holds no payload")
    try:
        # JSON bytes fields are base64; accept the URL-safe alphabet too.
        raw = base64.b64decode(data.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise SecretAccessError(f"{what}: the payload is not base64") from None
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise SecretAccessError(f"{what}: the payload is larger than Secret Manager allows")
    expected = payload.get("dataCrc32c") if isinstance(payload, dict) else None
    if expected is not None:
        try:
            wanted = int(str(expected))
        except ValueError:
            raise SecretAccessError(f"{what}: the payload checksum is not a number") from None
        if google_crc32c.value(raw) != wanted:
            raise SecretAccessError(f"{what}: the payload does not match its CRC32C checksum (corrupted in transit)")
    return raw


def access_secret_version(
    name: str,
    endpoint: str = "",
    session: requests.Session | None = None,
    retry: Backoff | None = None,
    timeout_s: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
) -> bytes:
    """The payload of secret version `name` (`versions.access`); SecretAccessError on any failure.

    `endpoint`: base URL of the API v1 ("" for Google's); tests point it at devtools.fake_secretmanager.
    """
    name = check_secret_version_name(name)
    what = f"Secret Manager versions.access on {name}"
    url = f"{(endpoint or DEFAULT_ENDPOINT).rstrip('/')}/{name}:access"
    session = session if session is not None else default_session()
    retry = retry or Backoff(attempts=5, initial_s=0.5, cap_s=8.0)
    response, _ = send_with_retries(
        lambda: session.get(url, timeout=timeout_s),
        retry.delays(),
        lambda seconds, _reason: sleep(seconds),
        refresh_failed=lambda: SecretAccessError(
            f"{what}: the credentials could not be refreshed (expired or revoked); check "
            "GOOGLE_APPLICATION_CREDENTIALS or run `gcloud auth application-default login`"
        ),
        unreachable=lambda kind: SecretAccessError(
            f"{what}: {kind} after {retry.attempts} attempts; check --secret_manager_endpoint and the network"
        ),
    )
    if response.status_code < 400:
        try:
            body = response.json()
        except ValueError:
            raise SecretAccessError(f"{what}: the response is not JSON", response.status_code) from None
        return _payload(body, what)
    status = response.status_code
    raise SecretAccessError(f"{what}: HTTP {status} {_status_word(response)}: {_hint(status)}", status)
