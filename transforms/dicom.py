"""The local, embedded DICOM de-identification branch."""

from __future__ import annotations

from collections.abc import Iterable

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput

from deid.classify import InputRef
from deid.dicom.deidentify import deidentify, mark_pixel_data_cleaned, output_relpath, read_dicom, write_dicom
from deid.keys import DeidKey
from deid.redaction.engine import RedactionConfig
from deid.settings import RunSettings
from transforms._io import read_all, write_atomically
from transforms.common import DeidOutputs, ToDeadLetters, audit_ok, count_actions, load_run_key

LINKAGE = "linkage"


def _pixel_redaction_config(settings: RunSettings, ref: InputRef) -> RedactionConfig:
    return RedactionConfig(
        regions=settings.wsi.regions.for_input(ref.sha256),
        text_mode=settings.wsi.redact_text,
        fill=settings.wsi.redact_fill,
    )


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
        data = read_all(ref.path, settings.limits.max_file_bytes)
        dataset = read_dicom(data, settings.limits)
        del data
        result = deidentify(dataset, settings.profile, self._key)
        actions = dict(result.actions)
        details: dict[str, object] = {}
        out = result.dataset
        if result.needs_pixel_redaction:
            from deid.dicom.pixels import redact_dicom_pixels

            out, pixel_counts = redact_dicom_pixels(out, _pixel_redaction_config(settings, ref))
            if settings.wsi.redact_text != "off":
                # Only a text search over every frame justifies BurnedInAnnotation NO; user boxes alone do not.
                mark_pixel_data_cleaned(out)
            actions.update({f"pixels_{k}": v for k, v in pixel_counts.items()})
            details["transfer_syntax"] = str(out.file_meta.TransferSyntaxUID)
        relpath = write_atomically(settings.output, output_relpath(out), write_dicom(out))
        count_actions(actions)
        if settings.linkage:
            for old, new in result.uid_map:
                yield TaggedOutput(LINKAGE, ("uid", old, new))
            for old, new in result.patient_id_map:
                yield TaggedOutput(LINKAGE, ("patient_id", old, new))
        yield audit_ok(ref, [relpath], actions, **details)


class DeidentifyDicom(beam.PTransform):
    """PCollection[InputRef] of DICOM instances -> DeidOutputs(audit, dead_letters, linkage)."""

    def __init__(self, settings: RunSettings) -> None:
        super().__init__()
        self._settings = settings

    def expand(self, refs: beam.PCollection) -> DeidOutputs:
        results = refs | "Deidentify" >> beam.ParDo(_DeidentifyDicomFn(self._settings)).with_outputs(
            LINKAGE, main="audit"
        ).with_exception_handling(main_tag="audit", dead_letter_tag="failed")
        return DeidOutputs(
            audit=results["audit"],
            dead_letters=results["failed"] | "DeadLetters" >> ToDeadLetters(),
            linkage=results[LINKAGE],
        )
