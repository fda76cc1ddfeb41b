"""HealthcareDeidentify in a Beam pipeline against the fake Healthcare API: inputs on the GCS emulator
are stored into the source store, de-identified by the operation, and every instance ends in the
destination store or in dead letter, counted; a pre-filled source store needs no inputs."""

from __future__ import annotations

import hashlib
import io
import uuid
from typing import Any

import apache_beam as beam
import pydicom
import pytest
from apache_beam.testing.util import assert_that, equal_to
from pydicom.data import get_testdata_file

from deid.classify import InputRef
from deid.cloud.dicomweb import list_instances
from deid.cloud.healthcare import HealthcareClient, HealthcareSettings, default_session
from deid.cloud.retry import Backoff
from tests.support.gcs_emulator import CloudEnv
from transforms.healthcare import FAILED_KIND, HealthcareDeidentify, store_hash

pytestmark = pytest.mark.usefixtures("no_faults")
DATASET = "projects/p1/locations/us-central1/datasets/d1"
FAST = Backoff(attempts=4, initial_s=0.01, cap_s=0.05)


def _setup(cloud: CloudEnv) -> tuple[HealthcareSettings, HealthcareClient]:
    tag = uuid.uuid4().hex[:8]
    settings = HealthcareSettings(
        source_store=f"{DATASET}/dicomStores/src-{tag}",
        destination_store=f"{DATASET}/dicomStores/dst-{tag}",
        api_endpoint=cloud.healthcare.api,
        retry=FAST,
        poll=Backoff(attempts=100, initial_s=0.01, cap_s=0.05),
    )
    client = HealthcareClient.for_settings(settings, default_session())
    client.create_store(settings.source_store)
    client.create_store(settings.destination_store)
    return settings, client


def _upload_inputs(cloud: CloudEnv, count: int) -> list[InputRef]:
    bucket = "in-" + uuid.uuid4().hex[:8]
    cloud.create_bucket(bucket)
    refs = []
    for index in range(count):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.77.{index + 1}"
        buffer = io.BytesIO()
        ds.save_as(buffer)
        data = buffer.getvalue()
        path = f"gs://{bucket}/dicom/{index}.dcm"
        cloud.upload(path, data)
        refs.append(InputRef(path, len(data), hashlib.sha256(data).hexdigest(), "dicom", "dicom"))
    return refs


_RESULTS: dict[str, list[object]] = {}


class _Keep(beam.DoFn):
    """Collect elements in this process (FnApiRunner runs in-process; the DoFn itself is pickled)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def process(self, element: object) -> None:
        _RESULTS.setdefault(self._name, []).append(element)


def _run(settings: HealthcareSettings, refs: list[InputRef] | None) -> tuple[list[Any], list[Any]]:
    run = uuid.uuid4().hex
    with beam.Pipeline(argv=["--runner=FnApiRunner"]) as p:
        source = p | "Refs" >> beam.Create(refs) if refs is not None else p
        out = source | HealthcareDeidentify(settings)
        _ = out.audit | "A" >> beam.ParDo(_Keep(run + "a"))
        _ = out.dead_letters | "D" >> beam.ParDo(_Keep(run + "d"))
        assert_that(out.linkage, equal_to([]), label="NoLinkage")
    return _RESULTS.pop(run + "a", []), _RESULTS.pop(run + "d", [])


def test_inputs_are_stored_deidentified_and_audited(cloud: CloudEnv) -> None:
    settings, client = _setup(cloud)
    refs = _upload_inputs(cloud, 3)
    cloud.healthcare.faults(http_errors=[{"status": 429, "count": 1, "match": "dicomWeb/studies"}])
    audit, dead = _run(settings, refs)
    assert dead == []
    per_input = [r for r in audit if r.details.get("scope") == "instance"]
    store = [r for r in audit if r.details.get("scope") == "store"]
    assert sorted(r.input_sha256 for r in per_input) == sorted(r.sha256 for r in refs)
    assert len(store) == 1 and store[0].input_sha256 == store_hash(settings.source_store)
    details = store[0].details
    assert details["success"] == 3 and details["failure"] == 0 and details["logs_url"]
    assert len(list_instances(client.dicomweb(settings.destination_store))) == 3


def test_partial_failure_puts_every_failed_instance_in_dead_letter(cloud: CloudEnv) -> None:
    settings, client = _setup(cloud)
    refs = _upload_inputs(cloud, 4)
    cloud.healthcare.faults(fail_instances=2, slow_polls=2)
    audit, dead = _run(settings, refs)
    store = next(r for r in audit if r.details.get("scope") == "store")
    assert (store.details["success"], store.details["failure"]) == (2, 2)
    assert len(dead) == 2 and all(d.error_kind == FAILED_KIND for d in dead)
    assert all(store.details["operation"] in d.message for d in dead)
    destination = len(list_instances(client.dicomweb(settings.destination_store)))
    assert destination + len(dead) == len(refs)


def test_a_prefilled_source_store_needs_no_inputs(cloud: CloudEnv) -> None:
    settings, client = _setup(cloud)
    datasets = []
    for index in range(2):
        ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.78.{index + 1}"
        datasets.append(ds)
    client.store_instances(settings.source_store, datasets)
    audit, dead = _run(settings, None)
    assert dead == [] and len(audit) == 1
    assert audit[0].details["success"] == 2


def test_an_operation_refused_outright_sends_every_input_to_dead_letter(cloud: CloudEnv) -> None:
    settings, _client = _setup(cloud)
    refs = _upload_inputs(cloud, 2)
    cloud.healthcare.faults(http_errors=[{"status": 403, "count": 100, "match": ":deidentify"}])
    audit, dead = _run(settings, refs)
    assert audit == []
    assert sorted(d.input_sha256 for d in dead) == sorted(
        [r.sha256 for r in refs] + [store_hash(settings.source_store)]
    )
    assert all("HTTP 403" in d.message and "\n" not in d.message for d in dead)
