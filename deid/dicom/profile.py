"""The DICOM de-identification engine: PS3.15 Basic Application Level Confidentiality Profile.

Pure functions over pydicom datasets, no Beam. `deidentify` applies the profile (table-driven,
deid/dicom/profile_table.py) with the options of ProfileSettings; which action each attribute gets is
decided by deid/dicom/policy.py. deid/dicom/reader.py parses the input strictly and
deid/dicom/writer.py records the method, encodes the result and names it.

Decisions the standard leaves open, made here and in policy.py:

* Combined codes (Z/D, X/Z, X/D, X/Z/D, X/Z/U*) use the attribute's type from deid/dicom/iod_types.py;
  nested attributes and unknown IODs take the choice that keeps the element present (Z, D or U).
* PatientID is always replaced by key.pseudonym("patient_id", old) so that files of one patient stay
  linked; dates are shifted by key.date_shift_days(original PatientID).
* Every UI value that is not a well-known standard UID (pydicom's UID dictionary, or the DICOM root
  1.2.840.10008) and not a class UID is remapped to key.uid(old), whether or not the table lists it:
  this catches references nested anywhere. Private elements are removed unless a safe-list keeps them.
* Standard PN, DA and DT attributes the table does not list are dummied (or shifted / kept by the
  date options); public elements pydicom does not know are removed, since nothing says what they hold.
* Overlay (60xx) and curve (50xx) groups are removed whole: the profile removes their data, and an
  overlay group without its data is not a valid Overlay Plane module. clean_graphics cleans by
  removal: it also removes Graphic Annotation Sequences (their text objects may carry identity).
* A D action on a sequence keeps its items and cleans inside them: the table applies to nested
  attributes, and free text, names and dates the table does not list are dummied (the items of
  Content Sequence and Graphic Annotation Sequence). In sequences that identify an institution or an
  operator, coded values are dummied too.
* settings.keep keeps the named attributes at every depth, overriding the profile (inside a kept
  sequence the items are still de-identified); settings.remove removes them and wins over keep, since
  a tag named in both lists is safer removed. Removing attributes every instance needs is refused.
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

from deid.dicom.elements import (
    BINARY_VRS,
    DUMMY_DATE,
    DUMMY_DATETIME,
    DUMMY_TIME,
    FREE_TEXT_VRS,
    NUMERIC_VRS,
    TEXT_VRS,
    date_forms,
    element_values,
    normalise,
    shifted,
    tag_text,
)
from deid.dicom.policy import PIXEL_TAGS, ProfilePolicy, profile_policy, profile_row
from deid.dicom.reader import DICOMDIR_CLASS, StrippedPrivate
from deid.dicom.writer import copy_encoding, file_meta, record_method
from deid.errors import BurnedInAnnotationError, InvalidInputError, UnsupportedFormatError
from deid.keys import DeidKey
from deid.settings import ProfileSettings

ACTION_NAMES = ("removed", "emptied", "replaced", "dates_shifted", "uids_remapped", "private_removed",
                "cleaned", "kept")

STANDARD_UID_ROOT = "1.2.840.10008."
CLEANED = "CLEANED"
MEDIA_STORAGE_SOP_INSTANCE_UID = 0x00020003

MAX_LENGTH = {"AE": 16, "CS": 16, "SH": 16, "LO": 64, "PN": 64, "UC": 64, "LT": 64, "ST": 64, "UT": 64}

# Code Sequence Macro attributes: concept names and codes inside structured content are vocabulary,
# not identity, and dummying them would break the document.
CODE_MACRO_TAGS = frozenset({
    0x00080100, 0x00080102, 0x00080103, 0x00080104, 0x00080105, 0x00080106, 0x00080107,
    0x0008010B, 0x0008010D, 0x0008010F, 0x00080117, 0x00080118, 0x00080119, 0x00080120, 0x00080121,
    0x00080122, 0x00080123, 0x00080124,
})
# Sequences whose coded content names an institution, a station or an operator.
IDENTITY_SEQUENCES = frozenset({0x00080082, 0x00081072, 0x00081041, 0x00404025, 0x00404027,
                                0x00404028, 0x00404030})


@dataclass(frozen=True)
class DicomResult:
    dataset: pydicom.Dataset
    actions: dict[str, int]
    uid_map: tuple[tuple[str, str], ...]
    patient_id_map: tuple[tuple[str, str], ...]
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
    clean_tokens: frozenset[str]
    counts: Counter[str] = field(default_factory=Counter)
    uid_map: dict[str, str] = field(default_factory=dict)
    patient_ids: dict[str, str] = field(default_factory=dict)
    phi: set[str] = field(default_factory=set)


def _harvest(ds: Dataset, into: set[str]) -> None:
    """Identifying values that clean_descriptors removes from free text: names, IDs, dates."""
    for elem in ds:
        if elem.tag.is_private:
            continue
        if elem.VR == "SQ":
            for item in elem.value or []:
                _harvest(item, into)
            continue
        row = profile_row(int(elem.tag))
        if elem.VR not in ("PN", "LO", "SH", "DA", "DT") or row is None or row.basic == "K":
            continue
        if row.option("clean_descriptors") or row.option("patient_chars") == "C":
            continue
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


def _keeps_uid(tag: int) -> bool:
    """Class and syntax UIDs name kinds of things, not instances: never remapped."""
    keyword = keyword_for_tag(tag)
    return "ClassUID" in keyword or "TransferSyntax" in keyword or keyword in (
        "SOPClassesInStudy", "CodingSchemeUID", "ContextGroupExtensionCreatorUID", "MappingResourceUID",
        "PrivateInformationCreatorUID", "ContextUID", "TemplateExtensionCreatorUID",
    )


def _action(run: _Run, elem: DataElement, nested: bool, deep: bool) -> str:
    """The action code for one public element: the policy's, or by VR and context when the table is silent."""
    code = run.policy.action_for(int(elem.tag), run.sop_class, nested)
    return _unlisted(run, elem, deep) if code is None else code


