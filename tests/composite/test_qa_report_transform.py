"""The QA report transform (WriteQaReport) on an in-process Beam pipeline."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from tests.support.env import BEAM_TEST_ARGS
from tests.support.qa_pages import dead_letter_records, entries_and_audit
from transforms.qa import WriteQaReport


def test_write_qa_report_transform(tmp_path: Path) -> None:
    entries, audit = entries_and_audit()
    with beam.Pipeline(options=PipelineOptions(BEAM_TEST_ARGS)) as p:
        records = p | "Audit" >> beam.Create(audit)
        qa = p | "Qa" >> beam.Create(entries)
        dead = p | "DeadLetters" >> beam.Create(dead_letter_records())
        _ = (records, qa, dead) | WriteQaReport(str(tmp_path))
    page = (tmp_path / "qa" / "index.html").read_text()
    assert 'id="sum-inputs" data-value="4"' in page
    assert page.count("data:image/png;base64,") == 4
    assert page.count('class="dead-letter-reason"') == 2 and "(truncated)" in page
