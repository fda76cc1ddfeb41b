"""DICOMweb servers beyond Google: read studies by QIDO-RS/WADO-RS, de-identify them with the local
profile, store them by STOW-RS (or under OUTPUT when no destination server is given).

The de-identification itself is transforms.dicom's DoFn, the one the local branch runs: an instance
whose leak check fails is quarantined under OUTPUT and dead-lettered, never stored.

Works with any DICOMweb server (Orthanc, dcm4chee, the Healthcare API's dicomWeb endpoint) through
dicomweb-client. Local DICOM inputs (--input) can be sent to a destination server the same way.
"""

from __future__ import annotations

from collections.abc import Iterable

import apache_beam as beam
from apache_beam.pvalue import PBegin

from deid.classify import InputRef
from deid.cloud.dicomweb import InstanceKey, list_instances, make_client
from deid.cloud.retry import Backoff
from deid.settings import RunSettings
from transforms.common import DeidOutputs
from transforms.dicom import deidentify_instances

SOURCE_SCHEME = "dicomweb-source"


def _ref_for(key: InstanceKey) -> InputRef:
    # The path never reaches a record; the hash names the instance in dead letters before it is read.
    return InputRef(path=f"{SOURCE_SCHEME}:{key.ref_hash()}", size=0, sha256=key.ref_hash(), kind="dicom")


class _ListSourceFn(beam.DoFn):
    """source URL -> (InputRef, InstanceKey) for every instance QIDO-RS finds there."""

    def __init__(self, retry: Backoff | None) -> None:
        self._retry = retry

    def process(self, url: str) -> Iterable[tuple[InputRef, InstanceKey]]:
        for key in list_instances(make_client(url, retry=self._retry)):
            yield _ref_for(key), key


class DicomwebDeidentify(beam.PTransform):
    """The pipeline root (read --dicomweb_source) or PCollection[InputRef] of local DICOM files
    -> DeidOutputs(audit, dead_letters, linkage).

    source_url: DICOMweb base URL to list (QIDO-RS) and read (WADO-RS) instances from; with a
        PCollection input it is also read, in addition to the given files.
    destination_url: DICOMweb base URL to STOW-RS de-identified instances to; without it they are
        written under settings.output like the local DICOM branch writes them.
    retry: attempts and backoff for 408/429/5xx and connection errors (default: 6 attempts).
    """

    def __init__(
        self,
        settings: RunSettings,
        source_url: str | None,
        destination_url: str | None,
        retry: Backoff | None = None,
    ) -> None:
        super().__init__()
        self._settings = settings
        self._source_url = source_url
        self._destination_url = destination_url
        self._retry = retry

    def expand(self, refs_or_root: beam.PCollection | PBegin) -> DeidOutputs:
        root = refs_or_root if isinstance(refs_or_root, PBegin) else refs_or_root.pipeline
        parts = []
        if self._source_url:
            parts.append(
                root
                | "SourceUrl" >> beam.Create([self._source_url])
                | "ListSource" >> beam.ParDo(_ListSourceFn(self._retry))
                | "Spread" >> beam.Reshuffle()
            )
        if not isinstance(refs_or_root, PBegin):
            parts.append(refs_or_root | "LocalInputs" >> beam.Map(lambda ref: (ref, None)))
        elements = (parts or [root | "Nothing" >> beam.Create([])]) | "AllInstances" >> beam.Flatten()
        return deidentify_instances(elements, self._settings, self._source_url, self._destination_url, self._retry)
