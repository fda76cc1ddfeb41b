"""The DICOM de-identification engine: PS3.15 Basic Application Level Confidentiality Profile.

Pure functions over pydicom datasets, no Beam. `deidentify` applies the profile (table-driven,
deid/dicom/profile_table.py) with the options of ProfileSettings; which action each attribute gets is
decided by deid/dicom/policy.py. deid/dicom/reader.py parses the input strictly and
deid/dicom/writer.py records the method, encodes the result and names it.

Decisions the standard leaves open, made here and in policy.py:

* Combined codes (Z/D, X/Z, X/D, X/Z/D) use the attribute's type from deid/dicom/iod_types.py;
  nested attributes and unknown IODs take the choice that keeps the element present (Z or D).
  X/Z/U* (Referenced Image Sequence, Source Image Sequence) is always U: the sequence is kept with
  every UID inside remapped, whatever the type, as the Healthcare API, CTP and dicognito do; the
  references carry nothing identifying and research use depends on them.
* PatientID is always replaced by key.pseudonym("patient_id", old) so that files of one patient stay
  linked; dates are shifted by key.date_shift_days(original PatientID).
* U or K is decided by the table, never by a keyword: a listed UID with U is remapped to key.uid(old)
  (ManufacturerDeviceClassUID and TemplateExtensionCreatorUID too, despite their names) unless an
  enabled option gives it K; --retain_uids keeps only the rows with K in its column, so
  DigitalSignatureUID and UID (0040,A124) are still remapped. Well-known standard UIDs (pydicom's
  UID dictionary, the DICOM root 1.2.840.10008) are never changed. Private elements are removed
  unless a safe-list keeps them.
* Standard attributes the table does not list get an action by VR (deid/dicom/unlisted.py): UIDs
  remapped unless they name a kind (KIND_UIDS: SOP classes, transfer syntaxes, coding schemes) or
  --retain_uids is on; PN dummied; DA/DT/TM as the table's dates (dummied, kept or shifted by the date
  options); free text (LO LT SH ST UT UC AE UR) cleaned with deid/dicom/clean.py, or kept or removed
  by --unlisted_text, except a short reviewed safe list of technical attributes (SAFE_TEXT:
  Manufacturer, SoftwareVersions, SequenceName, code values...) kept with the instance's known
  identifying values cut (T). CS, numbers, binary data: kept. Public tags pydicom does not know:
  removed, since nothing says what they hold.
* C (clean) on text is deid/dicom/clean.py: known identifying values of the instance, e-mail
  addresses, phone numbers, dates, times, person-name patterns and ID-like tokens (letters with
  digits) are cut, plain clinical wording stays; a value cleaned to nothing becomes CLEANED. C on a
  UR that changes writes a dummy URI, on an AE a dummy title. C on binary data (Maker Note) cannot be
  cleaned: the Basic Profile's action (X) applies. Items of a sequence under C are cleaned the same
  way, code meanings included; code values keep their vocabulary (safe list).
* The C of --retain_long_modified_dates shifts DA and DT values by whole days and keeps TM (a
  whole-day shift leaves the time of day). What cannot be shifted consistently gets the Basic
  Profile's action instead of being kept: TimezoneOffsetFromUTC and Certified Timestamp (a signed
  token) are removed, Frame Origin Timestamp (OB) is dummied.
* D writes a dummy valid for the VR (deid/dicom/dummies.py): keyed pseudonyms for text, placeholder
  dates and times, zero numbers, zero bytes of the original length (at least one unit) for OB, OW,
  OD, OF, OL, OV and UN, and https://dummy.invalid/ for UR; never an empty value.
* D on a sequence replaces its content, never keeps it: the items stay (the structure may be
  required) but every text value inside (free text, names, AE, UR, code values and meanings) is
  dummied, UIDs are remapped and the table applies to the rest (PersonIdentificationCodeSequence,
  Operator Identification Sequence, Verifying Observer Sequence ...). Content Sequence and Graphic
  Annotation Sequence are structured content: their text is dummied but their codes (the Code Sequence
  Macro) are the document's vocabulary and are cleaned as elsewhere, not dummied.
* A Type 1C attribute required only when its sibling is present follows the sibling: Clinical Trial
  Protocol Ethics Committee Name (D) is removed whenever its Approval Number (X) is removed, even under
  --retain_institution_id, since a name without a number is not a valid Clinical Trial Subject module.
* Command (group 0000) elements have no place in a Part 10 dataset: an input holding one is invalid
  input (InvalidInputError), not a profile error.
* Values recorded as identifying while removing (DicomResult.phi_values) leave out those the policy
  keeps elsewhere (K, C, T): a UID kept by --retain_uids inside a removed sequence is not a leak.
* Overlay (60xx) and curve (50xx) groups are removed whole: the profile removes their data, and an
  overlay group without its data is not a valid Overlay Plane module. clean_graphics cleans by
  removal: it also removes Graphic Annotation Sequences (their text objects may carry identity).
* settings.keep keeps the named attributes at every depth, overriding the profile (inside a kept
  sequence the items are still de-identified, and a kept attribute stays even in a D sequence);
  settings.remove removes them and wins over keep, since a tag named in both lists is safer removed.
  Removing attributes every instance needs is refused.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import pydicom
from pydicom.datadict import dictionary_has_tag, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID_dictionary

from deid.dicom.clean import clean_text
from deid.dicom.dummies import DUMMY_URI, dummy_value
from deid.dicom.elements import (
    BINARY_VRS,
    FREE_TEXT_VRS,
    NUMERIC_VRS,
    TEXT_VRS,
    date_forms,
    element_values,
    normalise,
    shifted,
    tag_text,
)
from deid.dicom.policy import GRAPHIC_ANNOTATION_SEQUENCE, PIXEL_TAGS, ProfilePolicy, profile_policy, profile_row
from deid.dicom.reader import DICOMDIR_CLASS, StrippedPrivate
from deid.dicom.unlisted import KIND_UIDS, unlisted_action
from deid.dicom.writer import copy_encoding, file_meta, record_method
from deid.errors import BurnedInAnnotationError, InvalidInputError, UnsupportedFormatError
from deid.keys import DeidKey
from deid.settings import ProfileSettings

ACTION_NAMES = ("removed", "emptied", "replaced", "dates_shifted", "uids_remapped", "private_removed",
                "cleaned", "kept")

STANDARD_UID_ROOT = "1.2.840.10008."
CLEANED = "CLEANED"
MEDIA_STORAGE_SOP_INSTANCE_UID = 0x00020003

# Code Sequence Macro attributes: in Content Sequence and Graphic Annotation Sequence items, concept
# names and codes are the document's vocabulary, not identity, and dummying them would break it.
CODE_MACRO_TAGS = frozenset({
    0x00080100, 0x00080102, 0x00080103, 0x00080104, 0x00080105, 0x00080106, 0x00080107,
    0x0008010B, 0x0008010D, 0x0008010F, 0x00080117, 0x00080118, 0x00080119, 0x00080120, 0x00080121,
    0x00080122, 0x00080123, 0x00080124,
})
# D sequences of structured content: their text is dummied, their codes kept (see CODE_MACRO_TAGS).
STRUCTURED_D = frozenset({0x0040A730, GRAPHIC_ANNOTATION_SEQUENCE})  # Content, Graphic Annotation
# Where an element sits: PLAIN (top level, or items of kept and remapped sequences), CLEAN (items of a
# sequence the profile cleans), DUMMY (items of a D sequence: all text replaced, codes included) and
# DUMMY_TEXT (items of a STRUCTURED_D sequence: text replaced, codes kept).
PLAIN, CLEAN, DUMMY, DUMMY_TEXT = "plain", "clean", "dummy", "dummy_text"
DUMMIED_VRS = FREE_TEXT_VRS | {"AE", "UR"}
# Codes under which a value may legitimately stay in the output: never recorded as a leak value.
KEEPING = ("K", "C", "T")


@dataclass(frozen=True)
class DicomResult:
    dataset: pydicom.Dataset = field(repr=False)  # element values: never in a repr (Beam logs reprs)
    actions: dict[str, int]
    uid_map: tuple[tuple[str, str], ...] = field(repr=False)  # original UIDs
    patient_id_map: tuple[tuple[str, str], ...] = field(repr=False)  # original patient IDs
    phi_values: frozenset[str] = field(repr=False)
    needs_pixel_redaction: bool


@dataclass
class _Run:
    """Mutable state of one deidentify() call."""

    settings: ProfileSettings
    policy: ProfilePolicy
    key: DeidKey
    sop_class: str
    shift_days: int
    known: frozenset[str]
    counts: Counter[str] = field(default_factory=Counter)
    uid_map: dict[str, str] = field(default_factory=dict)
    patient_ids: dict[str, str] = field(default_factory=dict)
    phi: set[str] = field(default_factory=set)


def _harvest(ds: Dataset, policy: ProfilePolicy, into: set[str]) -> None:
    """The known identifying values that cleaning cuts from text: names, IDs, dates (normalised)."""
    for elem in ds:
        if elem.tag.is_private:
            continue
        if elem.VR == "SQ":
            for item in elem.value or []:
                _harvest(item, policy, into)
            continue
        tag = int(elem.tag)
        row = profile_row(tag)
        if elem.VR not in ("PN", "LO", "SH", "DA", "DT"):
            continue
        if row is None:
            if elem.VR != "PN" or not dictionary_has_tag(tag):
                continue  # unlisted names are dummied: their parts are known values too
        elif row.basic == "K" or policy.action_for(tag) == "K":
            continue
        elif row.option("clean_descriptors") or row.option("patient_chars") == "C":
            continue  # descriptors themselves: their words are wording, not identity
        for value in element_values(elem.value):
            if elem.VR == "PN":
                for part in re.split(r"[\^=\s,]+", value):
                    if len(normalise(part)) >= 2:
                        into.add(normalise(part))
            if elem.VR in ("DA", "DT"):
                into.update(date_forms(value))
            elif len(normalise(value)) >= 2:
                into.add(normalise(value))


def _is_standard_uid(value: str) -> bool:
    return value in UID_dictionary or value.startswith(STANDARD_UID_ROOT)


def _action(run: _Run, elem: DataElement, nested: bool, context: str) -> str:
    """The action code for one public element: the policy's, overridden inside D sequences."""
    tag = int(elem.tag)
    vr = elem.VR
    listed = run.policy.action_for(tag, run.sop_class, nested)
    dummied = (
        context in (DUMMY, DUMMY_TEXT)
        and vr in DUMMIED_VRS
        and not run.policy.is_kept(tag)
        and not (context == DUMMY_TEXT and tag in CODE_MACRO_TAGS)
    )
    if listed is None:
        if dummied and dictionary_has_tag(tag):
            return "D"
        return unlisted_action(tag, vr, run.settings, in_clean=context == CLEAN)
    return "D" if dummied and listed in KEEPING else listed


