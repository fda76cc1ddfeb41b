"""Write OUTPUT/qa/index.html (`--qa_report`) from the audit records and the branches' QaEntries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import apache_beam as beam

from deid.qa.report import QaEntry, build_report, summary_from_audit
from transforms.files import write_atomically

QA_TAG = "qa"
REPORT_RELPATH = "qa/index.html"


def write_report(output: str, records: list[Any], entries: list[QaEntry], dead_letters: Sequence[Any] = ()) -> str:
    """Build the page from every audit record, entry and dead letter and write it atomically; returns its relpath."""
    summary = summary_from_audit(records, entries)
    page = build_report(entries, summary, records, dead_letters)
    return write_atomically(output, REPORT_RELPATH, page.encode("utf-8"))


class WriteQaReport(beam.PTransform):
    """(audit: PCollection[AuditRecord], entries: PCollection[QaEntry][, dead_letters:
    PCollection[DeadLetterRecord]]) -> OUTPUT/qa/index.html.

    One page for the run: everything is gathered on one worker (entries hold only small PNG
    thumbnails, a few kilobytes each; dead letters a kind and a one-line message). The dead letters
    give the page each dead-lettered input's reason.
    """

    def __init__(self, output: str) -> None:
        super().__init__()
        self._output = output

    def expand(self, pcolls: tuple[beam.PCollection, ...]) -> beam.PCollection:
        audit, entries = pcolls[0], pcolls[1]
        all_entries = entries | "EntriesToList" >> beam.combiners.ToList()
        dead = pcolls[2] if len(pcolls) > 2 else audit.pipeline | "NoDeadLetters" >> beam.Create([])
        all_dead = dead | "DeadLettersToList" >> beam.combiners.ToList()
        output = self._output
        return (
            audit
            | "AuditToList" >> beam.combiners.ToList()
            | "WriteReport"
            >> beam.Map(
                lambda records, es, ds: write_report(output, records, es, ds),
                es=beam.pvalue.AsSingleton(all_entries),
                ds=beam.pvalue.AsSingleton(all_dead),
            )
        )
