"""DICOM instances through the embedded profile: one DoFn for every source and sink.

Sources: local files (--input) and a DICOMweb server (--dicomweb_source). Sinks: OUTPUT and a
DICOMweb server (--dicomweb_destination). Whatever the pair, each instance goes through
deid.dicom.instance.deidentify_instance, and a result whose leak check found an input value is
written under OUTPUT/quarantine/ and dead-lettered `leak`: it is never published nor stored.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput

from deid.classify import InputRef
from deid.cloud.dicomweb import InstanceKey, make_client, retrieve_bytes, store_bytes
from deid.cloud.retry import Backoff
from deid.dicom.instance import InstanceResult, InstanceSource, deidentify_instance
from deid.errors import LeakDetectedError
from deid.keys import DeidKey
from deid.qa.report import QaEntry
from deid.settings import RunSettings
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
)
from transforms.qa import QA_TAG

# Audit `outputs` entries of instances stored on a DICOMweb destination: 'dicomweb:<relpath>'.
DICOMWEB_OUTPUT_PREFIX = "dicomweb:"


class _DeidentifyInstanceFn(beam.DoFn):
    """(InputRef, InstanceKey | None) -> AuditRecord; (table, old, new) to 'linkage'; QaEntry to 'qa'.

    With an InstanceKey the instance is fetched by WADO-RS from the source server, else read from
    ref.path (bounded by --max_file_bytes). The result is written atomically under OUTPUT, or stored
    by STOW-RS on the destination server when one is given.
    """

    def __init__(
        self,
        settings: RunSettings,
        source_url: str | None = None,
        destination_url: str | None = None,
        retry: Backoff | None = None,
    ) -> None:
        self._settings = settings
        self._source_url = source_url
        self._destination_url = destination_url
        self._retry = retry
        self._key: DeidKey | None = None
        self._source: Any = None
        self._destination: Any = None

    def setup(self) -> None:
        self._key = load_run_key(self._settings)
        if self._source_url:
            self._source = make_client(self._source_url, retry=self._retry)
        if self._destination_url:
            self._destination = make_client(self._destination_url, retry=self._retry)

    def process(self, element: tuple[InputRef, InstanceKey | None]) -> Iterable[object]:
        assert self._key is not None
        ref, instance = element
        settings = self._settings
        if instance is not None:
            data = retrieve_bytes(self._source, instance)
            ref = InputRef(ref.path, len(data), hashlib.sha256(data).hexdigest(), "dicom", "dicom")
            source = InstanceSource(sha256=ref.sha256)
        else:
            data = read_all(ref.path, settings.limits.max_file_bytes)
            source = InstanceSource(sha256=ref.sha256, path=ref.path)
        result = deidentify_instance(data, settings, self._key, source)
        del data
        if result.leaked:
            # Kept for inspection only; the input is dead-lettered and nothing is published or stored.
            write_atomically(settings.output, result.quarantine_relpath(ref.sha256), result.payload)
            Metrics.counter(METRICS_NAMESPACE, "outputs_quarantined").inc()
            raise LeakDetectedError(result.leak_summary())
        started = time.perf_counter()
        output = self._publish(result)
        count_actions(result.actions)
        if settings.linkage:
            yield from linkage_rows(result.uid_map, result.patient_id_map)
        if result.qa is not None:
            stages = {**result.qa.stage_seconds, "write": time.perf_counter() - started}
            yield TaggedOutput(
                QA_TAG,
                QaEntry(
                    input_sha256=ref.sha256,
                    kind="dicom",
                    before_png=result.qa.before_png,
                    after_png=result.qa.after_png,
                    boxes=result.qa.boxes,
                    stage_seconds=stages,
                ),
            )
        details = dict(result.details)
        if self._source_url or self._destination_url:
            details["source"] = "dicomweb" if instance is not None else "input"
        yield audit_ok(ref, [output], result.actions, **details)

    def _publish(self, result: InstanceResult) -> str:
        if self._destination is not None:
            store_bytes(self._destination, [result.payload], "STOW-RS into the destination server")
            return DICOMWEB_OUTPUT_PREFIX + result.relpath
        return write_atomically(self._settings.output, result.relpath, result.payload)


def deidentify_instances(
    elements: beam.PCollection,
    settings: RunSettings,
    source_url: str | None = None,
    destination_url: str | None = None,
    retry: Backoff | None = None,
) -> DeidOutputs:
    """PCollection[(InputRef, InstanceKey | None)] -> DeidOutputs; shared by DeidentifyDicom and
    transforms.dicomweb.DicomwebDeidentify so that both run the same DoFn."""
    results = elements | "Deidentify" >> beam.ParDo(
        _DeidentifyInstanceFn(settings, source_url, destination_url, retry)
    ).with_outputs(LINKAGE, QA_TAG, main="audit").with_exception_handling(main_tag="audit", dead_letter_tag="failed")
    return DeidOutputs(
        audit=results["audit"],
        dead_letters=results["failed"] | "DeadLetters" >> ToDeadLetters(),
        linkage=results[LINKAGE],
        qa=results[QA_TAG],
    )


class DeidentifyDicom(beam.PTransform):
    """PCollection[InputRef] of DICOM instances -> DeidOutputs(audit, dead_letters, linkage, qa),
    written under settings.output."""

    def __init__(self, settings: RunSettings) -> None:
        super().__init__()
        self._settings = settings

    def expand(self, refs: beam.PCollection) -> DeidOutputs:
        elements = refs | "FromFiles" >> beam.Map(_from_file)
        return deidentify_instances(elements, self._settings)


def _from_file(ref: InputRef) -> tuple[InputRef, InstanceKey | None]:
    return ref, None
