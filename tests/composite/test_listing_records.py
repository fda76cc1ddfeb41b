"""Composite tests: listing/classification and the record writers, on an in-process runner."""

from __future__ import annotations

import io
import json
from pathlib import Path

import apache_beam as beam
import pydicom
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from pydicom.data import get_testdata_file

from deid.classify import InputRef
from deid.errors import InputTooLargeError, InvalidInputError, UnsupportedFormatError
from deid.records import AuditRecord, DeadLetterRecord
from tests.support.env import BEAM_TEST_ARGS
from transforms.listing import ListInputs, admit, input_pattern
from transforms.records import WriteRecords


def _pipeline() -> TestPipeline:
    return TestPipeline(options=PipelineOptions(BEAM_TEST_ARGS), blocking=True)


def _ct_bytes() -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmread(get_testdata_file("CT_small.dcm")).save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("location", "pattern"),
    [("/data/in", "/data/in/**"), ("/data/in/", "/data/in/**"), ("gs://b/p/", "gs://b/p/**"), ("/d/*.dcm", "/d/*.dcm")],
)
def test_input_pattern(location: str, pattern: str) -> None:
    assert input_pattern(location) == pattern


def test_listing_classifies_by_content_and_skips_output(tmp_path: Path) -> None:
    source = tmp_path / "in"
    (source / "deep" / "er").mkdir(parents=True)
    (source / "deep" / "er" / "scan.txt").write_bytes(_ct_bytes())  # DICOM with a misleading name
    (source / "slide.dcm").write_bytes(b"II*\x00" + b"\x00" * 64)  # TIFF named .dcm
    (source / "notes.dcm").write_bytes(b"plain text")
    output = source / "out"
    (output / "dicom").mkdir(parents=True)
    (output / "dicom" / "old.dcm").write_bytes(_ct_bytes())  # previous output inside INPUT: ignored

    with _pipeline() as p:
        refs, unreadable = p | ListInputs(str(source), str(output))
        kinds = refs | beam.Map(lambda r: (Path(r.path).name, r.kind, r.subtype, len(r.sha256)))
        assert_that(
            kinds,
            equal_to(
                [("scan.txt", "dicom", "dicom", 64), ("slide.dcm", "wsi", "tiff", 64), ("notes.dcm", "unknown", "", 64)]
            ),
        )
        assert_that(unreadable, equal_to([]), label="NothingUnreadable")


def _ref(size: int = 10, kind: str = "dicom") -> InputRef:
    return InputRef(path="/x", size=size, sha256="ab" * 32, kind=kind)  # type: ignore[arg-type]


def test_admit_refuses_with_reasons() -> None:
    assert admit(_ref(), 100) == _ref()
    with pytest.raises(InvalidInputError, match="empty"):
        admit(_ref(size=0), 100)
    with pytest.raises(InputTooLargeError, match="--max_file_bytes=100"):
        admit(_ref(size=101), 100)
    with pytest.raises(UnsupportedFormatError, match="neither DICOM"):
        admit(_ref(kind="unknown"), 100)


def test_writers_produce_contract_files(tmp_path: Path) -> None:
    audit = [
        AuditRecord("b" * 64, "dicom", "ok", ("dicom/1/2/3.dcm",), {"removed": 3}),
        DeadLetterRecord("a" * 64, "invalid_input", "truncated").to_audit(),
    ]
    dead = [DeadLetterRecord("a" * 64, "invalid_input", "truncated")]
    linkage = [("uid", "1.2.3", "2.25.9"), ("uid", "1.2.3", "2.25.9"), ("patient_id", "MRN,1", "ABC")]
    with _pipeline() as p:
        records = {
            "audit": p | "A" >> beam.Create(audit),
            "dead_letter": p | "D" >> beam.Create(dead),
            "linkage": p | "L" >> beam.Create(linkage),
        }
        _ = records | WriteRecords(str(tmp_path), "r1", str(tmp_path / "link"))

    audit_lines = [
        json.loads(line) for f in (tmp_path / "audit").glob("*.jsonl") for line in f.read_text().splitlines()
    ]
    assert [r["input_sha256"][0] for r in audit_lines] == ["a", "b"]  # sorted, one line each
    assert audit_lines[0]["status"] == "dead_letter" and audit_lines[1]["outputs"] == ["dicom/1/2/3.dcm"]
    (dead_file,) = (tmp_path / "dead_letter").glob("*.jsonl")
    assert json.loads(dead_file.read_text())["error_kind"] == "invalid_input"
    assert (tmp_path / "link" / "uid_mapping.csv").read_text().splitlines() == ["id_old,id_new", "1.2.3,2.25.9"]
    assert (tmp_path / "link" / "patient_id_mapping.csv").read_text().splitlines() == ["id_old,id_new", '"MRN,1",ABC']


def test_writers_write_every_file_when_there_are_no_records(tmp_path: Path) -> None:
    (tmp_path / "audit").mkdir()
    earlier = tmp_path / "audit" / "audit-r0.jsonl"
    earlier.write_text("a line of an earlier run\n")
    with _pipeline() as p:
        empty = {name: p | f"No_{name}" >> beam.Create([]) for name in ("audit", "dead_letter", "linkage")}
        _ = empty | WriteRecords(str(tmp_path), "r1", str(tmp_path / "link"))
    assert earlier.read_text() == "a line of an earlier run\n"  # records are only ever added
    assert (tmp_path / "audit" / "audit-r1.jsonl").read_bytes() == b""
    assert (tmp_path / "dead_letter" / "dead_letter-r1.jsonl").read_bytes() == b""
    assert (tmp_path / "link" / "uid_mapping.csv").read_text() == "id_old,id_new\n"
    assert (tmp_path / "link" / "patient_id_mapping.csv").read_text() == "id_old,id_new\n"
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and ".tmp" in p.parts]


def test_atomic_write_survives_its_directory_being_removed_between_runs(tmp_path: Path) -> None:
    import shutil

    from transforms.files import write_atomically

    write_atomically(str(tmp_path / "out"), "dicom/1/2/3.dcm", b"first")
    shutil.rmtree(tmp_path / "out")
    write_atomically(str(tmp_path / "out"), "dicom/1/2/3.dcm", b"second")
    assert (tmp_path / "out" / "dicom" / "1" / "2" / "3.dcm").read_bytes() == b"second"
    write_atomically(str(tmp_path / "out"), "dicom/1/2/3.dcm", b"third")  # replaces in place
    assert (tmp_path / "out" / "dicom" / "1" / "2" / "3.dcm").read_bytes() == b"third"
    assert not list((tmp_path / "out" / ".tmp").iterdir())
