"""DICOMweb servers beyond Google: read studies by QIDO-RS/WADO-RS, de-identify them with the local
profile, store them by STOW-RS (or under OUTPUT when no destination server is given).

Works with any DICOMweb server (Orthanc, dcm4chee, the Healthcare API's dicomWeb endpoint) through
dicomweb-client. Local DICOM inputs (--input) can be sent to a destination server the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import PBegin

from deid.classify import InputRef
from deid.cloud.dicomweb import InstanceKey, retrieve_bytes, store_datasets
from deid.cloud.retry import Backoff
from deid.keys import DeidKey
from deid.settings import RunSettings
from transforms._io import read_all, write_atomically
from transforms.common import (
    LINKAGE,
    DeidOutputs,
    ToDeadLetters,
    audit_ok,
    count_actions,
    linkage_rows,
    load_run_key,
    pixel_redaction_config,
)

SOURCE_SCHEME = "dicomweb-source"


def _ref_for(key: InstanceKey) -> InputRef:
    # The path never reaches a record; the hash names the instance in dead letters before it is read.
    return InputRef(path=f"{SOURCE_SCHEME}:{key.ref_hash()}", size=0, sha256=key.ref_hash(), kind="dicom")


class _ListSourceFn(beam.DoFn):
    """source URL -> (InputRef, InstanceKey) for every instance QIDO-RS finds there."""

    def __init__(self, retry: Backoff | None) -> None:
        self._retry = retry

    def process(self, url: str) -> Iterable[tuple[InputRef, InstanceKey]]:
        from deid.cloud.dicomweb import list_instances, make_client

        for key in list_instances(make_client(url, retry=self._retry)):
            yield _ref_for(key), key


class _DeidentifyFn(beam.DoFn):
    """(InputRef, InstanceKey | None) -> AuditRecord; (table, old, new) to 'linkage'.

    With a key the instance is fetched by WADO-RS from the source server, else read from ref.path.
    The result goes by STOW-RS to the destination server, or is written under OUTPUT without one.
    """

    def __init__(
        self, settings: RunSettings, source_url: str | None, destination_url: str | None, retry: Backoff | None
    ) -> None:
        self._settings = settings
        self._source_url = source_url
        self._destination_url = destination_url
        self._retry = retry
        self._key: DeidKey | None = None
        self._source: Any = None
        self._destination: Any = None

    def setup(self) -> None:
        from deid.cloud.dicomweb import make_client

        self._key = load_run_key(self._settings)
        self._source = make_client(self._source_url, retry=self._retry) if self._source_url else None
        self._destination = make_client(self._destination_url, retry=self._retry) if self._destination_url else None

    def process(self, element: tuple[InputRef, InstanceKey | None]) -> Iterable[object]:
        from deid.dicom.deidentify import deidentify, output_relpath, read_for_profile, write_dicom

        assert self._key is not None
        ref, instance = element
        settings = self._settings
        if instance is not None:
            data = retrieve_bytes(self._source, instance)
            ref = InputRef(ref.path, len(data), hashlib.sha256(data).hexdigest(), "dicom", "dicom")
        else:
            data = read_all(ref.path, settings.limits.max_file_bytes)
        dataset, stripped = read_for_profile(data, settings.limits, settings.profile)
        del data
        result = deidentify(dataset, settings.profile, self._key, stripped)
        actions = dict(result.actions)
        out = result.dataset
        if result.needs_pixel_redaction:
            from deid.dicom.pixels import redact_dicom_pixels

            out, pixel_counts = redact_dicom_pixels(out, pixel_redaction_config(settings, ref))
            actions.update({f"pixels_{k}": v for k, v in pixel_counts.items()})
        relpath = output_relpath(out)
        if self._destination is not None:
            store_datasets(self._destination, [out], "STOW-RS into the destination server")
            output = f"dicomweb:{relpath}"
        else:
            output = write_atomically(settings.output, relpath, write_dicom(out))
        count_actions(actions)
        if settings.linkage:
            yield from linkage_rows(result.uid_map, result.patient_id_map)
        yield audit_ok(ref, [output], actions, source="dicomweb" if instance is not None else "input")


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
        results = elements | "Deidentify" >> beam.ParDo(
            _DeidentifyFn(self._settings, self._source_url, self._destination_url, self._retry)
        ).with_outputs(LINKAGE, main="audit").with_exception_handling(main_tag="audit", dead_letter_tag="failed")
        return DeidOutputs(
            audit=results["audit"],
            dead_letters=results["failed"] | "DeadLetters" >> ToDeadLetters(),
            linkage=results[LINKAGE],
        )
