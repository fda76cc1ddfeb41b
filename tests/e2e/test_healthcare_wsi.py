"""Slides written as DICOM VL Whole Slide Microscopy are stored into the Healthcare source store too."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from pydicom.data import get_testdata_file

from deid.cloud.dicomweb import list_instances
from deid.cloud.healthcare import HealthcareClient, default_session
from tests.support.env import BEAM_TEST_ARGS
from tests.support.gcs_emulator import CloudEnv
from tests.support.wsi_factory import write_aperio_svs

DATASET = "projects/p1/locations/us-central1/datasets/wsi"


def test_wsi_dicom_outputs_are_stored_and_deidentified_by_the_api(cloud: CloudEnv, tmp_path: Path) -> None:
    from pipeline.main import main

    tag = uuid.uuid4().hex[:8]
    source, destination = f"{DATASET}/dicomStores/src-{tag}", f"{DATASET}/dicomStores/dst-{tag}"
    client = HealthcareClient(cloud.healthcare.api, default_session())
    client.create_store(source)
    client.create_store(destination)
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_aperio_svs(inputs / "slide.svs")
    (inputs / "ct.dcm").write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    output = tmp_path / "out"

    status = main(
        [
            f"--input={inputs}",
            f"--output={output}",
            "--wsi_output_format=dicom",
            f"--healthcare_source_store={source}",
            f"--healthcare_destination_store={destination}",
            f"--healthcare_api_endpoint={cloud.healthcare.api}",
            *[a for a in BEAM_TEST_ARGS if a != "--no_auth"],
        ]
    )

    assert status == 0
    audit = [json.loads(line) for f in (output / "audit").glob("*.jsonl") for line in f.read_text().splitlines()]
    (slide,) = [r for r in audit if r["kind"] == "wsi"]
    levels = [o for o in slide["outputs"] if o.endswith(".dcm")]
    assert slide["status"] == "ok" and levels
    # One audit record per input (plus the store's): the slide's instances add none of their own.
    scopes = sorted(r.get("details", {}).get("scope", "") for r in audit if r["kind"] == "dicom")
    assert scopes == ["instance", "store"], audit
    stored = list_instances(client.dicomweb(destination))
    # The CT and every level of the slide reached the destination store.
    assert len(stored) == 1 + len(levels)
    assert len({key.series for key in stored}) == 2
