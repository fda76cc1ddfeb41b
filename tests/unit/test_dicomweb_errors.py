"""DicomwebError carries the HTTP status of a real response as a field (what callers decide on),
with a one-line message that names neither the URL nor any UID. A tiny http.server on 127.0.0.1
answers every request with the status a test sets."""

from __future__ import annotations

import contextlib
import pickle
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file

from deid.cloud.dicomweb import DicomwebError, InstanceKey, list_instances, make_client, retrieve_bytes, store_datasets
from deid.cloud.retry import Backoff
from deid.errors import DeidError, PipelineError

NO_RETRY = Backoff(attempts=1)
SOP_UID = "1.2.826.0.1.3680043.8.498.4242"


class _Server:
    def __init__(self) -> None:
        self.status = 500
        self.paths: list[str] = []


@contextlib.contextmanager
def refusing_server() -> Iterator[tuple[str, _Server]]:
    state = _Server()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            state.paths.append(self.path)
            body = b'{"error": "refused"}'
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/dicom-web", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _dataset() -> pydicom.Dataset:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = SOP_UID
    return ds


@pytest.mark.parametrize("status", [401, 403, 404, 409, 413, 503])
def test_stow_refusal_carries_the_http_status(status: int) -> None:
    with refusing_server() as (url, state):
        state.status = status
        with pytest.raises(DicomwebError) as caught:
            store_datasets(make_client(url, retry=NO_RETRY), [_dataset()], "STOW-RS")
    assert state.paths, "the request reached the server"
    assert caught.value.status == status
    message = str(caught.value)
    assert f"HTTP {status}" in message and "\n" not in message
    assert url not in message and "127.0.0.1" not in message and SOP_UID not in message


@pytest.mark.parametrize("status", [403, 404])
def test_qido_and_wado_refusals_carry_the_http_status(status: int) -> None:
    key = InstanceKey("1.2.3", "1.2.3.4", SOP_UID)
    with refusing_server() as (url, state):
        state.status = status
        client = make_client(url, retry=NO_RETRY)
        with pytest.raises(DicomwebError) as searched:
            list_instances(client)
        with pytest.raises(DicomwebError) as retrieved:
            retrieve_bytes(client, key)
    assert searched.value.status == status and retrieved.value.status == status
    assert SOP_UID not in str(retrieved.value) and "1.2.3.4" not in str(retrieved.value)


def test_no_response_has_no_status() -> None:
    with refusing_server() as (url, _state):
        pass  # stopped: nothing listens on that port any more
    with pytest.raises(DicomwebError, match="check the URL") as caught:
        list_instances(make_client(url, retry=NO_RETRY, timeout_s=5))
    assert caught.value.status is None


def test_the_status_survives_pickling_and_the_error_has_one_root() -> None:
    error = DicomwebError("DICOMweb STOW-RS: HTTP 409: conflict", 409)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is DicomwebError and copy.status == 409 and str(copy) == str(error)
    assert isinstance(error, DeidError) and isinstance(error, PipelineError)
    assert error.error_kind == "dicomweb" and repr(error) == str(error)
