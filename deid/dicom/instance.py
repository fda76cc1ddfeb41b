"""The per-instance recipe: one DICOM instance's bytes in, its de-identified bytes and everything the
run records about it out. Every DICOM source and sink calls `deidentify_instance` (local files to
OUTPUT, local files or a DICOMweb source to a DICOMweb destination), so that each of them harvests,
scans, redacts and marks pixels the same way.

Steps, in order:
  1. read strictly (bounded by the limits), private elements the profile removes cut before parsing,
     pixel data checked against its header (deid.dicom.pixel_data; the audit's `pixel_data` detail
     says whether the frames were also decoded, "decoded", or only checked, "checked");
  2. harvest the input's identifying values (attributes the profile removes or replaces, private
     text, the input's path below --input); they stay in this worker's memory;
  3. apply the profile; redact burned-in pixels when the instance needs it, and only after a text
     search over every frame set BurnedInAnnotation NO; clean every compressed frame's marker
     segments and every ICC profile's text (deid.dicom.embedded);
  4. encode, name the output, and search the encoded dataset (as its bytes read back), the
     encoded bytes and the name for the harvested values;
  5. decide whether the instance is held for human review (deid.review.decision: a text candidate
     below --review_threshold that nothing redacted covers, or the keyed sample of
     --review_sample_rate), and if so render what the reviewer sees (`review`).

The caller decides where the payload goes: a result with `leak_hits` must never be published or
stored, only written under OUTPUT/quarantine/ (`quarantine_relpath`); a result with `review` waits
under OUTPUT/review/<input_sha256>/ instead of being published. `rescan_instance` repeats step 4's
search for a held payload when a reviewer approves it.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import pydicom

from deid.dicom.embedded import sanitize_embedded
from deid.dicom.pixels import FrameCandidate, redact_dicom_frames
from deid.dicom.policy import profile_policy
from deid.dicom.profile import deidentify
from deid.dicom.reader import read_for_profile
from deid.dicom.writer import mark_pixel_data_cleaned, output_relpath, write_dicom
from deid.keys import DeidKey
from deid.qa.report import after_thumbnail, before_thumbnail, first_frame
from deid.redaction.confidence import band_counts
from deid.redaction.engine import RedactionConfig
from deid.review.decision import review_reason
from deid.review.held import Preview, ReviewCandidate, numbered
from deid.review.previews import dicom_previews
from deid.settings import RunSettings
from deid.verify.echo import kept_texts, mark_descriptive, split_echoes
from deid.verify.harvest import harvest_dicom, harvest_path, harvest_private_texts
from deid.verify.kept_names import names_in_kept
from deid.verify.retained import retained_uids, without_retained
from deid.verify.scan import quarantine_relpath, summarize
from deid.verify.scan_encoded import scan_encoded_dicom
from deid.verify.values import LeakHit, PhiLike, PhiValue

# PixelData (7FE0,0010): an image instance whose frames can be searched for burned-in text.
PIXEL_DATA = 0x7FE00010


@dataclass(frozen=True)
class InstanceSource:
    """Where an instance came from, as far as de-identification needs to know.

    sha256: hash of the input bytes (the key of per-input --redact_regions and of quarantine paths).
    path: the input's path when it is a file under --input (its folder and file names are harvested),
        None for an instance read from a server.
    """

    sha256: str
    path: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class InstanceQa:
    """The QA report's view of one instance: thumbnails and stage times, no input value."""

    before_png: bytes | None = field(default=None, repr=False)
    after_png: bytes | None = field(default=None, repr=False)
    boxes: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class InstanceReview:
    """Why an instance is held (`uncertain` or `sampled`), its numbered candidates and previews."""

    reason: str
    candidates: tuple[ReviewCandidate, ...] = ()
    previews: tuple[tuple[Preview, bytes], ...] = field(default=(), repr=False)  # pixels: may show PHI
    threshold: float = 0.0
    image_size: tuple[int, int] = (0, 0)
    frames: int = 1


