"""The DICOM DoFn called as Beam calls it: setup(), then process() per element."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pydicom
import pytest
from apache_beam.pvalue import TaggedOutput

from deid.classify import InputRef
from deid.errors import LeakDetectedError
from deid.keys import DeidKey
from deid.records import AuditRecord
from deid.settings import ProfileSettings, RunSettings
from tests.support import dicom_factory
from transforms.common import LINKAGE
from transforms.dicom import _DeidentifyInstanceFn, _PublishFn
from transforms.qa import QA_TAG


def _ref(tmp_path: Path, blob: bytes, name: str = "PATIENT_DOE_JOHN.dcm") -> InputRef:
    path = tmp_path / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    return InputRef(str(path), len(blob), hashlib.sha256(blob).hexdigest(), "dicom", "dicom")


def _fn(settings: RunSettings) -> _DeidentifyInstanceFn:
    fn = _DeidentifyInstanceFn(settings)
    fn.setup()
    return fn


def _publish(settings: RunSettings) -> _PublishFn:
    fn = _PublishFn(settings.output, None, None)
    fn.setup()
    return fn


def test_inputs_on_one_output_path_are_published_once_never_overwritten(tmp_path: Path) -> None:
    """Same SOPInstanceUID: an identical instance is a duplicate_of the chosen one, a different one a
    uid_conflict; the smallest input_sha256 is published whatever the order the group arrives in."""
    settings = RunSettings(output=str(tmp_path / "out"), key_token=DeidKey.generate().to_token())
    base = dicom_factory.instance(1, 1)
    other = dicom_factory.instance(1, 1)
    other.SeriesDescription = "ANOTHER SERIES"
    blobs = [dicom_factory.to_bytes(base), dicom_factory.to_bytes(other)]
    blobs.append(dicom_factory.to_bytes(base, implicit=True))  # same content, other bytes
    refs = [_ref(tmp_path, blob, f"in{n}.dcm") for n, blob in enumerate(blobs)]
    for reverse in (False, True):
        again = [o for ref in refs for o in _fn(settings).process((ref, None)) if isinstance(o, tuple)]
        assert len({relpath for relpath, _ in again}) == 1
        relpath = again[0][0]
        items = [s for _, s in (again[::-1] if reverse else again)]
        results = list(_publish(settings).process((relpath, items)))
        audits = {r.input_sha256: r for r in results if isinstance(r, AuditRecord)}
        dead = [t.value for t in results if isinstance(t, TaggedOutput)]
        winner = min(ref.sha256 for ref in refs)
        assert winner in audits and audits[winner].outputs == (relpath,)
        assert "duplicate_of" not in audits[winner].details
        for ref in refs:
            if ref.sha256 == winner:
                continue
            if ref.sha256 in audits:
                assert audits[ref.sha256].details["duplicate_of"] == winner
            else:
                (record,) = [d for d in dead if d.input_sha256 == ref.sha256]
                assert record.error_kind == "uid_conflict" and winner in record.message
        assert len(audits) + len(dead) == 3 and dead
        published = (tmp_path / "out" / relpath).read_bytes()
        (chosen,) = [s for _, s in again if s.ref.sha256 == winner]
        assert hashlib.sha256(published).hexdigest() == chosen.payload_sha256
    staged = [p for p in (tmp_path / "out" / ".tmp").rglob("*") if p.is_file()]
    assert not staged  # every staged file (under .tmp/<run id>/) was published or removed


def test_process_writes_the_instance_and_yields_audit_linkage_and_qa(tmp_path: Path) -> None:
    blob = dicom_factory.to_bytes(dicom_factory.instance(1, 1))
    ref = _ref(tmp_path, blob)
    settings = RunSettings(
        output=str(tmp_path / "out"),
        key_token=DeidKey.generate().to_token(),
        linkage=True,
        qa_report=True,
        input_root=str(tmp_path / "in"),
    )
    outputs = list(_fn(settings).process((ref, None)))
    tagged = [o for o in outputs if isinstance(o, TaggedOutput)]
    ((relpath, staged),) = [o for o in outputs if isinstance(o, tuple)]
    assert not (tmp_path / "out" / relpath).exists()  # staged, not yet published
    published = list(_publish(settings).process((relpath, [staged])))

    (audit,) = [o for o in published if isinstance(o, AuditRecord)]
    assert audit.status == "ok" and audit.input_sha256 == ref.sha256
    assert audit.outputs == (relpath,)
    written = pydicom.dcmread(tmp_path / "out" / relpath)
    assert written.PatientIdentityRemoved == "YES"
    assert str(written.SOPInstanceUID) != str(pydicom.dcmread(ref.path).SOPInstanceUID)
    assert audit.actions and sum(audit.actions.values()) > 0
    linkage = [t.value for t in tagged if t.tag == LINKAGE]
    assert ("uid", dicom_factory.instance_uid(1, 1), str(written.SOPInstanceUID)) in linkage
    (qa,) = [t.value for t in tagged if t.tag == QA_TAG]
    assert qa.input_sha256 == ref.sha256 and {"read", "deidentify", "verify", "write"} <= set(qa.stage_seconds)


def test_process_quarantines_a_leak_and_publishes_nothing(tmp_path: Path) -> None:
    """--keep StudyDescription keeps the patient's name that the factory wrote there."""
    ref = _ref(tmp_path, dicom_factory.to_bytes(dicom_factory.instance(1, 2)))
    settings = RunSettings(
        output=str(tmp_path / "out"),
        key_token=DeidKey.generate().to_token(),
        profile=ProfileSettings(keep=("StudyDescription",)),
    )
    with pytest.raises(LeakDetectedError) as caught:
        list(_fn(settings).process((ref, None)))
    assert "dicom(0008,1030)" in str(caught.value)  # StudyDescription
    files = [p.relative_to(tmp_path / "out") for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert files and all(p.parts[:2] == ("quarantine", ref.sha256) for p in files)
    assert dicom_factory.PHI["PatientName"].split("^")[0] not in str(caught.value)
