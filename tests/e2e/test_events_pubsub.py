"""The event mode end to end with the real Pub/Sub emulator, the GCS emulator and the fake Healthcare
API: `python -m pipeline --input_subscription ...` runs as a subprocess; objects uploaded after it
started are announced in the Cloud Storage notification format, and an instance stored in the source
DICOM store in the Healthcare format; a duplicate and a late redelivery change nothing; a bad object
and a message that names nothing are dead letters; SIGTERM drains the run, which exits 0."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from deid.cloud.dicomweb import list_instances
from deid.cloud.healthcare import HealthcareClient, default_session
from deid.keys import DeidKey
from tests.support.event_jobs import Job
from tests.support.gcs_emulator import CloudEnv
from tests.support.pubsub_emulator import PubSub, emulator_available, pubsub_emulator

pytestmark = [
    pytest.mark.skipif(not emulator_available(), reason="google-cloud-cli-pubsub-emulator is not installed"),
    pytest.mark.usefixtures("no_faults"),
]
DATASET = "projects/p1/locations/us-central1/datasets/d1"


@pytest.fixture(scope="module")
def pubsub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PubSub]:
    with pubsub_emulator(tmp_path_factory.mktemp("pubsub")) as emulator:
        yield emulator


def _records(cloud: CloudEnv, prefix: str, folder: str) -> list[dict[str, object]]:
    return [
        json.loads(line)
        for path, data in cloud.list(prefix + folder).items()
        for line in data.decode().splitlines()
        if line.strip()
    ]


def _instance_name(store: str, data: bytes) -> str:
    import io

    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return f"{store}/dicomWeb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def test_notified_objects_and_instances_are_deidentified_once_and_the_job_drains(
    cloud: CloudEnv, pubsub: PubSub, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    bucket, out = f"ev-{tag}", f"gs://ev-{tag}/out/"
    cloud.create_bucket(bucket)
    source, destination = f"{DATASET}/dicomStores/src-{tag}", f"{DATASET}/dicomStores/dst-{tag}"
    client = HealthcareClient(cloud.healthcare.api, default_session())
    client.create_store(source)
    client.create_store(destination)
    uploads, uploads_sub = pubsub.topic_and_subscription("uploads")
    dicom, dicom_sub = pubsub.topic_and_subscription("dicom")
    key_file = tmp_path / "deid.key"
    key_file.write_bytes(DeidKey.generate().secret)
    job = Job([
        f"--input_subscription={uploads_sub},{dicom_sub}", f"--input=gs://{bucket}/in/", f"--output={out}",
        f"--deid_key_file={key_file}", f"--healthcare_source_store={source}",
        f"--healthcare_destination_store={destination}", f"--healthcare_api_endpoint={cloud.healthcare.api}",
        "--settle_seconds=1", "--window_seconds=2",
    ])  # fmt: skip
    job.wait_for(lambda: any("event mode: polling" in line for line in job.lines), 120, "the job started")

    ct = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    mr = Path(get_testdata_file("MR_small.dcm")).read_bytes()
    cloud.upload(f"gs://{bucket}/in/study/ct.dcm", ct)
    cloud.upload(f"gs://{bucket}/in/junk.bin", b"neither DICOM nor a slide")
    for uri in (f"gs://{bucket}/in/study/ct.dcm", f"gs://{bucket}/in/study/ct.dcm", f"gs://{bucket}/in/junk.bin"):
        pubsub.publish_gcs_notification(uploads, uri)  # ct.dcm twice: a duplicate notification
    pubsub.publish_gcs_notification(uploads, f"gs://{bucket}/in/study/ct.dcm", event="OBJECT_DELETE")
    pubsub.publish_gcs_notification(uploads, f"gs://{bucket}/elsewhere/x.dcm")  # outside --input: ignored
    pubsub.publish(uploads, b"hello")  # names nothing: a dead letter
    client.store_instances(source, [pydicom.dcmread(get_testdata_file("MR_small.dcm"))])
    pubsub.publish(dicom, _instance_name(source, mr).encode(), action="StoreInstances")
    pubsub.publish(dicom, _instance_name(destination, mr).encode(), action="StoreInstances")  # another store

    job.wait_for(lambda: len(_records(cloud, out, "audit/")) >= 4, 90, "four audit records")
    first = _records(cloud, out, "audit/")
    # The same object announced again after it was recorded (a redelivery), then a new one.
    pubsub.publish_gcs_notification(uploads, f"gs://{bucket}/in/study/ct.dcm")
    cloud.upload(f"gs://{bucket}/in/study/late.dcm", Path(get_testdata_file("emri_small.dcm")).read_bytes())
    pubsub.publish_gcs_notification(uploads, f"gs://{bucket}/in/study/late.dcm")
    job.wait_for(lambda: len(_records(cloud, out, "audit/")) >= 5, 60, "the new object's record")
    status = job.drain()
    log = "".join(job.lines)
    assert status == 0, log

    audit = _records(cloud, out, "audit/")
    dead = _records(cloud, out, "dead_letter/")
    ok = [r for r in audit if r["status"] == "ok"]
    assert len(audit) == 5 and len({r["input_sha256"] for r in audit}) == 5, audit
    assert len(ok) == 3, audit  # ct.dcm once, the store's instance, late.dcm
    assert sorted(str(r["error_kind"]) for r in dead) == ["invalid_notification", "unsupported_format"]
    assert all(str(o).startswith("dicomweb:") for r in ok for o in r["outputs"])  # type: ignore[attr-defined]
    assert len(list_instances(client.dicomweb(destination))) == 3
    assert not [p for p in cloud.list(out) if "/dicom/" in p]
    assert first == [r for r in audit if r in first]  # earlier records never rewritten
    manifest_path = next(p for p in cloud.list(out + "runs/") if p.endswith(".json") and "/window-" not in p)
    manifest = json.loads(cloud.list(manifest_path)[manifest_path])
    assert manifest["outcome"] == "drained" and manifest["counts"]["inputs"] == 5, manifest
    windows = [p for p in cloud.list(out + "runs/") if "/window-" in p]
    assert len(windows) >= 2 and len(manifest["records"]["audit"]) == len(windows)
    assert not [name for name in ("ct.dcm", "late.dcm", "junk.bin", "study/") if name in log], log
