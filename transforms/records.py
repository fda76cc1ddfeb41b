"""Write audit, dead-letter and linkage records under OUTPUT (CONTRACTS.md layout)."""

from __future__ import annotations

import csv
import io

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from deid.records import AuditRecord, DeadLetterRecord


def _csv_row(old: str, new: str) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow([old, new])
    return buffer.getvalue()


class WriteJsonLines(beam.PTransform):
    """PCollection[AuditRecord | DeadLetterRecord] -> OUTPUT/<folder>/<folder>-00000-of-00001.jsonl.

    One shard, lines sorted by input_sha256: re-running with the same key overwrites the same file with the same
    content instead of leaving stale shards beside new ones.
    """

    def __init__(self, output: str, folder: str) -> None:
        super().__init__()
        self._prefix = FileSystems.join(output, folder, folder)

    def expand(self, records: beam.PCollection) -> beam.pvalue.PDone:
        return (
            records
            | "ToJson" >> beam.Map(lambda r: (r.input_sha256, r.to_json()))
            | "Sort" >> _SortedLines()
            | "DropKey" >> beam.Map(lambda keyed: keyed[1])
            | "Write" >> beam.io.WriteToText(self._prefix, file_name_suffix=".jsonl", num_shards=1)
        )


class _SortedLines(beam.PTransform):
    """Global sort of small records (audit lines are a few hundred bytes per input).

    One list in one worker: fine for millions of inputs, the price of byte-identical re-runs.
    """

    def expand(self, lines: beam.PCollection) -> beam.PCollection:
        return lines | beam.combiners.ToList() | beam.FlatMap(sorted)


class WriteLinkage(beam.PTransform):
    """PCollection[(table, id_old, id_new)] -> PREFIX/uid_mapping.csv and PREFIX/patient_id_mapping.csv."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self._prefix = prefix

    def expand(self, rows: beam.PCollection) -> None:
        unique = rows | "Distinct" >> beam.Distinct()
        for table in ("uid", "patient_id"):
            (
                unique
                | f"Only_{table}" >> beam.Filter(lambda row, t=table: row[0] == t)
                | f"Csv_{table}" >> beam.Map(lambda row: _csv_row(row[1], row[2]))
                | f"Sort_{table}" >> _SortedLines()
                | f"Write_{table}"
                >> beam.io.WriteToText(
                    FileSystems.join(self._prefix, f"{table}_mapping"),
                    file_name_suffix=".csv",
                    shard_name_template="",
                    num_shards=1,
                    header="id_old,id_new",
                )
            )


def dead_letter_audit(record: DeadLetterRecord) -> AuditRecord:
    return record.to_audit()
