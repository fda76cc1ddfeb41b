"""The Healthcare API client against the local fake server: every request body validated against the
official discovery document, retries on 429/5xx, no retry on 4xx, one-line errors, long-running
operations, partial failure, import/export through the GCS emulator, token refresh."""

from __future__ import annotations

import io
import random
import uuid

import pydicom
import pytest
from pydicom.data import get_testdata_file

from deid.cloud.healthcare import (
    HealthcareApiError,
    HealthcareClient,
    HealthcareSettings,
    default_session,
    preflight,
)
from deid.cloud.retry import Backoff
from deid.errors import ConfigError
from tests.support.gcs_emulator import CloudEnv

pytestmark = pytest.mark.usefixtures("no_faults")
DATASET = "projects/p1/locations/us-central1/datasets/d1"
FAST = Backoff(attempts=4, initial_s=0.01, cap_s=0.05)
FAST_POLL = Backoff(attempts=50, initial_s=0.01, cap_s=0.05)


def _stores() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"{DATASET}/dicomStores/src-{tag}", f"{DATASET}/dicomStores/dst-{tag}"


def _settings(cloud: CloudEnv, source: str, destination: str, **extra: object) -> HealthcareSettings:
    return HealthcareSettings(
        source_store=source,
        destination_store=destination,
        api_endpoint=cloud.healthcare.api,
        retry=FAST,
        poll=FAST_POLL,
        **extra,  # type: ignore[arg-type]
    )


def _client(cloud: CloudEnv, sleeps: list[float] | None = None) -> HealthcareClient:
    record = sleeps if sleeps is not None else []
    return HealthcareClient(
        cloud.healthcare.api, session=default_session(), retry=FAST, sleep=record.append, rng=random.Random(1)
    )


def _instances(count: int) -> list[pydicom.Dataset]:
    out = []
    for index in range(count):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.{index + 1}"
        out.append(ds)
    return out


def _ready(cloud: CloudEnv, instances: int = 3) -> tuple[HealthcareClient, HealthcareSettings]:
    source, destination = _stores()
    client = _client(cloud)
    client.create_store(source)
    client.create_store(destination)
    client.store_instances(source, _instances(instances))
    return client, _settings(cloud, source, destination)


def _count(client: HealthcareClient, store: str) -> int:
    from deid.cloud.dicomweb import list_instances

    return len(list_instances(client.dicomweb(store)))


def test_deidentify_end_to_end_with_every_body_validated(cloud: CloudEnv) -> None:
    client, settings = _ready(cloud, 3)
    result = client.run_operation(client.deidentify(settings), settings)
    assert (result.done, result.success, result.failure) == (True, 3, 0)
    assert result.logs_url.startswith("https://console.cloud.google.com/logs/")
    assert _count(client, settings.destination_store) == 3
    validated = [r["validated"] for r in cloud.healthcare.requests_seen()]
    assert "deidentify" in validated and "create" in validated
    # De-identified by the stand-in: no original patient name, new UIDs.
    from deid.cloud.dicomweb import list_instances, retrieve_bytes

    key = list_instances(client.dicomweb(settings.destination_store))[0]
    out = pydicom.dcmread(io.BytesIO(retrieve_bytes(client.dicomweb(settings.destination_store), key)))
    assert "CompressedSamples^CT1" not in str(out.get("PatientName", ""))
    assert not key.sop.startswith("1.2.826.0.1.3680043.8.498.")


def test_transient_429_and_503_are_retried_with_backoff(cloud: CloudEnv) -> None:
    client, settings = _ready(cloud, 1)
    cloud.healthcare.faults(
        http_errors=[
            {"status": 429, "count": 1, "match": ":deidentify"},
            {"status": 503, "count": 1, "match": ":deidentify"},
            {"status": 503, "count": 2, "match": "/operations/"},
        ]
    )
    sleeps: list[float] = []
    client = _client(cloud, sleeps)
    result = client.run_operation(client.deidentify(settings), settings)
    assert result.success == 1
    assert client.retries == 4
    assert all(0 < s <= FAST.cap_s for s in sleeps)


def test_persistent_503_gives_up_after_bounded_attempts(cloud: CloudEnv) -> None:
    client, settings = _ready(cloud, 1)
    cloud.healthcare.faults(http_errors=[{"status": 503, "count": 100, "match": ":deidentify"}])
    client = _client(cloud)
    with pytest.raises(HealthcareApiError) as caught:
        client.deidentify(settings)
    assert client.retries == FAST.attempts - 1
    assert caught.value.status == 503
    assert "HTTP 503" in str(caught.value) and "gave up after 4 attempts" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_4xx_is_not_retried_and_a_bad_body_is_rejected_by_the_schema(cloud: CloudEnv) -> None:
    client, settings = _ready(cloud, 1)
    body = settings.deidentify_body()
    body["config"]["dicom"]["filterProfile"] = "NOT_A_PROFILE"
    with pytest.raises(HealthcareApiError) as caught:
        client.request("POST", f"{settings.source_store}:deidentify", "deidentify", json=body)
    assert caught.value.status == 400 and client.retries == 0
    assert "NOT_A_PROFILE" in str(caught.value) and "\n" not in str(caught.value)


