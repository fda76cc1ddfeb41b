"""A small client for the Cloud Healthcare API v1 DICOM surface the pipeline uses.

What it calls: `dicomStores.get` (pre-flight), DICOMweb STOW-RS under `.../dicomWeb/` (through
dicomweb-client), `dicomStores.import`, `dicomStores.deidentify`, `dicomStores.export` and
`operations.get`. Requests go through a `requests.Session`; in production that is google-auth's
`AuthorizedSession` over Application Default Credentials, in tests a session against the local fake
server (`devtools.fake_healthcare`, a test double) whose token endpoint the throwaway credentials point at.

Retries: 408/429/5xx and connection errors are retried with bounded exponential backoff and full
jitter (honouring Retry-After); any other 4xx is final and becomes a one-line `HealthcareApiError`.
Messages name resource names, HTTP statuses and counts, never a value read from an instance.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import google.auth
import requests
from google.auth.exceptions import DefaultCredentialsError
from google.auth.transport.requests import AuthorizedSession

from deid.cloud.dicomweb import make_client, store_datasets
from deid.cloud.retry import Backoff, send_with_retries
from deid.errors import ConfigError, DeidError
from deid.settings import FILTER_PROFILES, TEXT_REDACTION_MODES, split_list

_LOG = logging.getLogger("deid.cloud.healthcare")

DEFAULT_ENDPOINT = "https://healthcare.googleapis.com/v1"
SCOPES = ("https://www.googleapis.com/auth/cloud-healthcare",)
STORE_RE = re.compile(r"^projects/[^/]+/locations/[^/]+/datasets/[^/]+/dicomStores/[^/]+$")
_STORE_PARTS_RE = re.compile(
    r"^projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/datasets/(?P<dataset>[^/]+)/"
    r"dicomStores/(?P<store>[^/]+)$"
)


class HealthcareApiError(DeidError):
    """The Healthcare API refused a request or an operation failed. One line, no instance values.

    `status` is the HTTP status of the final response (None for connection failures, credentials
    that could not be refreshed and failed operations); decide on it, not on the message text.
    """

    error_kind = "healthcare_api"

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (str(self), self.status)


def check_store_name(option: str, name: str) -> str:
    """Return `name` or raise a one-line ConfigError naming the option and the expected form."""
    name = name.strip().strip("/")
    if name.startswith(("https://", "http://")):
        name = re.sub(r"^https?://[^/]+/v1(beta1)?/", "", name)
    if not STORE_RE.fullmatch(name):
        raise ConfigError(
            f"{option} must look like projects/P/locations/L/datasets/D/dicomStores/S "
            f"(got {len(name.split('/'))} path segments)"
        )
    return name


def same_location(first: str, second: str) -> bool:
    a, b = _STORE_PARTS_RE.fullmatch(first), _STORE_PARTS_RE.fullmatch(second)
    return bool(a and b and a["project"] == b["project"] and a["location"] == b["location"])


@dataclass(frozen=True)
class HealthcareSettings:
    """The Healthcare API branch's options, frozen and picklable (built by the launcher).

    `source_store` holds the studies to de-identify (inputs given with --input are stored there
    first); the API writes the result to `destination_store`. Exactly one of `keep_list`,
    `remove_list` and `filter_profile` reaches the API: DicomConfig's tag filter is a oneof.
    """

    source_store: str
    destination_store: str
    filter_profile: str = "DEIDENTIFY_TAG_CONTENTS"
    text_redaction_mode: str = "REDACT_NO_TEXT"
    keep_list: tuple[str, ...] = ()
    remove_list: tuple[str, ...] = ()
    api_endpoint: str = DEFAULT_ENDPOINT
    export_output: str | None = None
    # Give up on one long-running operation after this long.
    operation_timeout_s: float = 24 * 3600.0
    # operations.get polling: first wait and the cap of the exponential backoff (with jitter).
    poll: Backoff = field(default_factory=lambda: Backoff(attempts=1_000_000, initial_s=2.0, cap_s=60.0))
    # Retries of a single HTTP request on 408/429/5xx.
    retry: Backoff = field(default_factory=Backoff)

    def __post_init__(self) -> None:
        object.__setattr__(self, "source_store", check_store_name("--healthcare_source_store", self.source_store))
        object.__setattr__(
            self,
            "destination_store",
            check_store_name("--healthcare_destination_store", self.destination_store),
        )
        if self.source_store == self.destination_store:
            raise ConfigError("--healthcare_destination_store must differ from --healthcare_source_store")
        if not same_location(self.source_store, self.destination_store):
            raise ConfigError(
                "--healthcare_source_store and --healthcare_destination_store must be in the same project "
                "and location (the API does not de-identify across locations)"
            )
        if self.filter_profile not in FILTER_PROFILES:
            raise ConfigError(f"--healthcare_filter_profile must be one of {', '.join(FILTER_PROFILES)}")
        if self.text_redaction_mode not in TEXT_REDACTION_MODES:
            raise ConfigError(f"--healthcare_text_redaction_mode must be one of {', '.join(TEXT_REDACTION_MODES)}")
        if self.keep_list and self.remove_list:
            raise ConfigError(
                "--healthcare_keep_list and --healthcare_remove_list exclude each other (the API takes one)"
            )
        if not self.api_endpoint.startswith(("https://", "http://")):
            raise ConfigError("--healthcare_api_endpoint must be an http(s) URL")
        object.__setattr__(self, "api_endpoint", self.api_endpoint.rstrip("/"))
        if self.export_output and not self.export_output.startswith("gs://"):
            raise ConfigError("--healthcare_export_output must be a gs:// prefix")

    @classmethod
    def from_options(cls, options: Any) -> HealthcareSettings | None:
        """From DeidOptions (duck-typed, so deid/ stays free of Beam); None without a source store."""
        source = getattr(options, "healthcare_source_store", None)
        destination = getattr(options, "healthcare_destination_store", None)
        if not source and not destination:
            return None
        if not source or not destination:
            raise ConfigError("--healthcare_source_store and --healthcare_destination_store are needed together")
        return cls(
            source_store=source,
            destination_store=destination,
            filter_profile=options.healthcare_filter_profile,
            text_redaction_mode=options.healthcare_text_redaction_mode,
            keep_list=split_list(options.healthcare_keep_list or ""),
            remove_list=split_list(options.healthcare_remove_list or ""),
            api_endpoint=options.healthcare_api_endpoint or DEFAULT_ENDPOINT,
            export_output=getattr(options, "healthcare_export_output", None) or None,
        )

    def dicomweb_url(self, store: str) -> str:
        return f"{self.api_endpoint}/{store}/dicomWeb"

    def deidentify_body(self) -> dict[str, Any]:
        """The DeidentifyDicomStoreRequest body (validated against the discovery document in tests)."""
        dicom: dict[str, Any]
        if self.keep_list:
            dicom = {"keepList": {"tags": list(self.keep_list)}}
        elif self.remove_list:
            dicom = {"removeList": {"tags": list(self.remove_list)}}
        else:
            dicom = {"filterProfile": self.filter_profile}
        return {
            "destinationStore": self.destination_store,
            "config": {"dicom": dicom, "image": {"textRedactionMode": self.text_redaction_mode}},
        }


@dataclass(frozen=True)
class OperationResult:
    """A finished long-running operation: its counters and where its per-instance errors are logged."""

    name: str
    done: bool
    success: int = 0
    failure: int = 0
    pending: int = 0
    logs_url: str = ""
    error_code: int | None = None
    error_message: str = ""

    @classmethod
    def from_json(cls, operation: Mapping[str, Any]) -> OperationResult:
        metadata = operation.get("metadata") or {}
        counter = metadata.get("counter") or {}
        error = operation.get("error") or {}
        return cls(
            name=str(operation.get("name", "")),
            done=bool(operation.get("done", False)),
            success=int(counter.get("success", 0)),
            failure=int(counter.get("failure", 0)),
            pending=int(counter.get("pending", 0)),
            logs_url=str(metadata.get("logsUrl", "")),
            error_code=int(error["code"]) if "code" in error else None,
            error_message=_one_line(str(error.get("message", ""))),
        )

    def audit_details(self) -> dict[str, object]:
        details: dict[str, object] = {
            "operation": self.name,
            "success": self.success,
            "failure": self.failure,
            "logs_url": self.logs_url,
        }
        if self.error_code is not None:
            details["error_code"] = self.error_code
        return details


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _status_word(response: requests.Response) -> str:
    try:
        error = response.json().get("error", {})
        return str(error.get("status") or response.reason or "")
    except ValueError:
        return str(response.reason or "")


def explain(response: requests.Response, what: str) -> HealthcareApiError:
    """A one-line error for a final HTTP failure of `what` (e.g. 'dicomStores.get on projects/...')."""
    status = response.status_code
    word = _status_word(response)
    if status == 401:
        hint = (
            "the credentials were rejected (expired or revoked token); refresh them "
            "(gcloud auth application-default login) or check GOOGLE_APPLICATION_CREDENTIALS"
        )
    elif status == 403:
        hint = (
            "permission denied; the account needs roles/healthcare.dicomEditor on the stores "
            "(and the API must be enabled in the project)"
        )
    elif status == 404:
        hint = "not found; check that the project, location, dataset and DICOM store exist"
    elif status == 409:
        hint = "conflict; the resource already exists or is being changed"
    elif status == 400:
        hint = "bad request: " + _server_message(response)
    else:
        hint = _server_message(response) or "request failed"
    return HealthcareApiError(f"Healthcare API {what}: HTTP {status} {word}: {hint}", status)


def _server_message(response: requests.Response) -> str:
    try:
        return _one_line(str(response.json().get("error", {}).get("message", "")))
    except ValueError:
        return ""


SessionFactory = Callable[[], requests.Session]


def default_session() -> requests.Session:
    """google-auth Application Default Credentials with the cloud-healthcare scope."""
    try:
        credentials, _project = google.auth.default(scopes=list(SCOPES))
    except DefaultCredentialsError:
        raise HealthcareApiError(
            "no Google credentials found for the Healthcare API; run `gcloud auth application-default "
            "login` or set GOOGLE_APPLICATION_CREDENTIALS"
        ) from None
    return AuthorizedSession(credentials)


class HealthcareClient:
    """REST calls against one Healthcare API endpoint, with bounded retries."""

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        session: requests.Session | None = None,
        retry: Backoff | None = None,
        timeout_s: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.session = session if session is not None else default_session()
        self.retry = retry or Backoff()
        self.timeout_s = timeout_s
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.retries = 0  # how many retries this client made (tests and audit read it)

    @classmethod
    def for_settings(cls, settings: HealthcareSettings, session: requests.Session | None = None) -> HealthcareClient:
        return cls(settings.api_endpoint, session=session, retry=settings.retry)

    # -- transport -------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """One REST call, retried on 408/429/5xx and connection errors; returns the JSON body."""
        url = f"{self.endpoint}/{path.lstrip('/')}"
        response, gave_up = send_with_retries(
            lambda: self.session.request(method, url, json=json, params=params, timeout=self.timeout_s),
            self.retry.delays(self._rng),
            lambda seconds, reason: self._pause(seconds, what, reason),
            refresh_failed=lambda: HealthcareApiError(
                f"Healthcare API {what}: the credentials could not be refreshed (expired or revoked); "
                "run `gcloud auth application-default login` or check GOOGLE_APPLICATION_CREDENTIALS"
            ),
            unreachable=lambda kind: HealthcareApiError(
                f"Healthcare API {what}: {kind} after {self.retry.attempts} attempts; "
                "check --healthcare_api_endpoint and the network"
            ),
            retry_after_cap_s=self.retry.cap_s,
        )
        if response.status_code < 400:
            try:
                body = response.json() if response.content else {}
            except ValueError:
                raise HealthcareApiError(f"Healthcare API {what}: the response is not JSON") from None
            return body if isinstance(body, dict) else {"value": body}
        error = explain(response, what)
        if gave_up:
            raise HealthcareApiError(f"{error} (gave up after {self.retry.attempts} attempts)", error.status)
        raise error

    def _pause(self, seconds: float, what: str, reason: str) -> None:
        self.retries += 1
        _LOG.info("Healthcare API %s: %s, retrying in %.1f s", what, reason, seconds)
        self._sleep(seconds)

    # -- methods ---------------------------------------------------------------------------------

    def get_store(self, store: str) -> dict[str, Any]:
        return self.request("GET", store, f"dicomStores.get on {store}")

    def create_store(self, store: str) -> dict[str, Any]:
        """dicomStores.create of `store` (a full resource name) with an empty DicomStore body."""
        parent, _, store_id = check_store_name("store", store).rpartition("/dicomStores/")
        return self.request(
            "POST",
            f"{parent}/dicomStores",
            f"dicomStores.create of {store}",
            json={},
            params={"dicomStoreId": store_id},
        )

    def check_stores(self, settings: HealthcareSettings) -> None:
        """Pre-flight: both stores exist and are readable with these credentials (one-line errors)."""
        self.get_store(settings.source_store)
        self.get_store(settings.destination_store)

    def deidentify(self, settings: HealthcareSettings) -> str:
        """Start dicomStores.deidentify; returns the operation name."""
        operation = self.request(
            "POST",
            f"{settings.source_store}:deidentify",
            f"dicomStores.deidentify of {settings.source_store}",
            json=settings.deidentify_body(),
        )
        return str(operation["name"])

    def import_from_gcs(self, store: str, gcs_uri: str) -> str:
        """Start dicomStores.import of `gcs_uri` (wildcards allowed) into `store`; the operation name."""
        operation = self.request(
            "POST",
            f"{store}:import",
            f"dicomStores.import into {store}",
            json={"gcsSource": {"uri": gcs_uri}},
        )
        return str(operation["name"])

    def export_to_gcs(self, store: str, gcs_prefix: str) -> str:
        """Start dicomStores.export of `store` to `gcs_prefix`; the operation name."""
        operation = self.request(
            "POST",
            f"{store}:export",
            f"dicomStores.export of {store}",
            json={"gcsDestination": {"uriPrefix": gcs_prefix.rstrip("/")}},
        )
        return str(operation["name"])

    def get_operation(self, name: str) -> dict[str, Any]:
        return self.request("GET", name, f"operations.get of {name}")

    def wait(self, name: str, poll: Backoff, timeout_s: float) -> OperationResult:
        """Poll operations.get with exponential backoff and jitter until done (or the timeout)."""
        deadline = time.monotonic() + timeout_s
        delays = poll.delays(self._rng)
        while True:
            result = OperationResult.from_json(self.get_operation(name))
            if result.done:
                return result
            wait = next(delays, None)
            if wait is None or time.monotonic() + wait > deadline:
                raise HealthcareApiError(
                    f"Healthcare API operation {name} not done after {timeout_s:.0f} s "
                    f"({result.success} succeeded, {result.failure} failed, {result.pending} pending)"
                )
            self._sleep(wait)

    def run_operation(self, name: str, settings: HealthcareSettings) -> OperationResult:
        """Wait for `name`; an operation that ends in an error with no success at all raises."""
        result = self.wait(name, settings.poll, settings.operation_timeout_s)
        if result.error_code is not None and result.success == 0 and result.failure == 0:
            raise HealthcareApiError(
                f"Healthcare API operation {name} failed: code {result.error_code}: {result.error_message}"
                + (f" (logs: {result.logs_url})" if result.logs_url else "")
            )
        return result

    # -- DICOMweb --------------------------------------------------------------------------------

    def dicomweb(self, store: str) -> Any:
        """A dicomweb-client DICOMwebClient for `store`, sharing this client's session and retries."""
        return make_client(f"{self.endpoint}/{store}/dicomWeb", self.session, self.retry)

    def store_instances(self, store: str, datasets: Sequence[Any]) -> list[str]:
        """STOW-RS `datasets` into `store`; returns the SOP Instance UIDs stored (failures raise)."""
        return store_datasets(self.dicomweb(store), datasets, f"STOW-RS into {store}")


def preflight(settings: HealthcareSettings, session: requests.Session | None = None) -> None:
    """For the launcher, before the run: both stores reachable with these credentials.

    Raises ConfigError with one line (store missing, bad name, expired token, 403) instead of letting
    the first worker fail with a stack trace.
    """
    try:
        HealthcareClient.for_settings(settings, session).check_stores(settings)
    except HealthcareApiError as exc:
        raise ConfigError(str(exc)) from None