def _unlisted(run: _Run, elem: DataElement, deep: bool) -> str:
    tag = int(elem.tag)
    vr = elem.VR
    if not dictionary_has_tag(tag):
        return "X"
    if vr == "UI":
        return "U"
    if vr in ("DA", "DT") or (deep and vr == "TM"):
        if run.settings.retain_long_full_dates:
            return "K"
        if run.settings.retain_long_modified_dates:
            return "S"
        return "D"
    if vr == "PN":
        return "D"
    if deep and vr in FREE_TEXT_VRS and tag not in CODE_MACRO_TAGS:
        return "D"
    return "K"


def _record_phi(run: _Run, elem: DataElement) -> None:
    if elem.VR not in TEXT_VRS and elem.VR != "UI":
        return
    for value in element_values(elem.value):
        value = value.strip().rstrip("\x00")
        if len(value) >= 3:
            run.phi.add(value)
        if elem.VR == "PN":
            run.phi.update(p for p in re.split(r"[\^=]+", value) if len(p.strip()) >= 3)


def _dummy(run: _Run, elem: DataElement, purpose: str) -> object:
    vr = elem.VR
    values = element_values(elem.value)
    multi = max(len(values), 1)
    if vr == "DA":
        return "\\".join([DUMMY_DATE] * multi)
    if vr == "DT":
        return "\\".join([DUMMY_DATETIME] * multi)
    if vr == "TM":
        return "\\".join([DUMMY_TIME] * multi)
    if vr == "AS":
        return "000Y"
    if vr in ("DS", "IS"):
        return "\\".join(["0"] * multi)
    if vr in NUMERIC_VRS:
        return 0 if multi == 1 else [0] * multi
    if vr in BINARY_VRS:
        length = len(elem.value or b"")
        return b"\x00" * (length + length % 2)
    if vr == "UR":
        return ""
    if vr in MAX_LENGTH:
        length = min(16, MAX_LENGTH[vr])
        dummies = [run.key.pseudonym(purpose, v, length) for v in values] or [run.key.pseudonym(purpose, "", length)]
        return dummies[0] if len(dummies) == 1 else dummies
    return elem.value


