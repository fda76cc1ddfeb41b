"""The local, embedded DICOM de-identification branch."""

from __future__ import annotations

import time
from collections.abc import Iterable

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput

from deid.classify import InputRef
from deid.dicom.deidentify import deidentify, mark_pixel_data_cleaned, output_relpath, read_for_profile, write_dicom
from deid.dicom.pixels import redact_dicom_pixels
from deid.errors import LeakDetectedError
from deid.keys import DeidKey
from deid.qa.report import QaEntry, after_thumbnail, before_thumbnail, first_frame
from deid.settings import RunSettings
from deid.verify.leaks import (
    harvest_dicom,
    harvest_path,
    harvest_private_texts,
    quarantine_relpath,
    scan_output,
    summarize,
)
from transforms._io import read_all, write_atomically
from transforms.common import (
    LINKAGE,
    METRICS_NAMESPACE,
    DeidOutputs,
    ToDeadLetters,
    audit_ok,
    count_actions,
    linkage_rows,
    load_run_key,
    pixel_redaction_config,
)
from transforms.qa import QA_TAG


class _DeidentifyDicomFn(beam.DoFn):
    """InputRef (kind 'dicom') -> AuditRecord; (table, old, new) to the 'linkage' output.

    Reads the whole instance (bounded by --max_file_bytes), de-identifies it with the embedded
    profile, redacts burned-in pixels when configured, and writes it atomically under OUTPUT.
    """

    def __init__(self, settings: RunSettings) -> None:
        self._settings = settings
        self._key: DeidKey | None = None

    def setup(self) -> None:
        self._key = load_run_key(self._settings)

    def process(self, ref: InputRef) -> Iterable[object]:
        assert self._key is not None
        settings = self._settings
        clock = _StageClock()
        data = read_all(ref.path, settings.limits.max_file_bytes)
        dataset, stripped = read_for_profile(data, settings.limits, settings.profile)
        del data
        # Identifying values stay in this worker's memory; they are only used to search the output.
        values = (
            harvest_dicom(dataset, settings.profile)
            | harvest_private_texts(stripped.texts)
            | harvest_path(ref.path, settings.input_root)
        )
        before = before_thumbnail_of(dataset) if settings.qa_report else None
        clock.lap("read")
        result = deidentify(dataset, settings.profile, self._key, stripped)
        actions = dict(result.actions)
        details: dict[str, object] = {}
        out = result.dataset
        if result.needs_pixel_redaction:
            out, pixel_counts = redact_dicom_pixels(out, pixel_redaction_config(settings, ref))
            if settings.wsi.redact_text != "off":
                # Only a text search over every frame justifies BurnedInAnnotation NO; user boxes alone do not.
                mark_pixel_data_cleaned(out)
            actions.update({f"pixels_{k}": v for k, v in pixel_counts.items()})
            details["transfer_syntax"] = str(out.file_meta.TransferSyntaxUID)
        payload = write_dicom(out)
        relpath = output_relpath(out)
        clock.lap("deidentify")
        hits = scan_output(payload, relpath, values | result.phi_values)
        clock.lap("verify")
        if hits:
            write_atomically(settings.output, quarantine_relpath(ref.sha256, relpath), payload)
            Metrics.counter(METRICS_NAMESPACE, "outputs_quarantined").inc()
            raise LeakDetectedError(summarize(hits))
        write_atomically(settings.output, relpath, payload)
        clock.lap("write")
        count_actions(actions)
        if settings.linkage:
            yield from linkage_rows(result.uid_map, result.patient_id_map)
        if settings.qa_report:
            frame = first_frame(out)
            yield TaggedOutput(
                QA_TAG,
                QaEntry(
                    input_sha256=ref.sha256,
                    kind="dicom",
                    before_png=before,
                    after_png=after_thumbnail(frame) if frame is not None else None,
                    boxes=actions.get("pixels_boxes_redacted", 0),
                    stage_seconds=clock.seconds,
                ),
            )
        yield audit_ok(ref, [relpath], actions, **details)


class _StageClock:
    """Wall time per stage of one element, for the QA report's chart (never written to the audit)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._last
        self._last = now


def before_thumbnail_of(dataset: object) -> bytes | None:
    frame = first_frame(dataset)
    return before_thumbnail(frame) if frame is not None else None


class DeidentifyDicom(beam.PTransform):
    """PCollection[InputRef] of DICOM instances -> DeidOutputs(audit, dead_letters, linkage)."""

    def __init__(self, settings: RunSettings) -> None:
        super().__init__()
        self._settings = settings

    def expand(self, refs: beam.PCollection) -> DeidOutputs:
        results = refs | "Deidentify" >> beam.ParDo(_DeidentifyDicomFn(self._settings)).with_outputs(
            LINKAGE, QA_TAG, main="audit"
        ).with_exception_handling(main_tag="audit", dead_letter_tag="failed")
        return DeidOutputs(
            audit=results["audit"],
            dead_letters=results["failed"] | "DeadLetters" >> ToDeadLetters(),
            linkage=results[LINKAGE],
            qa=results[QA_TAG],
        )
