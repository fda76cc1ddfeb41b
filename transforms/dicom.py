"""DICOM instances through the embedded profile: one DoFn for every source and sink.

Sources: local files (--input) and a DICOMweb server (--dicomweb_source). Sinks: OUTPUT and a
DICOMweb server (--dicomweb_destination). Whatever the pair, each instance goes through
deid.dicom.instance.deidentify_instance, and a result whose leak check found an input value is
written under OUTPUT/quarantine/ and dead-lettered `leak`: it is never published nor stored.

Two inputs never share an output: de-identified instances are staged under OUTPUT/.tmp/, grouped
by output path, and published once per path. When several inputs land on one path (the same
SOPInstanceUID), the one with the smallest input_sha256 is published; an input whose output bytes
are identical to it is audited `ok` with `duplicate_of`, one whose bytes differ is dead-lettered
`uid_conflict`. The rule depends only on the inputs, so every run decides the same way.

An instance the recipe holds for review (`InstanceResult.review`: a text candidate below
--review_threshold, or the keyed sample of --review_sample_rate) is never staged nor published: it
is written under OUTPUT/review/<input_sha256>/ (transforms/review.py) and audited `needs_review`;
`python -m pipeline.review` publishes, redacts further or rejects it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput

from deid.classify import InputRef
from deid.cloud.dicomweb import InstanceKey, make_client, retrieve_bytes, store_bytes
from deid.cloud.healthcare import SessionFactory
from deid.cloud.retry import Backoff
from deid.dicom.instance import InstanceSource, deidentify_instance
from deid.errors import DeidError, LeakDetectedError, UidConflictError, safe_message_for
from deid.keys import DeidKey
from deid.qa.report import QaEntry
from deid.records import DeadLetterRecord
from deid.review.held import profile_record
from deid.settings import RunSettings
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
from transforms.files import (
    discard_staged,
    publish_staged,
    read_all,
    read_staged,
    stage_bytes,
    write_atomically,
)
from transforms.progress import tap_outcomes
from transforms.qa import QA_TAG
from transforms.review import held_audit, held_input, hold_bytes

# Audit `outputs` entries of instances stored on a DICOMweb destination: 'dicomweb:<relpath>'.
DICOMWEB_OUTPUT_PREFIX = "dicomweb:"
FAILED = "failed"
# Dead-letter records the deidentify DoFn makes itself (instances read from a DICOMweb source).
REFUSED = "refused"
# Audit records of instances held for review (never staged, never published).
HELD = "held"


class _DeidentifyInstanceFn(beam.DoFn):
    """(InputRef, InstanceKey | None) -> (relpath, _Staged); (table, old, new) to 'linkage'; QaEntry to 'qa';
    the `needs_review` AuditRecord of an instance held for review to 'held'.

    With an InstanceKey the instance is fetched by WADO-RS from the source server, else read from
    ref.path (bounded by --max_file_bytes). The result is staged under OUTPUT/.tmp/ for _PublishFn,
    which writes it into place or stores it by STOW-RS on the destination server.
    """

    def __init__(
        self,
        settings: RunSettings,
        source_url: str | None = None,
        destination_url: str | None = None,
        retry: Backoff | None = None,
        session: SessionFactory | None = None,
    ) -> None:
        self._settings = settings
        self._source_url = source_url
        self._destination_url = destination_url
        self._retry = retry
        self._session = session
        self._key: DeidKey | None = None
        self._source: Any = None

    def setup(self) -> None:
        self._key = load_run_key(self._settings)
        if self._source_url:
            session = self._session() if self._session else None
            self._source = make_client(self._source_url, session=session, retry=self._retry)

    def process(self, element: tuple[InputRef, InstanceKey | None]) -> Iterable[object]:
        ref, instance = element
        if instance is None:
            data = read_all(ref.path, self._settings.limits.max_file_bytes)
            yield from self._deidentify(ref, data, InstanceSource(sha256=ref.sha256, path=ref.path), False)
            return
        data = retrieve_bytes(self._source, instance)
        # From here on the input is known by its bytes: its dead letter names their hash, like its
        # quarantine folder, not the hash of its address that `ref` carried until now.
        ref = InputRef(ref.path, len(data), hashlib.sha256(data).hexdigest(), "dicom", "dicom")
        try:
            yield from self._deidentify(ref, data, InstanceSource(sha256=ref.sha256), True)
        except Exception as exc:  # noqa: BLE001 - every failure becomes this input's dead letter
            error_kind, message = safe_message_for(type(exc), repr(exc))
            Metrics.counter(METRICS_NAMESPACE, f"dead_letter_{error_kind}").inc()
            yield TaggedOutput(REFUSED, DeadLetterRecord(ref.sha256, error_kind, message, ref.kind))

    def _deidentify(self, ref: InputRef, data: bytes, source: InstanceSource, remote: bool) -> Iterable[object]:
        assert self._key is not None
        settings = self._settings
        result = deidentify_instance(data, settings, self._key, source)
        del data
        if result.leaked:
            # Kept for inspection only; the input is dead-lettered and nothing is published or stored.
            write_atomically(settings.output, result.quarantine_relpath(ref.sha256), result.payload)
            Metrics.counter(METRICS_NAMESPACE, "outputs_quarantined").inc()
            raise LeakDetectedError(result.leak_summary())
        started = time.perf_counter()
        held = None
        if result.review is not None:
            review = result.review
            held = held_input(
                ref,
                review.reason,
                review.threshold,
                settings.run_id,
                [result.relpath],
                profile_record(settings.profile),
                candidates=review.candidates,
                previews=tuple(p for p, _ in review.previews),
                actions=result.actions,
                details=result.details,
                destination="dicomweb" if self._destination_url else "",
                image_size=review.image_size,
                frames=review.frames,
            )
            hold_bytes(settings.output, held, {result.relpath: result.payload}, review.previews)
            Metrics.counter(METRICS_NAMESPACE, f"held_for_review_{review.reason}").inc()
            staging = ""
        else:
            staging = stage_bytes(settings.output, result.payload, settings.run_id)
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
        if held is not None:
            yield TaggedOutput(HELD, held_audit(held, ref.kind))
            return
        details = dict(result.details)
        if self._source_url or self._destination_url:
            details["source"] = "dicomweb" if remote else "input"
        payload_sha256 = hashlib.sha256(result.payload).hexdigest()
        yield result.relpath, _Staged(ref, staging, payload_sha256, result.actions, details)


@dataclass(frozen=True)
class _Staged:
    """One de-identified instance waiting in OUTPUT/.tmp/ for its output path to be decided."""

    ref: InputRef
    staging: str = field(repr=False)
    payload_sha256: str
    actions: dict[str, int]
    details: dict[str, object]


class _PublishFn(beam.DoFn):
    """(relpath, [_Staged, ...]) -> AuditRecord per input; DeadLetterRecord to 'failed' for refused ones."""

    def __init__(
        self, output: str, destination_url: str | None, retry: Backoff | None, session: SessionFactory | None = None
    ) -> None:
        self._output = output
        self._destination_url = destination_url
        self._retry = retry
        self._session = session
        self._destination: Any = None

    def setup(self) -> None:
        if self._destination_url:
            session = self._session() if self._session else None
            self._destination = make_client(self._destination_url, session=session, retry=self._retry)

    def process(self, group: tuple[str, Iterable[_Staged]]) -> Iterable[object]:
        relpath, staged = group
        ordered = sorted(staged, key=lambda s: (s.ref.sha256, s.payload_sha256, s.staging))
        winner, others = ordered[0], ordered[1:]
        try:
            try:
                output = self._publish(winner, relpath)
            finally:
                for other in others:
                    discard_staged(other.staging)
        except DeidError as exc:
            for item in ordered:
                yield _dead(item.ref, exc)
            return
        yield audit_ok(winner.ref, [output], winner.actions, **winner.details)
        for other in others:
            if other.payload_sha256 == winner.payload_sha256:
                Metrics.counter(METRICS_NAMESPACE, "outputs_duplicate").inc()
                yield audit_ok(other.ref, [output], other.actions, duplicate_of=winner.ref.sha256, **other.details)
            else:
                yield _dead(
                    other.ref,
                    UidConflictError(
                        f"another input (input_sha256 {winner.ref.sha256}) has the same SOPInstanceUID and "
                        "different content, and was published under the output path; check the two inputs "
                        "and de-identify this one separately"
                    ),
                )

    def _publish(self, staged: _Staged, relpath: str) -> str:
        if self._destination is not None:
            store_bytes(self._destination, [read_staged(staged.staging)], "STOW-RS into the destination server")
            discard_staged(staged.staging)
            return DICOMWEB_OUTPUT_PREFIX + relpath
        return publish_staged(staged.staging, self._output, relpath)


def _dead(ref: InputRef, exc: DeidError) -> TaggedOutput:
    Metrics.counter(METRICS_NAMESPACE, f"dead_letter_{exc.error_kind}").inc()
    return TaggedOutput(FAILED, DeadLetterRecord(ref.sha256, exc.error_kind, str(exc), ref.kind))


def deidentify_instances(
    elements: beam.PCollection,
    settings: RunSettings,
    source_url: str | None = None,
    destination_url: str | None = None,
    retry: Backoff | None = None,
    source_session: SessionFactory | None = None,
    destination_session: SessionFactory | None = None,
) -> DeidOutputs:
    """PCollection[(InputRef, InstanceKey | None)] -> DeidOutputs; shared by DeidentifyDicom,
    transforms.dicomweb.DicomwebDeidentify and the event mode (transforms/events.py) so that all run
    the same DoFns. `source_session` / `destination_session` make the requests.Session of each server
    (Google credentials for a Cloud Healthcare DICOMweb endpoint); None: a plain session."""
    results = elements | "Deidentify" >> beam.ParDo(
        _DeidentifyInstanceFn(settings, source_url, destination_url, retry, source_session)
    ).with_outputs(LINKAGE, QA_TAG, REFUSED, HELD, main="staged").with_exception_handling(
        main_tag="staged", dead_letter_tag=FAILED
    )
    published = (
        results["staged"]
        | "ByOutputPath" >> beam.GroupByKey()
        | "Publish"
        >> beam.ParDo(_PublishFn(settings.output, destination_url, retry, destination_session)).with_outputs(
            FAILED, main="audit"
        )
    )
    dead = (
        results[FAILED] | "DeadLetters" >> ToDeadLetters(),
        results[REFUSED],
        published[FAILED],
    ) | "AllDeadLetters" >> beam.Flatten()
    audit = (published["audit"], results[HELD]) | "AuditAndHeld" >> beam.Flatten()
    failed = (results[FAILED], results[REFUSED])
    tap_outcomes(settings.progress_dir, results["staged"], results[HELD], failed, published[FAILED])
    return DeidOutputs(audit=audit, dead_letters=dead, linkage=results[LINKAGE], qa=results[QA_TAG])


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