def _clean_text(run: _Run, text: str) -> str:
    kept = []
    for token in re.split(r"\s+", text):
        if not token:
            continue
        parts = [p for p in re.split(r"[^0-9A-Za-z]+", token) if p]
        if normalise(token) in run.clean_tokens or any(normalise(p) in run.clean_tokens for p in parts):
            run.phi.add(token)
            continue
        kept.append(token)
    return " ".join(kept)


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
    if run.settings.retain_uids or _keeps_uid(int(elem.tag)) or not values:
        run.counts["kept"] += 1
        return elem
    new = [_remap_uid(run, v) for v in values]
    if new != [v.strip().rstrip("\x00") for v in values]:
        run.counts["uids_remapped"] += 1
        _record_phi(run, elem)
    return _new(elem, new[0] if len(new) == 1 else new)


def _process(run: _Run, ds: Dataset, nested: bool, deep: bool, identity: bool) -> Dataset:
    out = Dataset()
    private_keep = _private_keep(run, ds) if run.settings.retain_safe_private else set()
    for elem in ds:
        tag = int(elem.tag)
        if elem.tag.is_private:
            if tag in private_keep:
                out.add(elem)
                run.counts["kept"] += 1
            else:
                run.counts["private_removed"] += 1
                _record_phi(run, elem)
            continue
        new = _apply(run, elem, nested, deep, identity)
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


def _apply(run: _Run, elem: DataElement, nested: bool, deep: bool, identity: bool) -> DataElement | None:
    tag = int(elem.tag)
    code = _action(run, elem, nested, deep)
    if identity and code == "K" and elem.VR in FREE_TEXT_VRS:
        code = "D"
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
        run.counts["kept" if code in ("K", "U") else "cleaned"] += 1
        deeper = deep or code in ("D", "C")
        identity = identity or (code == "D" and tag in IDENTITY_SEQUENCES)
        items = [_process(run, item, True, deeper, identity) for item in elem.value or []]
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
    if code == "C":
        return _clean(run, elem)
    # D, and U on a non-UID element.
    if not element_values(elem.value) and vr not in BINARY_VRS:
        run.counts["emptied"] += 1
        return elem
    run.counts["replaced"] += 1
    _record_phi(run, elem)
    purpose = "pn" if vr == "PN" else f"dummy-{keyword_for_tag(tag) or tag}"
    return _new(elem, _dummy(run, elem, purpose))


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


def _clean(run: _Run, elem: DataElement) -> DataElement:
    vr = elem.VR
    if vr in FREE_TEXT_VRS:
        values = element_values(elem.value)
        # A value cleaned to nothing becomes a placeholder: the attribute may be Type 1.
        cleaned = [_clean_text(run, v) or (CLEANED if v.strip() else v) for v in values]
        run.counts["cleaned"] += 1
        if cleaned == values:
            return elem
        return _new(elem, cleaned[0] if len(cleaned) == 1 else cleaned)
    if vr == "AE":
        run.counts["cleaned"] += 1
        _record_phi(run, elem)
        return _new(elem, _dummy(run, elem, "ae"))
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
    if settings.clean_descriptors or settings.retain_patient_chars:
        _harvest(ds, tokens)
    run = _Run(
        settings=settings,
        policy=policy,
        key=key,
        sop_class=sop_class,
        shift_days=key.date_shift_days(original_pid),
        clean_tokens=frozenset(tokens),
    )
    if stripped is not None and stripped.count:
        run.counts["private_removed"] += stripped.count
        run.phi.update(stripped.texts)
    try:
        out = _process(run, ds, nested=False, deep=False, identity=False)
        record_method(out, settings)
        old_instance = str(meta.get("MediaStorageSOPInstanceUID", "") or "").strip()
        if old_instance and not settings.retain_uids and not policy.is_kept(MEDIA_STORAGE_SOP_INSTANCE_UID):
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
        if elem.VR in ("CS",) or (elem.VR == "UI" and _keeps_uid(int(elem.tag))):
            values.update(v.strip() for v in element_values(elem.value))
    return frozenset(values)
