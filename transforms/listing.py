"""List inputs and classify each object by content."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.metrics import Metrics

from deid.classify import HEAD_BYTES, InputRef, classify_head
from deid.errors import InputTooLargeError, InvalidInputError, UnsupportedFormatError
from deid.settings import is_glob
from transforms.common import METRICS_NAMESPACE, ToDeadLetters
from transforms.files import TMP_DIR, sha256_and_head


def input_pattern(input_location: str) -> str:
    """A directory (local or gs:// prefix) means everything below it; a glob is used as given."""
    if is_glob(input_location):
        return input_location
    return input_location.rstrip("/") + "/**"


class _ClassifyFn(beam.DoFn):
    """FileMetadata -> InputRef (path, size, sha256, kind). Reads each object once, streaming."""

    def process(self, metadata: Any) -> Iterable[InputRef]:  # fileio.FileMetadata
        sha256, head, size = sha256_and_head(metadata.path, HEAD_BYTES)
        kind, subtype = classify_head(head)
        Metrics.counter(METRICS_NAMESPACE, f"inputs_{kind}").inc()
        yield InputRef(path=metadata.path, size=size, sha256=sha256, kind=kind, subtype=subtype)


def admit(ref: InputRef, max_file_bytes: int) -> InputRef:
    """Raise the dead-letter reason for inputs no branch will take; pass the others through."""
    if ref.size == 0:
        raise InvalidInputError("input is empty (0 bytes); nothing to de-identify")
    if ref.size > max_file_bytes:
        raise InputTooLargeError(
            f"input is {ref.size} bytes, over --max_file_bytes={max_file_bytes}; raise the limit to process it"
        )
    if ref.kind == "unknown":
        raise UnsupportedFormatError(
            "content is neither DICOM (no DICM preamble, no parsable dataset) nor a TIFF-based slide; "
            "only DICOM files and whole-slide images are accepted"
        )
    return ref


class ListInputs(beam.PTransform):
    """PBegin -> PCollection[InputRef] of every object under INPUT, classified by content.

    Objects under OUTPUT (when OUTPUT lies inside INPUT) are skipped, and so is our own .tmp/.
    Returns (refs, dead_letters): objects that cannot be read at all become DeadLetterRecords
    (with an empty input_sha256, since their bytes could not be hashed).
    """

    def __init__(self, input_location: str, output_location: str) -> None:
        super().__init__()
        self._pattern = input_pattern(input_location)
        self._output = output_location.rstrip("/") + "/"

    def expand(self, pbegin: beam.pvalue.PBegin) -> tuple[beam.PCollection, beam.PCollection]:
        output = self._output
        matched = (
            pbegin
            | "Match" >> fileio.MatchFiles(self._pattern, empty_match_treatment=fileio.EmptyMatchTreatment.ALLOW)
            | "SkipOwnOutput" >> beam.Filter(lambda m: not m.path.startswith(output) and f"/{TMP_DIR}/" not in m.path)
            | "Reshuffle" >> beam.Reshuffle()
        )
        classified = matched | "Classify" >> beam.ParDo(_ClassifyFn()).with_exception_handling(
            main_tag="refs", dead_letter_tag="unreadable"
        )
        return classified["refs"], classified["unreadable"] | "Unreadable" >> ToDeadLetters()