def _record_phi(run: _Run, elem: DataElement) -> None:
    if elem.VR not in TEXT_VRS and elem.VR != "UI":
        return
    if not elem.tag.is_private and run.policy.element_action(int(elem.tag), elem.VR, run.sop_class) in KEEPING:
        return  # a value the policy keeps elsewhere is not a leak there (values of --retain_uids ...)
    for value in element_values(elem.value):
        value = value.strip().rstrip("\x00")
        if len(value) >= 3:
            run.phi.add(value)
        if elem.VR == "PN":
            run.phi.update(p for p in re.split(r"[\^=]+", value) if len(p.strip()) >= 3)


def _new(elem: DataElement, value: object) -> DataElement:
    return DataElement(elem.tag, elem.VR, value)


def _remap_uid(run: _Run, value: str) -> str:
    old = value.strip().rstrip("\x00")
    if not old or _is_standard_uid(old):
        return old
    new = run.uid_map.get(old)
    if new is None:
        new = run.key.uid(old)
        run.uid_map[old] = new
    return new


def _uid_element(run: _Run, elem: DataElement) -> DataElement:
    values = element_values(elem.value)
    if not values:
        run.counts["kept"] += 1
        return elem
    new = [_remap_uid(run, v) for v in values]
    if new != [v.strip().rstrip("\x00") for v in values]:
        run.counts["uids_remapped"] += 1
        _record_phi(run, elem)
    return _new(elem, new[0] if len(new) == 1 else new)


