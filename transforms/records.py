"""Write audit, dead-letter and linkage records under OUTPUT (CONTRACTS.md layout)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass

import apache_beam as beam

from deid.records import AuditRecord, DeadLetterRecord
from transforms.common import fail_if_out_of_space
from transforms.files import records_present, write_record

# Each run writes its own record files, named by its run id, and never touches another run's.
AUDIT_RELPATH = "audit/audit-{run_id}.jsonl"
DEAD_LETTER_RELPATH = "dead_letter/dead_letter-{run_id}.jsonl"
LINKAGE_TABLES = ("uid", "patient_id")
LINKAGE_HEADER = "id_old,id_new"


@dataclass(frozen=True)
class RecordFile:
    """One output file of records: ROOT/relpath, lines sorted, optionally a header and no duplicates."""

    root: str
    relpath: str
    header: str | None = None
    distinct: bool = False


def record_files(output: str, linkage_prefix: str | None, run_id: str) -> dict[str, RecordFile]:
    """The files of a run by name: 'audit', 'dead_letter' and, with a linkage prefix, one per table."""
    files = {
        "audit": RecordFile(output, AUDIT_RELPATH.format(run_id=run_id)),
        "dead_letter": RecordFile(output, DEAD_LETTER_RELPATH.format(run_id=run_id)),
    }
    if linkage_prefix:
        for table in LINKAGE_TABLES:
            files[table] = RecordFile(linkage_prefix, linkage_relpath(table), header=LINKAGE_HEADER, distinct=True)
    return files


def linkage_relpath(table: str) -> str:
    return f"{table}_mapping.csv"


def _csv_row(old: str, new: str) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow([old, new])
    return buffer.getvalue()


def _json_line(record: AuditRecord | DeadLetterRecord, name: str) -> tuple[str, tuple[str, str]]:
    fail_if_out_of_space(record.error_kind)  # from a branch that made its own dead letter
    return name, (record.input_sha256, record.to_json())


def _linkage_line(row: tuple[str, str, str]) -> tuple[str, tuple[str, str]]:
    table, old, new = row
    return table, ("", _csv_row(old, new))


def file_body(spec: RecordFile, lines: Iterable[tuple[str, str] | None]) -> bytes:
    """Sorted (sort key, line) pairs, one per line; None entries (the seeds) are skipped."""
    items = [item for item in lines if item is not None]
    ordered = sorted(set(items)) if spec.distinct else sorted(items)
    text = "".join(f"{line}\n" for _, line in ordered)
    if spec.header is not None:
        text = f"{spec.header}\n{text}"
    return text.encode("utf-8")


def _write_file(item: tuple[str, Iterable[tuple[str, str] | None]], files: dict[str, RecordFile]) -> str:
    name, lines = item
    spec = files[name]
    return write_record(spec.root, spec.relpath, file_body(spec, lines))


def linkage_tables_present(linkage_prefix: str) -> list[str]:
    """The linkage tables an object-store --linkage_output already holds: they are never replaced
    there, so the launcher refuses such a prefix before the run."""
    return records_present(linkage_prefix, [linkage_relpath(table) for table in LINKAGE_TABLES])


class WriteRecords(beam.PTransform):
    """{'audit': PCollection[AuditRecord], 'dead_letter': PCollection[DeadLetterRecord],
    'linkage': PCollection[(table, id_old, id_new)] (only with a linkage prefix)} -> the record files.

    Every file is written whole, atomically, with its lines sorted (audit and dead letters by
    input_sha256), so that a re-run with the same key writes the same bytes under its own run id;
    empty files are written too. Linkage tables keep the fixed names of the MIDI-B format. All files
    go through one GroupByKey: each is gathered on one worker, a few hundred bytes per input, fine
    for millions of inputs. Returns PCollection[str] of the relpaths written.
    """

    def __init__(self, output: str, run_id: str, linkage_prefix: str | None = None) -> None:
        super().__init__()
        self._files = record_files(output, linkage_prefix, run_id)

    def expand(self, pcolls: dict[str, beam.PCollection]) -> beam.PCollection:
        files = self._files
        keyed = [
            pcolls["audit"] | "KeyAudit" >> beam.Map(_json_line, "audit"),
            pcolls["dead_letter"] | "KeyDeadLetters" >> beam.Map(_json_line, "dead_letter"),
        ]
        if "uid" in files:
            keyed.append(pcolls["linkage"] | "KeyLinkage" >> beam.Map(_linkage_line))
        # One None per file, so that a file with no records is still written (empty, or just a header).
        seeds = pcolls["audit"].pipeline | "EveryFile" >> beam.Create([(name, None) for name in files])
        return (
            [*keyed, seeds]
            | "AllLines" >> beam.Flatten()
            | "ByFile" >> beam.GroupByKey()
            | "WriteFiles" >> beam.Map(_write_file, files)
        )


def dead_letter_audit(record: DeadLetterRecord) -> AuditRecord:
    return record.to_audit()