@dataclass(frozen=True)
class InstanceResult:
    """One de-identified instance.

    payload: the Part 10 bytes that were scanned, and so the only bytes that may be published.
    relpath: 'dicom/<study>/<series>/<sop>.dcm' under OUTPUT (new UIDs).
    actions: counts per de-identification action; details: audit details (no input value).
    uid_map, patient_id_map: (old, new) pairs for --linkage_output.
    leak_hits: identifying values of the input found in payload or relpath; non-empty means quarantine.
    qa: thumbnails and stage times when asked for (RunSettings.qa_report), else None.
    review: set when the instance is held for review instead of being published.
    """

    payload: bytes = field(repr=False)
    relpath: str
    actions: dict[str, int]
    details: dict[str, object]
    uid_map: tuple[tuple[str, str], ...] = field(repr=False)
    patient_id_map: tuple[tuple[str, str], ...] = field(repr=False)
    leak_hits: tuple[LeakHit, ...] = ()
    qa: InstanceQa | None = None
    review: InstanceReview | None = None

    @property
    def leaked(self) -> bool:
        return bool(self.leak_hits)

    def leak_summary(self) -> str:
        """A message naming what leaked and where, never the value (safe for records and logs)."""
        return summarize(self.leak_hits)

    def quarantine_relpath(self, input_sha256: str) -> str:
        return quarantine_relpath(input_sha256, self.relpath)


def deidentify_instance(data: bytes, settings: RunSettings, key: DeidKey, source: InstanceSource) -> InstanceResult:
    """De-identify one instance's bytes and check the result; see the module docstring for the steps.

    Raises a DeidError (dead letter) for inputs that cannot be de-identified; a leak is not raised
    here but returned in `leak_hits`, so that the caller can quarantine the payload first.
    """
    clock = _StageClock()
    dataset, stripped = read_for_profile(data, settings.limits, settings.profile)
    values: frozenset[PhiValue] = harvest_dicom(dataset, settings.profile) | harvest_private_texts(stripped.texts)
    if source.path is not None:
        values |= harvest_path(source.path, settings.input_root)
    before = _thumbnail_before(dataset) if settings.qa_report else None
    clock.lap("read")
    result = deidentify(dataset, settings.profile, key, stripped)
    actions = dict(result.actions)
    details: dict[str, object] = {}
    out = result.dataset
    decoded = False
    found: tuple[FrameCandidate, ...] = ()
    threshold = 0.0
    # Most real CT/CR/DX/MG exports with annotations carry no BurnedInAnnotation flag: with text
    # redaction on, every image is searched unless the user limited it to flagged instances.
    search_all = settings.redaction.searches_every_image() and PIXEL_DATA in out
    if result.needs_pixel_redaction or search_all:
        config = RedactionConfig.for_input(settings.redaction, source.sha256)
        if config.text_mode == "ocr":
            # The header's own identifying values are what OCR words are matched against first.
            config = replace(config, ocr_terms=tuple(sorted({v.text for v in values} | set(result.phi_values))))
        out, pixel_counts, found = redact_dicom_frames(out, config)
        threshold = config.review_threshold
        decoded = config.active
        if settings.redaction.text != "off":
            # Only a text search over every frame justifies BurnedInAnnotation NO; user boxes alone do not.
            mark_pixel_data_cleaned(out)
        actions.update({f"pixels_{k}": v for k, v in pixel_counts.items()})
        if settings.redaction.text != "off":
            actions["pixels_frames_searched"] = pixel_counts.get("frames_total", 0)
            # Scores in the audit: counts per band, and how many were left for a person (no text).
            text = [f.candidate for f in found if f.candidate.kind in ("detect", "ocr")]
            actions.update(band_counts(c.score for c in text))
            actions["text_candidates_pending"] = sum(c.pending for c in text)
        details["transfer_syntax"] = str(out.file_meta.TransferSyntaxUID)
    if "PixelData" in out:
        # The reader checked the pixel data against its header; frames were decoded only for redaction.
        details["pixel_data"] = "decoded" if decoded else "checked"
    # Every frame and ICC profile, redacted or not: no comment, APPn payload or profile text survives.
    actions.update({k: v for k, v in sanitize_embedded(out).items() if v})
    payload = write_dicom(out)
    relpath = output_relpath(out)
    clock.lap("deidentify")
    harvested = values | result.phi_values
    hits, echoes = _leak_scan(dataset, out, payload, relpath, harvested, settings)
    if echoes:
        # Clinical wording the profile removed from a description but kept in a code (deid/verify/echo.py).
        actions["descriptor_echo"] = len(echoes)
    clock.lap("verify")
    review = None
    reason = review_reason((f.candidate for f in found), threshold, settings.review_sample_rate, key, source.sha256)
    if reason is not None and not hits:
        review = _review(out, reason, found, threshold)
    qa = None
    if settings.qa_report:
        frame = first_frame(out)
        qa = InstanceQa(
            before_png=before,
            after_png=after_thumbnail(frame) if frame is not None else None,
            boxes=actions.get("pixels_boxes_redacted", 0),
            stage_seconds=clock.seconds,
        )
    return InstanceResult(
        payload=payload,
        relpath=relpath,
        actions=actions,
        details=details,
        uid_map=result.uid_map,
        patient_id_map=result.patient_id_map,
        leak_hits=tuple(hits),
        qa=qa,
        review=review,
    )


