"""`--input gs://... --output gs://...` end to end against a local GCS emulator: a DICOM file and a
small slide uploaded, the pipeline run, the outputs read back from the emulator and checked."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from deid.keys import DeidKey
from tests.support.gcs_emulator import CloudEnv, cloud_env


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudEnv]:
    with cloud_env(tmp_path_factory.mktemp("cloud")) as env:
        yield env


def test_beam_filesystems_list_read_and_finalise_on_the_emulator(cloud: CloudEnv) -> None:
    import apache_beam as beam
    from apache_beam.io.filesystems import FileSystems

    bucket = "fs-" + uuid.uuid4().hex[:8]
    cloud.create_bucket(bucket)
    cloud.upload(f"gs://{bucket}/in/a/b.bin", b"payload")
    matched = FileSystems.match([f"gs://{bucket}/in/**"])[0].metadata_list
    assert [m.path for m in matched] == [f"gs://{bucket}/in/a/b.bin"]
    with FileSystems.open(f"gs://{bucket}/in/a/b.bin") as handle:
        assert handle.read() == b"payload"
    with beam.Pipeline(argv=["--runner=FnApiRunner"]) as p:  # WriteToText finalises by batch copy/delete
        _ = p | beam.Create(["x", "y", "z"]) | beam.io.WriteToText(f"gs://{bucket}/out/part", num_shards=2)
    written = cloud.list(f"gs://{bucket}/out/")
    assert sorted(written) == [f"gs://{bucket}/out/part-0000{i}-of-00002" for i in range(2)]
    assert sorted(b"".join(written.values()).split()) == [b"x", b"y", b"z"]


def test_gs_input_and_output_end_to_end(cloud: CloudEnv, shared_data: Path, tmp_path: Path) -> None:
    from pipeline.main import run

    bucket = "e2e-" + uuid.uuid4().hex[:8]
    cloud.create_bucket(bucket)
    original = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    cloud.upload(f"gs://{bucket}/in/study/ct.dcm", Path(get_testdata_file("CT_small.dcm")).read_bytes())
    cloud.upload(
        f"gs://{bucket}/in/slides/boxes.tiff", (shared_data / "wsi" / "openslide-fixture-boxes.tiff").read_bytes()
    )
    cloud.upload(f"gs://{bucket}/in/junk.txt", b"neither DICOM nor a slide")
    key_file = tmp_path / "deid.key"
    key_file.write_bytes(DeidKey.generate().secret)

    run(
        [
            "--runner=FnApiRunner",
            f"--input=gs://{bucket}/in/",
            f"--output=gs://{bucket}/out/",
            f"--deid_key_file={key_file}",
        ]
    )

    objects = cloud.list(f"gs://{bucket}/out/")
    audit = [
        json.loads(line)
        for path, data in objects.items()
        if "/audit" in path
        for line in data.decode().splitlines()
        if line.strip()
    ]
    ok = [r for r in audit if r["status"] == "ok"]
    dead = [r for r in audit if r["status"] == "dead_letter"]
    summary = [(r["kind"], r["status"], r.get("error_kind")) for r in audit]
    assert sorted(r["kind"] for r in ok) == ["dicom", "wsi"], summary
    assert len(dead) == 1 and dead[0]["kind"] == "unknown"
    assert any("/dead_letter" in path for path in objects)
    assert not any("/.tmp/" in path for path in objects), "staging files must be renamed away"

    dicom_out = [data for path, data in objects.items() if "/out/dicom/" in path]
    assert len(dicom_out) == 1
    deidentified = pydicom.dcmread(io.BytesIO(dicom_out[0]))
    assert str(deidentified.get("PatientName", "")) != str(original.PatientName)
    assert deidentified.SOPInstanceUID != original.SOPInstanceUID
    slides = [data for path, data in objects.items() if "/out/wsi/" in path]
    assert slides and all(data[:4] in (b"II*\x00", b"II+\x00", b"MM\x00*", b"MM\x00+") for data in slides)
