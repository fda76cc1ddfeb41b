"""DICOMweb beyond Google: studies read by QIDO-RS/WADO-RS from one Orthanc, de-identified by the
local profile, stored by STOW-RS into a second Orthanc, and checked there."""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import pydicom
import pytest
from pydicom.data import get_testdata_file

from deid.cloud.dicomweb import list_instances, make_client, retrieve_bytes, store_bytes, store_datasets
from deid.cloud.retry import Backoff
from deid.keys import DeidKey
from deid.settings import RunSettings
from pipeline.main import main
from tests.support import dicom_factory
from tests.support.env import BEAM_TEST_ARGS
from tests.support.orthanc import OrthancServer, orthanc

pytestmark = pytest.mark.needs_tool

# Files the leak check lets through. MR_small and rtplan are quarantined by every branch: their
# InstitutionName recurs in the kept Manufacturer / ManufacturerModelName (issues 12 and 19).
FILES = ["CT_small.dcm", "rtdose.dcm"]
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
    pytest.importorskip("deid.dicom.profile")
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
    pytest.importorskip("deid.dicom.profile")
    from tests.support.gcs_emulator import free_port
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


# -- the leak check guards every sink ----------------------------------------------------------------


def _jsonl(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for f in sorted(folder.glob("*.jsonl")) for line in f.read_text().splitlines()]


def _phi_inputs(folder: Path) -> list[bytes]:
    """Two instances whose StudyDescription holds the patient's name and ID (dicom_factory)."""
    folder.mkdir(parents=True)
    blobs = [dicom_factory.to_bytes(dicom_factory.instance(1, n)) for n in (1, 2)]
    for n, blob in enumerate(blobs, 1):
        (folder / f"study_{n}.dcm").write_bytes(blob)
    return blobs


def _quarantined(output: Path) -> set[str]:
    root = output / "quarantine"
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.is_dir() else set()


def _assert_nothing_leaked_to(client: Any, before: set[Any]) -> None:
    for key in set(list_instances(client)) - before:
        ds = pydicom.dcmread(io.BytesIO(retrieve_bytes(client, key)))
        text = " ".join(str(e.value) for e in ds.iterall() if isinstance(e.value, str))
        assert dicom_factory.PHI["PatientName"].split("^")[0] not in text


def test_local_inputs_to_a_destination_quarantine_what_leaks_like_the_local_branch(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path
) -> None:
    """--keep StudyDescription re-introduces the name: nothing holding it is STOWed, each input is
    dead-lettered 'leak', and the quarantine tree is the one the local branch writes."""
    _source, destination = servers
    inputs = tmp_path / "in"
    blobs = _phi_inputs(inputs)
    key = tmp_path / "k.key"
    key.write_bytes(os.urandom(32))
    client = make_client(destination.dicomweb)
    before = set(list_instances(client))
    common = ["--input", str(inputs), "--deid_key_file", str(key), "--keep", "StudyDescription", *BEAM_TEST_ARGS]

    local_out, remote_out = tmp_path / "local", tmp_path / "remote"
    assert main([*common, "--output", str(local_out)]) == 0
    assert main([*common, "--output", str(remote_out), "--dicomweb_destination", destination.dicomweb]) == 0

    assert set(list_instances(client)) == before  # nothing was stored
    hashes = {hashlib.sha256(b).hexdigest() for b in blobs}
    for out in (local_out, remote_out):
        dead = _jsonl(out / "dead_letter")
        assert {d["input_sha256"] for d in dead} == hashes
        assert {d["error_kind"] for d in dead} == {"leak"}
        assert not [r for r in _jsonl(out / "audit") if r["status"] == "ok"]
    assert _quarantined(remote_out) == _quarantined(local_out)
    assert {p.split("/")[0] for p in _quarantined(local_out)} == hashes


def test_source_to_destination_never_stores_a_leaking_instance(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path
) -> None:
    source, destination = servers
    blobs = _phi_inputs(tmp_path / "in")
    store_datasets(make_client(source.dicomweb), _originals())  # clean ones beside them (again, if stored)
    store_bytes(make_client(source.dicomweb), blobs)
    phi_sops = {str(pydicom.dcmread(io.BytesIO(b)).SOPInstanceUID) for b in blobs}
    src_keys = [k for k in list_instances(make_client(source.dicomweb)) if k.sop in phi_sops]
    fetched = {hashlib.sha256(retrieve_bytes(make_client(source.dicomweb), k)).hexdigest() for k in src_keys}
    assert len(fetched) == len(blobs)
    client = make_client(destination.dicomweb)
    before = set(list_instances(client))
    out = tmp_path / "out"
    argv = ["--output", str(out), "--dicomweb_source", source.dicomweb, "--dicomweb_destination", destination.dicomweb]
    assert main([*argv, "--keep", "StudyDescription", *BEAM_TEST_ARGS]) == 0

    _assert_nothing_leaked_to(client, before)
    dead = _jsonl(out / "dead_letter")
    leaks = [d for d in dead if d["error_kind"] == "leak"]
    assert {d["input_sha256"] for d in leaks} == fetched
    assert {p.split("/")[0] for p in _quarantined(out)} == fetched
    ok = [r for r in _jsonl(out / "audit") if r["status"] == "ok"]
    assert ok and not {r["input_sha256"] for r in ok} & fetched
    assert len(set(list_instances(client)) - before) == len(ok)
