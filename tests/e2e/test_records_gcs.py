"""Records on Cloud Storage (the GCS emulator) are only ever added: uploaded straight to their
names, never staged, never replacing an object; a gs:// --linkage_output that already holds tables
is refused before the run. This is what lets the Terraform deployment give workers create-only
rights on the records and a retention policy on the linkage bucket (README "Security model")."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.main import main
from tests.support import dicom_factory
from tests.support.gcs_emulator import CloudEnv, cloud_env
from transforms.files import records_present, write_record
from transforms.records import linkage_tables_present


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudEnv]:
    with cloud_env(tmp_path_factory.mktemp("cloud")) as env:
        yield env


def test_a_record_is_uploaded_to_its_name_and_never_replaced(cloud: CloudEnv) -> None:
    bucket = "rec-" + uuid.uuid4().hex[:8]
    cloud.create_bucket(bucket)
    root = f"gs://{bucket}/job"
    assert write_record(root, "audit/audit-r1.jsonl", b'{"a": 1}\n') == "audit/audit-r1.jsonl"
    # Nothing was staged: the only object is the record itself (no .tmp/ copy made, none to delete).
    assert cloud.list(f"gs://{bucket}/") == {f"gs://{bucket}/job/audit/audit-r1.jsonl": b'{"a": 1}\n'}
    # A second write of the same name (a retried bundle) leaves the first object as it is.
    write_record(root, "audit/audit-r1.jsonl", b"something else\n")
    assert cloud.list(f"gs://{bucket}/") == {f"gs://{bucket}/job/audit/audit-r1.jsonl": b'{"a": 1}\n'}
    assert records_present(root, ["audit/audit-r1.jsonl", "audit/audit-r2.jsonl"]) == ["audit/audit-r1.jsonl"]


def test_a_linkage_prefix_holding_tables_is_refused_before_the_run(
    cloud: CloudEnv, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    bucket = "link-" + uuid.uuid4().hex[:8]
    cloud.create_bucket(bucket)
    cloud.upload(f"gs://{bucket}/run-1/uid_mapping.csv", b"id_old,id_new\n1.2.3,2.25.9\n")
    assert linkage_tables_present(f"gs://{bucket}/run-1/") == ["uid_mapping.csv"]
    assert linkage_tables_present(f"gs://{bucket}/run-2/") == []
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.dcm").write_bytes(dicom_factory.to_bytes(dicom_factory.instance(1, 1)))
    out = tmp_path / "out"
    status = main(
        [f"--input={inputs}", f"--output={out}", f"--linkage_output=gs://{bucket}/run-1/", "--runner=FnApiRunner"]
    )
    err = capfd.readouterr().err.strip().splitlines()
    assert status == 2
    assert err == [
        "error: --linkage_output already holds linkage tables, which are never replaced on Cloud Storage; "
        "give this run its own prefix (for example gs://<linkage bucket>/<job name>/)"
    ]
    assert not (out / "audit").exists()
    # The table is untouched.
    assert cloud.list(f"gs://{bucket}/run-1/") == {
        f"gs://{bucket}/run-1/uid_mapping.csv": b"id_old,id_new\n1.2.3,2.25.9\n"
    }
