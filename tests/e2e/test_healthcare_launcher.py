"""The launcher with --healthcare_* options: inputs on the GCS emulator stored into the fake API's
source store and de-identified into the destination store; bad stores, 403 and expired tokens end
the run before it starts with one line on stderr."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from deid.cloud.dicomweb import list_instances
from deid.cloud.healthcare import HealthcareClient, default_session
from tests.support.gcs_emulator import CloudEnv

pytestmark = pytest.mark.usefixtures("no_faults")
DATASET = "projects/p1/locations/us-central1/datasets/d1"


def _stores(cloud: CloudEnv, create: bool = True) -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    source, destination = f"{DATASET}/dicomStores/src-{tag}", f"{DATASET}/dicomStores/dst-{tag}"
    if create:
        client = HealthcareClient(cloud.healthcare.api, default_session())
        client.create_store(source)
        client.create_store(destination)
    return source, destination


def _args(cloud: CloudEnv, source: str, destination: str, output: str, *extra: str) -> list[str]:
    return [
        "--runner=FnApiRunner",
        f"--output={output}",
        f"--healthcare_source_store={source}",
        f"--healthcare_destination_store={destination}",
        f"--healthcare_api_endpoint={cloud.healthcare.api}",
        *extra,
    ]


def test_run_stores_inputs_and_deidentifies_them_with_the_api(cloud: CloudEnv, tmp_path: Path) -> None:
    from pipeline.main import run

    source, destination = _stores(cloud)
    bucket = "hl-" + uuid.uuid4().hex[:8]
    cloud.create_bucket(bucket)
    for name in ("CT_small.dcm", "MR_small.dcm"):
        cloud.upload(f"gs://{bucket}/in/{name}", Path(get_testdata_file(name)).read_bytes())
    run(_args(cloud, source, destination, f"gs://{bucket}/out/", f"--input=gs://{bucket}/in/",
              "--healthcare_filter_profile=ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE",
              "--healthcare_text_redaction_mode=REDACT_SENSITIVE_TEXT"))  # fmt: skip
    audit = [
        json.loads(line)
        for path, data in cloud.list(f"gs://{bucket}/out/").items()
        if "/audit" in path
        for line in data.decode().splitlines()
    ]
    scopes = sorted(r.get("details", {}).get("scope", "") for r in audit if r["status"] == "ok")
    assert scopes == ["instance", "instance", "store"], audit
    client = HealthcareClient(cloud.healthcare.api, default_session())
    assert len(list_instances(client.dicomweb(destination))) == 2
    sent = [r for r in cloud.healthcare.requests_seen() if r["validated"] == "deidentify"]
    assert sent and source in sent[-1]["path"]


@pytest.mark.parametrize(
    ("fault", "create", "expected"),
    [
        ({}, False, "HTTP 404"),
        ({"forbidden": True}, True, "HTTP 403"),
        ({"reject_tokens": True}, True, "HTTP 401"),
    ],
)
def test_cloud_failures_are_one_line_errors(
    cloud: CloudEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str], fault: dict[str, bool], create: bool,
    expected: str,
) -> None:  # fmt: skip
    from pipeline.main import main

    source, destination = _stores(cloud, create)
    cloud.healthcare.faults(**fault)
    assert main(_args(cloud, source, destination, str(tmp_path / "out"))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: Healthcare API") and expected in err[0], err


def test_bad_resource_name_is_a_one_line_error(
    cloud: CloudEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.main import main

    assert main(_args(cloud, "projects/p/datasets/d", f"{DATASET}/dicomStores/x", str(tmp_path / "out"))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--healthcare_source_store must look like" in err[0]