def _leak_scan(
    dataset: object, out: object, payload: bytes, relpath: str, harvested: Iterable[PhiLike], settings: RunSettings
) -> tuple[list[LeakHit], list[LeakHit]]:
    """(hits, descriptor echoes) of the harvested values in the encoded output."""
    # The dataset just encoded is searched as its bytes read back, plus a raw pass over the bytes:
    # the hits of parsing `payload` again, without that parse (scan_encoded_dicom).
    hits, echoes = split_echoes(scan_encoded_dicom(out, payload, relpath, mark_descriptive(harvested)))
    if hits:
        # Rare, so only then: a value equal to one the profile kept in this instance is no leak.
        kept = kept_texts(dataset, out, profile_policy(settings.profile).keep)
        # Nor is a value inside a UID the run keeps (a date in a UID kept by --retain_uids).
        expected = without_retained(harvested, retained_uids(dataset, settings.profile))
        hits, echoes = split_echoes(scan_encoded_dicom(out, payload, relpath, mark_descriptive(expected, kept)))
    # A short name ('Roe') is too common to search everywhere, but not inside text kept by --keep.
    hits += names_in_kept(dataset, out, profile_policy(settings.profile).keep, relpath)
    return hits, echoes


def rescan_instance(data: bytes, payload: bytes, settings: RunSettings, source: InstanceSource) -> tuple[LeakHit, ...]:
    """Step 4 again for a held `payload` of the input `data`: the input's identifying values (the same
    harvest, and the values the profile records while removing) searched in the payload and its name.

    The profile records input values only, whatever the key, so a throwaway key serves here.
    """
    dataset, stripped = read_for_profile(data, settings.limits, settings.profile)
    values: frozenset[PhiValue] = harvest_dicom(dataset, settings.profile) | harvest_private_texts(stripped.texts)
    if source.path is not None:
        values |= harvest_path(source.path, settings.input_root)
    recorded = deidentify(dataset, settings.profile, DeidKey.generate(), stripped).phi_values
    dataset, _ = read_for_profile(data, settings.limits, settings.profile)
    out = pydicom.dcmread(io.BytesIO(payload))
    hits, _ = _leak_scan(dataset, out, payload, output_relpath(out), [*values, *recorded], settings)
    return tuple(hits)


def _review(out: object, reason: str, found: tuple[FrameCandidate, ...], threshold: float) -> InstanceReview:
    """What the reviewer of a held instance sees: numbered candidates and previews of its frames."""
    candidates = numbered([(f.candidate, f.frame, None) for f in found])
    try:
        previews = tuple(dicom_previews(out, candidates))
    except Exception:  # noqa: BLE001 - a preview is optional; decoder errors can quote values: none kept
        previews = ()
    rows = int(getattr(out, "Rows", 0) or 0)
    columns = int(getattr(out, "Columns", 0) or 0)
    frames = int(getattr(out, "NumberOfFrames", 1) or 1)
    return InstanceReview(reason, candidates, previews, threshold, (columns, rows), frames)


def _thumbnail_before(dataset: object) -> bytes | None:
    frame = first_frame(dataset)
    return before_thumbnail(frame) if frame is not None else None


class _StageClock:
    """Wall time per stage of one instance, for the QA report's chart (never written to the audit)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._last
        self._last = now