def _process(run: _Run, ds: Dataset, nested: bool, context: str) -> Dataset:
    out = Dataset()
    private_keep = _private_keep(run, ds) if run.settings.retain_safe_private else set()
    for elem in ds:
        tag = int(elem.tag)
        if tag >> 16 == 0:
            raise InvalidInputError(
                f"element {tag_text(tag)} is a command (group 0000) element, which a Part 10 dataset "
                "may not hold; not a composite instance this pipeline can de-identify"
            )
        if elem.tag.is_private:
            if tag in private_keep:
                out.add(elem)
                run.counts["kept"] += 1
            else:
                run.counts["private_removed"] += 1
                _record_phi(run, elem)
            continue
        new = _apply(run, elem, nested, context)
        if new is not None:
            out.add(new)
    return out


def _private_keep(run: _Run, ds: Dataset) -> set[int]:
    """Private tags of `ds` on the safe list, with the creator elements they need."""
    keep: set[int] = set()
    for elem in ds:
        tag = int(elem.tag)
        if not elem.tag.is_private or (tag & 0xFFFF) < 0x1000:
            continue
        creator_tag = (tag & 0xFFFF0000) | ((tag >> 8) & 0xFF)
        if creator_tag not in ds:
            continue
        if run.policy.keeps_private(tag, str(ds[creator_tag].value or "").strip()):
            keep.update((tag, creator_tag))
    return keep


