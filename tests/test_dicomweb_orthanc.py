"""DICOMweb beyond Google: studies read by QIDO-RS/WADO-RS from one Orthanc, de-identified by the
local profile, stored by STOW-RS into a second Orthanc, and checked there."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import pydicom
import pytest
from orthanc import OrthancServer, orthanc
from pydicom.data import get_testdata_file

from deid.cloud.dicomweb import list_instances, make_client, retrieve_bytes, store_datasets
from deid.cloud.retry import Backoff
from deid.keys import DeidKey
from deid.settings import RunSettings

pytestmark = pytest.mark.needs_tool

FILES = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm"]
_RESULTS: dict[str, list[Any]] = {}


class _Keep(beam.DoFn):
    def __init__(self, name: str) -> None:
        self._name = name

    def process(self, element: object) -> None:
        _RESULTS.setdefault(self._name, []).append(element)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OrthancServer, OrthancServer]]:
    workdir = tmp_path_factory.mktemp("orthanc")
    with orthanc(workdir, "source") as source, orthanc(workdir, "destination") as destination:
        yield source, destination


def _originals() -> list[pydicom.Dataset]:
    return [pydicom.dcmread(get_testdata_file(name)) for name in FILES]


def test_qido_wado_deidentify_stow_between_two_orthancs(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path
) -> None:
    pytest.importorskip("deid.dicom.deidentify")
    from transforms.dicomweb import DicomwebDeidentify

    source, destination = servers
    originals = _originals()
    store_datasets(make_client(source.dicomweb), originals)
    assert len(list_instances(make_client(source.dicomweb))) == len(FILES)

    settings = RunSettings(output=str(tmp_path / "out"), key_token=DeidKey.generate().to_token(), linkage=True)
    run = uuid.uuid4().hex
    with beam.Pipeline(argv=["--runner=FnApiRunner"]) as p:
        out = p | DicomwebDeidentify(settings, source.dicomweb, destination.dicomweb)
        _ = out.audit | "A" >> beam.ParDo(_Keep(run + "a"))
        _ = out.dead_letters | "D" >> beam.ParDo(_Keep(run + "d"))
        _ = out.linkage | "L" >> beam.ParDo(_Keep(run + "l"))
    audit, dead, linkage = (_RESULTS.pop(run + s, []) for s in "adl")

    assert dead == [], [d.message for d in dead]
    assert len(audit) == len(FILES) and all(r.status == "ok" for r in audit)
    assert all(r.outputs[0].startswith("dicomweb:") for r in audit)
    uid_map = dict((old, new) for table, old, new in linkage if table == "uid")

    client = make_client(destination.dicomweb)
    stored = list_instances(client)
    assert len(stored) == len(FILES)
    original_sops = {str(ds.SOPInstanceUID) for ds in originals}
    assert not original_sops & {key.sop for key in stored}
    assert {uid_map[sop] for sop in original_sops} == {key.sop for key in stored}
    names = {str(ds.get("PatientName", "")) for ds in originals} - {""}
    ids = {str(ds.get("PatientID", "")) for ds in originals} - {""}
    for key in stored:
        out = pydicom.dcmread(io.BytesIO(retrieve_bytes(client, key)))
        assert str(out.get("PatientName", "")) not in names
        assert str(out.get("PatientID", "")) not in ids
        assert out.get("PatientIdentityRemoved") == "YES"


def test_unreachable_destination_sends_instances_to_dead_letter(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path
) -> None:
    pytest.importorskip("deid.dicom.deidentify")
    from gcs_emulator import free_port

    from transforms.dicomweb import DicomwebDeidentify

    source, _destination = servers
    settings = RunSettings(output=str(tmp_path / "out"), key_token=DeidKey.generate().to_token())
    nowhere = f"http://127.0.0.1:{free_port()}/dicom-web"
    run = uuid.uuid4().hex
    with beam.Pipeline(argv=["--runner=FnApiRunner"]) as p:
        out = p | DicomwebDeidentify(settings, source.dicomweb, nowhere, Backoff(attempts=2, initial_s=0.01))
        _ = out.audit | "A" >> beam.ParDo(_Keep(run + "a"))
        _ = out.dead_letters | "D" >> beam.ParDo(_Keep(run + "d"))
    audit, dead = _RESULTS.pop(run + "a", []), _RESULTS.pop(run + "d", [])
    assert audit == [] and len(dead) == len(list_instances(make_client(source.dicomweb)))
    assert all(d.error_kind == "dicomweb" and "ConnectionError" in d.message for d in dead)
