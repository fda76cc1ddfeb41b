"""The Cloud Healthcare API branch: store DICOM into the source store, de-identify it with
`dicomStores.deidentify` into the destination store, wait for the operation, optionally export.

Steps:
  1. Store: each InputRef (DICOM inputs, and WSI outputs converted to DICOM when that format is
     requested) is read and sent by STOW-RS to the source store; an instance the store already holds
     (409) counts as stored, so a re-run does not fail.
  2. Gather: a global barrier, so the operation starts only after every store has finished.
  3. Deidentify: one `:deidentify` call, then `operations.get` polled with exponential backoff and
     jitter. Its counters and logs URL go into the audit. The API reports failures as a count (the
     per-instance errors are in Cloud Logging), so each failed instance becomes one dead-letter
     record carrying the operation name and logs URL; an operation that fails outright sends every
     input to dead letter. Nothing is dropped: stored = success + failure.
  4. Export (optional): `dicomStores.export` of the destination store to a gs:// prefix.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import PBegin

from deid.classify import WSI_OUTPUT_SUBTYPE, InputRef
from deid.cloud.dicomweb import DicomwebError, store_bytes
from deid.cloud.healthcare import HealthcareApiError, HealthcareClient, HealthcareSettings, OperationResult
from deid.records import AuditRecord, DeadLetterRecord
from deid.settings import Limits
from transforms.common import METRICS_NAMESPACE, DeidOutputs, ToDeadLetters, audit_ok
from transforms.files import read_all

FAILED_KIND = "healthcare_instance_failed"
OPERATION_KIND = "healthcare_api"


def store_hash(store: str) -> str:
    """The input_sha256 of records about a whole store (the resource name, never instance data)."""
    return hashlib.sha256(store.encode()).hexdigest()


class _StoreFn(beam.DoFn):
    """InputRef -> InputRef, once its instance is in the source store (STOW-RS)."""

    def __init__(self, settings: HealthcareSettings, limits: Limits) -> None:
        self._settings = settings
        self._limits = limits
        self._client: HealthcareClient | None = None
        self._dicomweb: Any = None

    def setup(self) -> None:
        self._client = HealthcareClient.for_settings(self._settings)
        self._dicomweb = self._client.dicomweb(self._settings.source_store)

    def process(self, ref: InputRef) -> Iterable[InputRef]:

        data = read_all(ref.path, self._limits.max_file_bytes)
        try:
            store_bytes(self._dicomweb, [data], "STOW-RS into the Healthcare source store")
        except DicomwebError as exc:
            if exc.status != HTTPStatus.CONFLICT:
                raise
            Metrics.counter(METRICS_NAMESPACE, "healthcare_already_stored").inc()
        Metrics.counter(METRICS_NAMESPACE, "healthcare_stored").inc()
        yield ref


class _DeidentifyStoreFn(beam.DoFn):
    """list[InputRef] (everything stored; one element) -> AuditRecord; DeadLetterRecord to 'failed'."""

    def __init__(self, settings: HealthcareSettings) -> None:
        self._settings = settings
        self._client: HealthcareClient | None = None

    def setup(self) -> None:
        self._client = HealthcareClient.for_settings(self._settings)

    def process(self, stored: list[InputRef]) -> Iterable[object]:
        assert self._client is not None
        settings = self._settings
        try:
            result = self._client.run_operation(self._client.deidentify(settings), settings)
        except HealthcareApiError as exc:
            Metrics.counter(METRICS_NAMESPACE, f"dead_letter_{OPERATION_KIND}").inc(len(stored) + 1)
            for ref in stored:
                yield beam.pvalue.TaggedOutput(
                    "failed", DeadLetterRecord(ref.sha256, OPERATION_KIND, str(exc), "dicom")
                )
            yield beam.pvalue.TaggedOutput(
                "failed", DeadLetterRecord(store_hash(settings.source_store), OPERATION_KIND, str(exc), "dicom")
            )
            return
        details = result.audit_details()
        if settings.export_output:
            details.update(self._export())
        Metrics.counter(METRICS_NAMESPACE, "healthcare_success").inc(result.success)
        Metrics.counter(METRICS_NAMESPACE, "healthcare_failure").inc(result.failure)
        yield from self._failures(result)
        yield AuditRecord(
            input_sha256=store_hash(settings.source_store),
            kind="dicom",
            status="ok",
            outputs=(settings.destination_store,),
            actions={"healthcare_deidentified": result.success},
            details={"scope": "store", **details},
        )
        for ref in stored:
            if ref.subtype == WSI_OUTPUT_SUBTYPE:
                continue  # an instance written from a slide: the slide has its own audit record
            yield audit_ok(ref, [settings.destination_store], {"healthcare_stored": 1}, scope="instance", **details)

    def _failures(self, result: OperationResult) -> Iterable[object]:
        total = result.success + result.failure
        where = f"; per-instance errors: {result.logs_url}" if result.logs_url else ""
        for index in range(result.failure):
            message = (
                f"the Healthcare API could not de-identify instance {index + 1} of {result.failure} failed "
                f"({total} in all) in operation {result.name}{where}"
            )
            yield beam.pvalue.TaggedOutput("failed", DeadLetterRecord("", FAILED_KIND, message, "dicom"))
        if result.failure:
            Metrics.counter(METRICS_NAMESPACE, f"dead_letter_{FAILED_KIND}").inc(result.failure)

    def _export(self) -> dict[str, object]:
        assert self._client is not None
        settings = self._settings
        assert settings.export_output
        export = self._client.run_operation(
            self._client.export_to_gcs(settings.destination_store, settings.export_output), settings
        )
        return {"export_operation": export.name, "export_output": settings.export_output, "exported": export.success}


class HealthcareDeidentify(beam.PTransform):
    """PCollection[InputRef] of DICOM files to store first (may be empty), or the pipeline root when
    the source store already holds the studies -> DeidOutputs(audit, dead_letters, linkage).

    audit: one AuditRecord per stored input (scope 'instance') and one for the store (scope 'store'),
        each with the operation name, success/failure counters and logs URL in `details`.
    dead_letters: inputs that could not be stored, one record per instance the API failed, and every
        input when the operation failed outright.
    linkage: always empty (the API does not return its UID mapping).
    """

    def __init__(self, settings: HealthcareSettings, limits: Limits | None = None) -> None:
        super().__init__()
        self._settings = settings
        self._limits = limits or Limits()

    def expand(self, refs_or_root: beam.PCollection | PBegin) -> DeidOutputs:
        root = refs_or_root if isinstance(refs_or_root, PBegin) else refs_or_root.pipeline
        refs = root | "NoInputs" >> beam.Create([]) if isinstance(refs_or_root, PBegin) else refs_or_root
        stored = refs | "Store" >> beam.ParDo(_StoreFn(self._settings, self._limits)).with_exception_handling(
            main_tag="stored", dead_letter_tag="refused"
        )
        results = (
            stored["stored"]
            | "Gather" >> beam.combiners.ToList()
            | "Deidentify" >> beam.ParDo(_DeidentifyStoreFn(self._settings)).with_outputs("failed", main="audit")
        )
        dead = (
            results["failed"],
            stored["refused"] | "StoreFailures" >> ToDeadLetters(),
        ) | "DeadLetters" >> beam.Flatten()
        return DeidOutputs(audit=results["audit"], dead_letters=dead, linkage=root | "NoLinkage" >> beam.Create([]))