def _inner_context(context: str, code: str, tag: int) -> str:
    """The context of a sequence's items, from the sequence's own context and action."""
    if context == DUMMY:
        return DUMMY
    if code == "D":
        return DUMMY_TEXT if tag in STRUCTURED_D else DUMMY
    if context == DUMMY_TEXT:
        return DUMMY_TEXT
    return CLEAN if code == "C" else context


def _apply(run: _Run, elem: DataElement, nested: bool, context: str) -> DataElement | None:
    tag = int(elem.tag)
    code = _action(run, elem, nested, context)
    vr = elem.VR
    if code == "X":
        run.counts["removed"] += 1
        _record_phi_deep(run, elem)
        return None
    if code == "P":
        if elem.VR == "SQ":
            return None
        old = str(elem.value or "").strip()
        if not old:
            run.counts["emptied"] += 1
            return _new(elem, "")
        new_id = run.key.pseudonym("patient_id", old)
        run.patient_ids[old] = new_id
        run.counts["replaced"] += 1
        _record_phi(run, elem)
        return _new(elem, new_id)
    if vr == "SQ":
        if code == "Z":
            run.counts["emptied"] += 1
            _record_phi_deep(run, elem)
            return DataElement(elem.tag, "SQ", Sequence())
        run.counts["kept" if code in ("K", "U", "T") else "cleaned"] += 1
        inner = _inner_context(context, code, tag)
        items = [_process(run, item, True, inner) for item in elem.value or []]
        return DataElement(elem.tag, "SQ", Sequence(items))
    if vr == "UI":
        if code in ("U", "D", "C"):
            return _uid_element(run, elem)
        if code == "Z":
            run.counts["emptied"] += 1
            _record_phi(run, elem)
            return _new(elem, "")
        run.counts["kept"] += 1
        return elem
    if code == "K":
        run.counts["kept"] += 1
        return elem
    if code == "Z":
        run.counts["emptied"] += 1
        _record_phi(run, elem)
        return _new(elem, None if vr in NUMERIC_VRS else b"" if vr in BINARY_VRS else "")
    if code == "S":
        return _shift(run, elem)
    if code in ("C", "T"):
        return _clean(run, elem, known_only=code == "T")
    # D, and U on a non-UID element.
    if elem.value is None and vr not in BINARY_VRS:
        run.counts["emptied"] += 1
        return elem
    run.counts["replaced"] += 1
    _record_phi(run, elem)
    purpose = "pn" if vr == "PN" else f"dummy-{keyword_for_tag(tag) or tag}"
    return _new(elem, dummy_value(run.key, vr, elem.value, purpose))


def _record_phi_deep(run: _Run, elem: DataElement) -> None:
    if elem.VR == "SQ":
        for item in elem.value or []:
            for child in item:
                _record_phi_deep(run, child)
    else:
        _record_phi(run, elem)


def _shift(run: _Run, elem: DataElement) -> DataElement:
    if elem.VR not in ("DA", "DT"):
        # A whole-day shift leaves times of day unchanged.
        run.counts["kept"] += 1
        return elem
    value = "\\".join(element_values(elem.value))
    if not value:
        run.counts["kept"] += 1
        return elem
    run.counts["dates_shifted"] += 1
    _record_phi(run, elem)
    return _new(elem, shifted(value, elem.VR, run.shift_days))