def test_missing_store_is_a_one_line_preflight_error(cloud: CloudEnv) -> None:
    source, destination = _stores()
    settings = _settings(cloud, source, destination)
    with pytest.raises(ConfigError) as caught:
        preflight(settings)
    message = str(caught.value)
    assert "HTTP 404" in message and "not found" in message and source in message and "\n" not in message


def test_forbidden_is_a_one_line_error(cloud: CloudEnv) -> None:
    client, settings = _ready(cloud, 1)
    cloud.healthcare.faults(forbidden=True)
    with pytest.raises(ConfigError) as caught:
        preflight(settings)
    assert "HTTP 403" in str(caught.value) and "permission denied" in str(caught.value)


def test_revoked_token_is_refreshed_transparently(cloud: CloudEnv) -> None:
    client, settings = _ready(cloud, 1)
    cloud.healthcare.faults(revoke_tokens=True)
    client.check_stores(settings)  # AuthorizedSession refreshes once on 401 and succeeds


def test_rejected_and_unrefreshable_tokens_are_one_line_errors(cloud: CloudEnv) -> None:
    client, settings = _ready(cloud, 1)
    cloud.healthcare.faults(reject_tokens=True)
    with pytest.raises(HealthcareApiError) as caught:
        client.check_stores(settings)
    assert "HTTP 401" in str(caught.value) and "expired or revoked" in str(caught.value)
    cloud.healthcare.faults(revoke_tokens=True, token_endpoint_fails=True)
    fresh = _client(cloud)
    with pytest.raises(HealthcareApiError) as caught:
        fresh.check_stores(settings)
    assert "could not be refreshed" in str(caught.value) and "\n" not in str(caught.value)


def test_bad_resource_names_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="must look like projects/P/locations/L/datasets/D/dicomStores/S"):
        HealthcareSettings(source_store="projects/p/dicomStores/s", destination_store=f"{DATASET}/dicomStores/x")
    with pytest.raises(ConfigError, match="same project and location"):
        HealthcareSettings(
            source_store=f"{DATASET}/dicomStores/a",
            destination_store="projects/p1/locations/europe-west4/datasets/d1/dicomStores/b",
        )
    with pytest.raises(ConfigError, match="exclude each other"):
        HealthcareSettings(
            source_store=f"{DATASET}/dicomStores/a",
            destination_store=f"{DATASET}/dicomStores/b",
            keep_list=("PatientID",),
            remove_list=("PatientName",),
        )


def test_slow_operation_is_polled_with_growing_jittered_waits(cloud: CloudEnv) -> None:
    client, settings = _ready(cloud, 2)
    cloud.healthcare.faults(slow_polls=5)
    sleeps: list[float] = []
    client = _client(cloud, sleeps)
    poll = Backoff(attempts=50, initial_s=1.0, cap_s=4.0)
    result = client.wait(client.deidentify(settings), poll, timeout_s=3600)
    assert result.done and result.success == 2
    assert len(sleeps) == 5
    ceilings = [1.0, 2.0, 4.0, 4.0, 4.0]
    assert all(c / 2 <= s <= c for s, c in zip(sleeps, ceilings, strict=True))


def test_operation_timeout_is_a_clear_error(cloud: CloudEnv) -> None:
    client, settings = _ready(cloud, 1)
    cloud.healthcare.faults(slow_polls=1000)
    with pytest.raises(HealthcareApiError, match="not done after"):
        client.wait(client.deidentify(settings), Backoff(attempts=3, initial_s=0.01, cap_s=0.01), timeout_s=1)


def test_partial_failure_is_counted_and_loses_nothing(cloud: CloudEnv) -> None:
    client, settings = _ready(cloud, 4)
    cloud.healthcare.faults(fail_instances=1)
    result = client.run_operation(client.deidentify(settings), settings)
    assert (result.success, result.failure) == (3, 1)
    assert _count(client, settings.destination_store) == result.success


def test_import_from_and_export_to_the_gcs_emulator(cloud: CloudEnv) -> None:
    source, destination = _stores()
    client = _client(cloud)
    client.create_store(source)
    bucket = "hc-" + uuid.uuid4().hex[:8]
    cloud.create_bucket(bucket)
    for index, ds in enumerate(_instances(2)):
        buffer = io.BytesIO()
        ds.save_as(buffer)
        cloud.upload(f"gs://{bucket}/in/{index}.dcm", buffer.getvalue())
    cloud.upload(f"gs://{bucket}/in/notes.txt", b"not dicom")
    settings = _settings(cloud, source, destination)
    imported = client.wait(client.import_from_gcs(source, f"gs://{bucket}/in/**.dcm"), FAST_POLL, 60)
    assert imported.success == 2 and imported.failure == 0
    exported = client.wait(client.export_to_gcs(source, f"gs://{bucket}/out"), FAST_POLL, 60)
    assert exported.success == 2
    objects = cloud.list(f"gs://{bucket}/out/")
    assert len(objects) == 2 and all(pydicom.dcmread(io.BytesIO(v)).SOPInstanceUID for v in objects.values())
    assert settings.source_store == source


def test_stow_of_an_instance_already_stored_is_a_conflict(cloud: CloudEnv) -> None:
    from deid.cloud.dicomweb import DicomwebError

    source, _destination = _stores()
    client = _client(cloud)
    client.create_store(source)
    client.store_instances(source, _instances(1))
    with pytest.raises(DicomwebError, match="HTTP 409") as caught:
        client.store_instances(source, _instances(1))
    assert caught.value.status == 409
