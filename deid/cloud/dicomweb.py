"""DICOMweb (QIDO-RS, WADO-RS, STOW-RS) through the dicomweb-client package, for any server.

The same helpers serve the Healthcare API's `.../dicomWeb` endpoints (with an AuthorizedSession) and
on-premise archives such as Orthanc (with a plain session). dicomweb-client retries 408/429/5xx on
its own; `make_client` sets its attempts and backoff from our `Backoff`. Its logger quotes UIDs when
a store fails, so it is kept quiet: our errors say how many instances failed and why, not which UIDs.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient

from deid.cloud.retry import RETRYABLE_STATUSES, Backoff
from deid.errors import DeidError

# QIDO-RS attributes an instance is addressed by.
STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"
QIDO_PAGE = 1000


class DicomwebError(DeidError):
    """A DICOMweb server refused a request. One line: the transaction, the HTTP status, a hint.

    `status` is the HTTP status of the response (None when no response came back, or when the server
    answered but refused instances inside a successful STOW-RS response); decide on it, not on the text.
    """

    error_kind = "dicomweb"

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (str(self), self.status)


@dataclass(frozen=True, order=True)
class InstanceKey:
    """Where one instance lives on a DICOMweb server. Holds UIDs: never put it in a message or log."""

    study: str
    series: str
    sop: str

    def ref_hash(self) -> str:
        """A stable sha256 of the instance path, for records about instances never read."""
        return hashlib.sha256(f"/studies/{self.study}/series/{self.series}/instances/{self.sop}".encode()).hexdigest()


def make_client(
    url: str, session: requests.Session | None = None, retry: Backoff | None = None, timeout_s: float = 120.0
) -> Any:
    """A dicomweb_client.DICOMwebClient for `url` with our retry bounds."""
    logging.getLogger("dicomweb_client").setLevel(logging.CRITICAL)
    retry = retry or Backoff()
    client = DICOMwebClient(url.rstrip("/"), session=session, timeout=timeout_s, chunk_size=16 * 1024**2)
    client.set_http_retry_params(
        retry=retry.attempts > 1,
        max_attempts=retry.attempts,
        # retrying waits 2^n x multiplier ms; keep the first wait near Backoff.initial_s.
        wait_exponential_multiplier=max(1, int(retry.initial_s * 500)),
        retriable_error_codes=tuple(HTTPStatus(code) for code in sorted(RETRYABLE_STATUSES)),
    )
    return client


def translate(exc: BaseException, what: str) -> DicomwebError:
    """A one-line DicomwebError for a failed transaction (no URL: it may hold UIDs)."""
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        hint = {
            401: "the server rejected the credentials (expired or missing token)",
            403: "permission denied",
            404: "not found; check the DICOMweb base URL or the store name",
            409: "conflict",
            413: "the instance is too large for the server",
        }.get(status, "retries exhausted" if status in RETRYABLE_STATUSES else "request refused")
        return DicomwebError(f"DICOMweb {what}: HTTP {status}: {hint}", status)
    if isinstance(exc, requests.ConnectionError | requests.Timeout):
        return DicomwebError(f"DICOMweb {what}: {type(exc).__name__}; check the URL and that the server is up")
    return DicomwebError(f"DICOMweb {what}: {type(exc).__name__}")


def list_instances(client: Any, what: str = "QIDO-RS search for instances") -> list[InstanceKey]:
    """Every instance on the server, paged with limit/offset, sorted."""
    found: set[InstanceKey] = set()
    offset = 0
    while True:
        try:
            page = client.search_for_instances(limit=QIDO_PAGE, offset=offset, fields=[STUDY_UID, SERIES_UID, SOP_UID])
        except (requests.RequestException, ValueError) as exc:
            raise translate(exc, what) from None
        for item in page:
            try:
                found.add(
                    InstanceKey(
                        study=str(item[STUDY_UID]["Value"][0]),
                        series=str(item[SERIES_UID]["Value"][0]),
                        sop=str(item[SOP_UID]["Value"][0]),
                    )
                )
            except (KeyError, IndexError, TypeError):
                raise DicomwebError(f"DICOMweb {what}: a result lacks the study, series or SOP UID") from None
        if len(page) < QIDO_PAGE:
            return sorted(found)
        offset += len(page)


def retrieve_bytes(client: Any, key: InstanceKey) -> bytes:
    """WADO-RS one instance in its stored transfer syntax, as Part 10 bytes."""
    try:
        dataset = client.retrieve_instance(key.study, key.series, key.sop, media_types=(("application/dicom", "*"),))
    except (requests.RequestException, ValueError) as exc:
        raise translate(exc, "WADO-RS retrieve instance") from None
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=False)
    return buffer.getvalue()


def store_datasets(client: Any, datasets: Sequence[Any], what: str = "STOW-RS") -> list[str]:
    """STOW-RS `datasets`; returns the SOP Instance UIDs the server stored; any failure raises."""
    if not datasets:
        return []
    try:
        response = client.store_instances(datasets=[_part10(ds) for ds in datasets])
    except (requests.RequestException, ValueError) as exc:
        raise translate(exc, what) from None
    failed = list(getattr(response, "FailedSOPSequence", []) or [])
    if failed:
        reasons = sorted({int(getattr(item, "FailureReason", 0) or 0) for item in failed})
        raise DicomwebError(
            f"DICOMweb {what}: the server refused {len(failed)} of {len(datasets)} instances "
            f"(failure reasons {', '.join(f'0x{r:04X}' for r in reasons)})"
        )
    stored = [str(item.ReferencedSOPInstanceUID) for item in getattr(response, "ReferencedSOPSequence", []) or []]
    return stored or [str(ds.SOPInstanceUID) for ds in datasets]


def _part10(dataset: Any) -> Any:
    """A dataset dicomweb-client encodes as a Part 10 file (preamble, DICM, file meta)."""
    if getattr(dataset, "preamble", None) is not None:
        return dataset
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def store_bytes(client: Any, blobs: Iterable[bytes], what: str = "STOW-RS") -> list[str]:
    """STOW-RS Part 10 files given as bytes."""
    datasets = [pydicom.dcmread(io.BytesIO(blob), force=True) for blob in blobs]
    return store_datasets(client, datasets, what)