def _clean(run: _Run, elem: DataElement, known_only: bool) -> DataElement:
    """C (or T: the known values only) on one element; deid/dicom/clean.py is the text rule."""
    vr = elem.VR
    if vr in FREE_TEXT_VRS or vr == "UR":
        values = element_values(elem.value)
        results = [clean_text(v, run.known, known_only) for v in values]
        for result in results:
            run.phi.update(result.known_cut)
        # A value cleaned to nothing becomes a placeholder: the attribute may be Type 1.
        cleaned = [
            r.text if not r.emptied else (CLEANED if v.strip() else v)
            for r, v in zip(results, values, strict=True)
        ]
        if cleaned == values:
            run.counts["kept"] += 1
            return elem
        run.counts["cleaned"] += 1
        if vr == "UR":
            return _new(elem, DUMMY_URI)
        return _new(elem, cleaned[0] if len(cleaned) == 1 else cleaned)
    if vr == "AE":
        # An AE title names a device: cleaning means a dummy title.
        run.counts["cleaned"] += 1
        _record_phi(run, elem)
        return _new(elem, dummy_value(run.key, vr, elem.value, "ae"))
    if vr in ("DA", "DT"):
        return _shift(run, elem)
    run.counts["kept"] += 1
    return elem


def _burned_in(ds: Dataset) -> bool:
    if not any(tag in ds for tag in PIXEL_TAGS):
        return False
    burned = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if burned == "YES":
        return True
    modality = str(ds.get("Modality", "") or "").strip().upper()
    return modality in ("US", "SC", "OT") and burned != "NO"


def deidentify(
    ds: pydicom.Dataset, settings: ProfileSettings, key: DeidKey, stripped: StrippedPrivate | None = None
) -> DicomResult:
    """Apply the Basic Profile and the options of `settings`; the input dataset is not modified.

    `stripped`: what read_for_profile() dropped unparsed, counted and recorded as removed here.
    """
    sop_class = str(ds.get("SOPClassUID", "") or "").strip()
    meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    if not sop_class:
        sop_class = str(meta.get("MediaStorageSOPClassUID", "") or "").strip()
    if sop_class == DICOMDIR_CLASS:
        raise UnsupportedFormatError("a DICOMDIR is a media directory, not an instance; submit the files it lists")
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not str(ds.get(keyword, "") or "").strip():
            raise InvalidInputError(
                f"{keyword} {tag_text(tag_for_keyword(keyword) or 0)[len(keyword) + 1:]} is missing or empty; "
                "not a composite instance this pipeline can de-identify"
            )
    policy = profile_policy(settings)

    burned = _burned_in(ds)
    if burned and not settings.pixel_redaction:
        raise BurnedInAnnotationError(
            "the pixel data may show burned-in identifying text (BurnedInAnnotation is YES, or the modality "
            "is US/SC/OT without BurnedInAnnotation NO); configure pixel redaction (--redact_text or "
            "--redact_regions) or exclude this instance"
        )
    original_pid = str(ds.get("PatientID", "") or "").strip()
    tokens: set[str] = set()
    _harvest(ds, policy, tokens)
    run = _Run(
        settings=settings,
        policy=policy,
        key=key,
        sop_class=sop_class,
        shift_days=key.date_shift_days(original_pid),
        known=frozenset(tokens),
    )
    if stripped is not None and stripped.count:
        run.counts["private_removed"] += stripped.count
        run.phi.update(stripped.texts)
    try:
        out = _process(run, ds, nested=False, context=PLAIN)
        record_method(out, settings)
        old_instance = str(meta.get("MediaStorageSOPInstanceUID", "") or "").strip()
        if old_instance and policy.action_for(MEDIA_STORAGE_SOP_INSTANCE_UID) == "U":
            # The input's file meta may name another instance UID than its dataset: the audit maps it too.
            _remap_uid(run, old_instance)
        out.file_meta = file_meta(ds, meta, out)
        copy_encoding(ds, out)
    except RecursionError:
        raise InvalidInputError("malformed DICOM: sequences nested too deeply to de-identify") from None
    kept = _kept_values(out)
    phi = frozenset(v for v in run.phi if v and v not in kept)
    actions = {name: run.counts.get(name, 0) for name in ACTION_NAMES}
    return DicomResult(
        dataset=out,
        actions=actions,
        uid_map=tuple(sorted(run.uid_map.items())),
        patient_id_map=tuple(sorted(run.patient_ids.items())),
        phi_values=phi,
        needs_pixel_redaction=burned,
    )


def _kept_values(ds: Dataset) -> frozenset[str]:
    """Values of the output's standard vocabulary (CS codes, class UIDs) that a leak check must not flag."""
    values: set[str] = set()
    for elem in ds.iterall():
        if elem.VR == "CS" or (elem.VR == "UI" and int(elem.tag) in KIND_UIDS):
            values.update(v.strip() for v in element_values(elem.value))
    return frozenset(values)
