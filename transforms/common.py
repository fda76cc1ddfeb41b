"""Shared pieces of the Beam layer: the outputs every branch returns, and dead-letter conversion.

A full disk never becomes a dead letter: `_ToDeadLetter` (and the record writer, through
`fail_if_out_of_space`) raise OutOfSpaceError instead, so the run fails and the launcher exits 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput

from deid.classify import InputRef
from deid.cloud.secrets import access_secret_version
from deid.errors import OutOfSpaceError, safe_message_for
from deid.keys import DeidKey
from deid.records import AuditRecord, DeadLetterRecord
from deid.settings import RunSettings
from transforms.files import is_out_of_space_text

METRICS_NAMESPACE = "deid"
# Tagged output of the DICOM DoFns: (table, id_old, id_new) rows for --linkage_output.
LINKAGE = "linkage"


class DeidOutputs(NamedTuple):
    """What each input branch (DICOM, WSI, Healthcare API) returns to `build_pipeline`.

    audit: PCollection[AuditRecord] for inputs that succeeded.
    dead_letters: PCollection[DeadLetterRecord] for inputs that failed.
    linkage: PCollection[tuple[str, str, str]] of (table, id_old, id_new), table being
        'uid' or 'patient_id'; empty unless --linkage_output was given.
    qa: PCollection[QaEntry] for --qa_report, or None for a branch that makes no thumbnails.
    """

    audit: beam.PCollection
    dead_letters: beam.PCollection
    linkage: beam.PCollection
    qa: beam.PCollection | None = None


def linkage_rows(
    uid_map: Iterable[tuple[str, str]], patient_id_map: Iterable[tuple[str, str]]
) -> Iterator[TaggedOutput]:
    """The LINKAGE outputs of one de-identified instance (DicomResult.uid_map, .patient_id_map)."""
    for old, new in uid_map:
        yield TaggedOutput(LINKAGE, ("uid", old, new))
    for old, new in patient_id_map:
        yield TaggedOutput(LINKAGE, ("patient_id", old, new))


class _CountStatus(beam.DoFn):
    """AuditRecord -> nothing; counts `status_<status>` (ok, dead_letter, needs_review)."""

    def process(self, record: AuditRecord) -> Iterable[None]:
        Metrics.counter(METRICS_NAMESPACE, f"status_{record.status}").inc()
        return ()


class CountStatuses(beam.PTransform):
    """PCollection[AuditRecord] of the whole run -> one Beam counter per status, `status_<status>`
    (Dataflow user counters that terraform/monitoring.tf alerts on). Returns the empty output."""

    def expand(self, audit: beam.PCollection) -> beam.PCollection:
        return audit | beam.ParDo(_CountStatus())


def count_actions(actions: dict[str, int]) -> None:
    """One Beam counter per de-identification action."""
    for name, value in actions.items():
        if value:
            Metrics.counter(METRICS_NAMESPACE, f"action_{name}").inc(value)


class _ToDeadLetter(beam.DoFn):
    """(InputRef, (exc_type, exc_repr, traceback)) -> DeadLetterRecord, counting each failure kind.

    The traceback is dropped on purpose: third-party exception texts may quote input values.
    """

    def process(self, bad: tuple[Any, tuple[type[BaseException], str, list[str]]]) -> Iterable[DeadLetterRecord]:
        element, (exc_type, exc_repr, _traceback) = bad
        if issubclass(exc_type, OSError) and is_out_of_space_text(exc_repr):
            raise OutOfSpaceError()
        ref = _input_ref_of(element)
        error_kind, message = safe_message_for(exc_type, exc_repr)
        fail_if_out_of_space(error_kind)
        Metrics.counter(METRICS_NAMESPACE, f"dead_letter_{error_kind}").inc()
        yield DeadLetterRecord(
            input_sha256=ref.sha256 if ref else "",
            error_kind=error_kind,
            message=message,
            kind=ref.kind if ref else "unknown",
        )


def fail_if_out_of_space(error_kind: str | None) -> None:
    """A record of kind 'no_space' must never be written: the run fails instead."""
    if error_kind == OutOfSpaceError.error_kind:
        raise OutOfSpaceError()


def _input_ref_of(element: Any) -> InputRef | None:
    if isinstance(element, InputRef):
        return element
    if isinstance(element, tuple):
        for part in element:
            found = _input_ref_of(part)
            if found:
                return found
    return getattr(element, "input_ref", None)


class ToDeadLetters(beam.PTransform):
    """PCollection[(element, exception info)] from `with_exception_handling` -> PCollection[DeadLetterRecord].

    The element must be an InputRef, hold one in a tuple, or have an `input_ref` attribute.
    """

    def expand(self, bad: beam.PCollection) -> beam.PCollection:
        return bad | beam.ParDo(_ToDeadLetter())


def audit_ok(ref: InputRef, outputs: Iterable[str], actions: dict[str, int], **details: object) -> AuditRecord:
    return AuditRecord(
        input_sha256=ref.sha256,
        kind=ref.kind,
        status="ok",
        outputs=tuple(outputs),
        actions=actions,
        details=details,
    )


def load_run_key(settings: RunSettings) -> DeidKey:
    """The run's key, for DoFn.setup(): read from --deid_key_secret (Secret Manager), --deid_key_file
    (local or gs://) or the inline token. The key lives only in the DoFn instance after setup()."""
    if settings.key_secret:
        return DeidKey.from_bytes(access_secret_version(settings.key_secret, settings.secret_endpoint))
    if settings.key_file:
        with FileSystems.open(settings.key_file) as handle:
            return DeidKey.from_bytes(handle.read())
    return DeidKey.from_token(settings.key_token)
