"""Write OUTPUT/qa/index.html (`--qa_report`) from the audit records and the branches' QaEntries."""

from __future__ import annotations

from typing import Any

import apache_beam as beam

from deid.qa.report import QaEntry, build_report, summary_from_audit
from transforms.files import write_atomically

QA_TAG = "qa"
REPORT_RELPATH = "qa/index.html"


def write_report(output: str, records: list[Any], entries: list[QaEntry]) -> str:
    """Build the page from every audit record and entry and write it atomically; returns its relpath."""
    summary = summary_from_audit(records, entries)
    page = build_report(entries, summary, records)
    return write_atomically(output, REPORT_RELPATH, page.encode("utf-8"))


class WriteQaReport(beam.PTransform):
    """(audit: PCollection[AuditRecord], entries: PCollection[QaEntry]) -> OUTPUT/qa/index.html.

    One page for the run: everything is gathered on one worker (entries hold only small PNG
    thumbnails, a few kilobytes each).
    """

    def __init__(self, output: str) -> None:
        super().__init__()
        self._output = output

    def expand(self, pcolls: tuple[beam.PCollection, beam.PCollection]) -> beam.PCollection:
        audit, entries = pcolls
        all_entries = entries | "EntriesToList" >> beam.combiners.ToList()
        output = self._output
        return (
            audit
            | "AuditToList" >> beam.combiners.ToList()
            | "WriteReport"
            >> beam.Map(
                lambda records, es: write_report(output, records, es),
                es=beam.pvalue.AsSingleton(all_entries),
            )
        )
