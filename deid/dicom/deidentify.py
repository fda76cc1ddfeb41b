"""The DICOM de-identification engine: PS3.15 Basic Application Level Confidentiality Profile.

Pure functions over pydicom datasets, no Beam. `read_dicom` parses bytes strictly, `deidentify`
applies the profile (table-driven, deid/dicom/profile_table.py) with the options of ProfileSettings,
`write_dicom` encodes the result in its original transfer syntax and `output_relpath` names it.

Decisions the standard leaves open, made here:

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

import datetime as dt
import io
import logging
import re
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import pydicom
from pydicom.datadict import dictionary_has_tag, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    UID_dictionary,
)

from deid.classify import looks_like_raw_dicom
from deid.dicom import profile_table
from deid.dicom.iod_types import attribute_type, known_iod
from deid.dicom.profile_model import ProfileRow
from deid.dicom.structure import DatasetLayout, check_structure, dataset_layout
from deid.errors import (
    BurnedInAnnotationError,
    InputTooLargeError,
    InvalidInputError,
    ProfileError,
    UnsupportedFormatError,
)
from deid.keys import DeidKey
from deid.settings import Limits, ProfileSettings, parse_tag

# pydicom quotes element values in its warnings and log lines (invalid values, charset problems);
# they would carry PHI into worker logs, so both are silenced for the whole process.
warnings.filterwarnings("ignore", module=r"pydicom(\..*)?$")
_PYDICOM_LOGGER = logging.getLogger("pydicom")
_PYDICOM_LOGGER.setLevel(logging.CRITICAL + 1)
_PYDICOM_LOGGER.propagate = False
# Value validation (VR length and character rules) only ever warns in pydicom's default mode, and those
# warnings are silenced above, so it costs time for nothing; structural damage is still refused by
# check_structure() and the full parse in read_dicom().
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

ACTION_NAMES = ("removed", "emptied", "replaced", "dates_shifted", "uids_remapped", "private_removed",
                "cleaned", "kept")

PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
STANDARD_UID_ROOT = "1.2.840.10008."
IMPLEMENTATION_VERSION = "DEID_PIPELINE_1"
DUMMY_DATE = "19000101"
DUMMY_TIME = "000000"
DUMMY_DATETIME = "19000101000000"
CLEANED = "CLEANED"
LONGITUDINAL_MODIFIED = 0x00280303
PATIENT_ID = 0x00100020
PATIENT_NAME = 0x00100010

TEXT_VRS = frozenset({"PN", "LO", "SH", "LT", "ST", "UT", "UC", "AE", "CS", "AS", "DA", "DT", "TM", "UR"})
FREE_TEXT_VRS = frozenset({"PN", "LO", "SH", "LT", "ST", "UT", "UC"})
NUMERIC_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "SV", "UV"})
BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
# Longer private values are bulk data (thumbnails, raw headers), not names or numbers to search for.
MAX_PRIVATE_TEXT_BYTES = 64 * 1024
UNDEFINED_LENGTH = 0xFFFFFFFF
# Up to this size a file's top-level private elements are cut from the bytes before pydicom reads
# them (one more copy of the file); larger files, pixel data mostly, are stripped after parsing.
MAX_FILTERED_BYTES = 64 * 1024 * 1024
ITEM_TAG_BYTES = (b"\xfe\xff\x00\xe0", b"\xff\xfe\xe0\x00")  # (FFFE,E000) little and big endian
MAX_LENGTH = {"AE": 16, "CS": 16, "SH": 16, "LO": 64, "PN": 64, "UC": 64, "LT": 64, "ST": 64, "UT": 64}

# Attributes every instance needs (SOP Common, study/series identity, pixel data): --remove may not
# name them, since the output would no longer be an instance of its IOD.
REQUIRED_TAGS = frozenset({0x00080016, 0x00080018, 0x0020000D, 0x0020000E, 0x00080060, 0x7FE00010})

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
GRAPHIC_ANNOTATION_SEQUENCE = 0x00700001

# Private elements known to hold acquisition physics, never identity (PS3.15 E.3.10 examples and
# common vendor diffusion/scaling fields): (creator, group, element byte).
SAFE_PRIVATE: frozenset[tuple[str, int, int]] = frozenset({
    ("SIEMENS MR HEADER", 0x0019, 0x0C),  # B_value
    ("SIEMENS MR HEADER", 0x0019, 0x0D),  # DiffusionDirectionality
    ("SIEMENS MR HEADER", 0x0019, 0x0E),  # DiffusionGradientDirection
    ("SIEMENS MR HEADER", 0x0019, 0x27),  # B_matrix
    ("GEMS_ACQU_01", 0x0019, 0xBB),  # User data (diffusion direction)
    ("GEMS_ACQU_01", 0x0019, 0xBC),
    ("GEMS_ACQU_01", 0x0019, 0xBD),
    ("GEMS_PARM_01", 0x0043, 0x39),  # slop integers (b-value)
    ("Philips Imaging DD 001", 0x2001, 0x03),  # Diffusion B-factor
    ("Philips Imaging DD 001", 0x2001, 0x04),  # Diffusion direction
    ("Philips MR Imaging DD 001", 0x2005, 0xB0),  # Diffusion direction RL
    ("Philips MR Imaging DD 001", 0x2005, 0xB1),  # Diffusion direction AP
    ("Philips MR Imaging DD 001", 0x2005, 0xB2),  # Diffusion direction FH
    ("Philips MR Imaging DD 001", 0x2005, 0x0E),  # Scale slope
})

# CID 7050 De-identification Method.
CODE_MEANINGS = {
    "113100": "Basic Application Confidentiality Profile",
    "113101": "Clean Pixel Data Option",
    "113103": "Clean Graphics Option",
    "113104": "Clean Structured Content Option",
    "113105": "Clean Descriptors Option",
    "113106": "Retain Longitudinal Temporal Information Full Dates Option",
    "113107": "Retain Longitudinal Temporal Information Modified Dates Option",
    "113108": "Retain Patient Characteristics Option",
    "113109": "Retain Device Identity Option",
    "113110": "Retain UIDs Option",
    "113111": "Retain Safe Private Option",
    "113112": "Retain Institution Identity Option",
}
# ProfileSettings flag -> (option column of the table, CID 7050 code).
OPTIONS = (
    ("retain_long_full_dates", "long_full_dates", "113106"),
    ("retain_long_modified_dates", "long_modified_dates", "113107"),
    ("clean_descriptors", "clean_descriptors", "113105"),
    ("clean_graphics", "clean_graphics", "113103"),
    ("retain_uids", "uids", "113110"),
    ("retain_patient_chars", "patient_chars", "113108"),
    ("retain_device_id", "device_id", "113109"),
    ("retain_institution_id", "institution_id", "113112"),
    ("retain_safe_private", "safe_private", "113111"),
)


@dataclass(frozen=True)
class DicomResult:
    dataset: pydicom.Dataset
    actions: dict[str, int]
    uid_map: tuple[tuple[str, str], ...]
    patient_id_map: tuple[tuple[str, str], ...]
    phi_values: frozenset[str] = field(repr=False)
    needs_pixel_redaction: bool


# ---------------------------------------------------------------------------------------------- read


def _tag_text(tag: int) -> str:
    keyword = keyword_for_tag(tag)
    text = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
    return f"{keyword} {text}" if keyword else text


@dataclass(frozen=True)
class StrippedPrivate:
    """Private elements dropped while parsing, before pydicom decoded them.

    `texts`: their values read as Latin-1 text (creator elements excluded), so that they can still
    be searched for in the output and recorded as removed identifying values.
    """

    count: int = 0
    texts: tuple[str, ...] = field(default=(), repr=False)


def read_dicom(data: bytes, limits: Limits) -> pydicom.Dataset:
    """Parse a DICOM file strictly; every element at every depth is converted before returning."""
    return _read_dicom(data, limits, None)


def read_for_profile(data: bytes, limits: Limits, settings: ProfileSettings) -> tuple[pydicom.Dataset, StrippedPrivate]:
    """read_dicom, except that private elements the profile will remove anyway are dropped unparsed.

    Without Retain Safe Private every private element is removed, so decoding it (pydicom resolves
    each one's private creator, the larger part of parsing a typical vendor file) is wasted work and
    a malformed private value is no reason to refuse the instance. deidentify() takes the returned
    StrippedPrivate so that the audit still counts those elements.
    """
    if settings.retain_safe_private:
        return _read_dicom(data, limits, None), StrippedPrivate()
    collected: list[tuple[int, list[str]]] = []
    ds = _read_dicom(data, limits, collected)
    return ds, StrippedPrivate(len(collected), tuple(t for _, texts in collected for t in texts))


def _read_dicom(data: bytes, limits: Limits, strip_private: list[tuple[int, list[str]]] | None) -> pydicom.Dataset:
    if not data:
        raise InvalidInputError("the input is empty (0 bytes); expected a DICOM file")
    if len(data) > limits.max_file_bytes:
        raise InputTooLargeError(
            f"the input is {len(data)} bytes, over --max_file_bytes {limits.max_file_bytes}; raise the limit"
        )
    has_preamble = len(data) >= 132 and data[128:132] == b"DICM"
    if not has_preamble and not looks_like_raw_dicom(data):
        raise InvalidInputError(
            "not DICOM: no 'DICM' marker at offset 128 and no dataset at offset 0; check that the input "
            "is a DICOM Part 10 file"
        )
    if strip_private is not None and len(data) <= MAX_FILTERED_BYTES:
        layout = dataset_layout(data, has_preamble)
        if layout is not None:
            data = _without_private(data, layout, strip_private)
    else:
        check_structure(data, has_preamble)
    try:
        # One parse: the bytes are already in memory (bounded by max_file_bytes), and nothing below
        # decodes pixels, so the budget check still comes before any pixel-sized allocation.
        ds = pydicom.dcmread(io.BytesIO(data), force=not has_preamble)
        _check_pixel_budget(ds, limits)
        _force_parse(ds, strip_private)
    except (InvalidInputError, InputTooLargeError):
        raise
    except InvalidDicomError:
        raise InvalidInputError("not DICOM: pydicom found no DICOM dataset; check the input") from None
    except RecursionError:
        raise InvalidInputError("malformed DICOM: sequences nested too deeply to parse") from None
    except (ValueError, TypeError, KeyError, EOFError, OSError, AttributeError, NotImplementedError,
            UnicodeError, OverflowError, IndexError) as exc:
        raise InvalidInputError(
            f"malformed DICOM: pydicom could not parse the dataset ({type(exc).__name__}); re-export the file"
        ) from None
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("MediaStorageSOPClassUID") == DICOMDIR_CLASS:
        raise UnsupportedFormatError("a DICOMDIR is a media directory, not an instance; submit the files it lists")
    return ds


def _int_value(ds: Dataset, keyword: str, default: int) -> int:
    if keyword not in ds:
        return default
    value = ds[keyword].value
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{keyword} is not an integer; the header is malformed") from None
    if number < 0:
        raise InvalidInputError(f"{keyword} is negative; the header is malformed")
    return number


def _check_pixel_budget(ds: Dataset, limits: Limits) -> None:
    pixels = (
        _int_value(ds, "Rows", 0)
        * _int_value(ds, "Columns", 0)
        * _int_value(ds, "NumberOfFrames", 1)
        * _int_value(ds, "SamplesPerPixel", 1)
    )
    if pixels > limits.max_pixels:
        raise InputTooLargeError(
            f"Rows x Columns x NumberOfFrames x SamplesPerPixel is {pixels} pixels, over --max_pixels "
            f"{limits.max_pixels}; raise the limit to process this instance"
        )


def _force_parse(ds: Dataset, strip_private: list[tuple[int, list[str]]] | None = None) -> None:
    """Convert every raw element now, so that malformed values fail here and not at write time.

    With `strip_private` (a list to append (tag, texts) to), private elements are removed first.
    """
    if strip_private is not None:
        _strip_private(ds, strip_private)
    for tag in list(ds.keys()):
        try:
            elem = ds[tag]
            value = elem.value
            if elem.VR == "SQ":
                # A private sequence is kept whole (and removed whole by deidentify): its items are
                # parsed like any other, so that harvest_dicom still finds the values nested in it.
                inner = None if tag.is_private else strip_private
                for item in value:
                    _force_parse(item, inner)
            elif elem.VR == "PN":
                for one in value if isinstance(value, MultiValue) else [value]:
                    str(one)
        except (InvalidInputError, RecursionError):
            raise
        except (ValueError, TypeError, KeyError, EOFError, OSError, AttributeError, NotImplementedError,
                UnicodeError, OverflowError, IndexError, LookupError) as exc:
            raise InvalidInputError(
                f"malformed DICOM: element {_tag_text(int(tag))} cannot be parsed ({type(exc).__name__}); "
                "re-export the file"
            ) from None


def _without_private(data: bytes, layout: DatasetLayout, removed: list[tuple[int, list[str]]]) -> bytes:
    """`data` without its top-level private elements (sequences aside): pydicom never sees them."""
    kept: list[bytes] = []
    position = 0
    for span in layout.private:
        value = data[span.value_start : span.end]
        if _may_be_sequence(span.vr, span.undefined_length, value):
            continue
        kept.append(data[position : span.start])
        position = span.end
        removed.append((span.tag, _private_texts(span.tag, span.vr, value)))
    if not kept:
        return data
    kept.append(data[position:])
    return b"".join(kept)


def _strip_private(ds: Dataset, removed: list[tuple[int, list[str]]]) -> None:
    for tag, raw in list(ds._dict.items()):
        if not tag.is_private:
            continue
        value = getattr(raw, "value", None)
        if _may_be_sequence(raw.VR, getattr(raw, "length", 0) == UNDEFINED_LENGTH, value):
            continue
        del ds._dict[tag]
        removed.append((int(tag), _private_texts(int(tag), raw.VR, value)))


def _may_be_sequence(vr: str | None, undefined_length: bool, value: object) -> bool:
    """Explicit SQ, undefined length, or (implicit VR) a value that starts with an item tag."""
    if vr == "SQ" or undefined_length:
        return True
    return isinstance(value, bytes) and value[:4] in ITEM_TAG_BYTES


def _private_texts(tag: int, vr: str | None, value: object) -> list[str]:
    # Creator elements (gggg,0010-00FF) name a vendor, not a person.
    return _raw_texts(vr, value) if (tag & 0xFFFF) >= 0x0100 else []


def _raw_texts(vr: str | None, value: object) -> list[str]:
    """Values of a raw (or already converted) element as text; numbers and bulk data give none."""
    if vr in NUMERIC_VRS or vr in ("AT", "DS", "IS", "OF", "OD", "OL", "OV", "OW"):
        return []
    if isinstance(value, bytes | bytearray | memoryview):
        if len(value) > MAX_PRIVATE_TEXT_BYTES:
            return []
        text = bytes(value).decode("latin-1")
    elif isinstance(value, str):
        text = value
    else:
        return []
    parts = (part.strip("\x00 ") for part in text.split("\\"))
    return [part for part in parts if len(part) >= 3]


# --------------------------------------------------------------------------------------- deidentify


@dataclass
class _Run:
    """Mutable state of one deidentify() call."""

    settings: ProfileSettings
    key: DeidKey
    sop_class: str
    shift_days: int
    keep: frozenset[int]
    remove: frozenset[int]
    safe_private: frozenset[tuple[str, int, int]]
    clean_tokens: frozenset[str]
    counts: Counter[str] = field(default_factory=Counter)
    uid_map: dict[str, str] = field(default_factory=dict)
    patient_ids: dict[str, str] = field(default_factory=dict)
    phi: set[str] = field(default_factory=set)
    enabled: frozenset[str] = frozenset()


def _resolve_tags(items: Iterable[str], what: str) -> frozenset[int]:
    tags: set[int] = set()
    for item in items:
        tag = parse_tag(item)
        if tag is None:
            tag = tag_for_keyword(item.strip())
        if tag is None:
            raise ProfileError(f"--{what} names '{item}', which is neither a tag nor a DICOM keyword; fix the list")
        tags.add(tag)
    return frozenset(tags)


def _parse_safe_private(items: Iterable[str]) -> frozenset[tuple[str, int, int]]:
    out = set(SAFE_PRIVATE)
    for item in items:
        creator, sep, rest = item.rpartition(":")
        match = re.fullmatch(r"\(?([0-9A-Fa-f]{4}),([0-9A-Fa-f]{2})\)?", rest.strip())
        if not sep or not creator.strip() or not match or not int(match.group(1), 16) % 2:
            raise ProfileError(
                f"safe private tag '{item}' must be 'Creator:gggg,ee' with an odd group gggg and the "
                "element byte ee"
            )
        out.add((creator.strip(), int(match.group(1), 16), int(match.group(2), 16)))
    return frozenset(out)


def _values(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, bytes):
        return [value.decode("latin-1")]
    # PersonName and str are iterable too, character by character: only real multi-values split.
    if isinstance(value, list | tuple | MultiValue):
        return [str(v) for v in value if v is not None]
    return [str(value)]


def _normalise(text: str) -> str:
    return re.sub(r"[^0-9A-Z]", "", text.upper())


def _date_forms(text: str) -> list[str]:
    """A DA value and the forms it takes in free text (ISO, US and European orders)."""
    match = re.fullmatch(r"(\d{4})(\d{2})(\d{2})", text.strip()[:8])
    if not match:
        return []
    y, m, d = match.groups()
    return [y + m + d, m + d + y, d + m + y]


def _harvest(ds: Dataset, into: set[str]) -> None:
    """Identifying values that clean_descriptors removes from free text: names, IDs, dates."""
    for elem in ds:
        if elem.tag.is_private:
            continue
        if elem.VR == "SQ":
            for item in elem.value or []:
                _harvest(item, into)
            continue
        row = _row(int(elem.tag))
        if elem.VR not in ("PN", "LO", "SH", "DA", "DT") or row is None or row.basic == "K":
            continue
        if row.option("clean_descriptors") or row.option("patient_chars") == "C":
            continue
        for value in _values(elem.value):
            if elem.VR == "PN":
                for part in re.split(r"[\^=\s,]+", value):
                    if len(_normalise(part)) >= 2:
                        into.add(_normalise(part))
            if elem.VR in ("DA", "DT"):
                into.update(_date_forms(value))
            elif len(_normalise(value)) >= 2:
                into.add(_normalise(value))


def _row(tag: int) -> ProfileRow | None:
    row = profile_table.BY_TAG.get(tag)
    if row is not None:
        return row
    for mask, value, masked in profile_table.MASKED:
        if tag & mask == value:
            return masked
    return None


def _is_repeating_graphics(tag: int) -> bool:
    group = tag >> 16
    return (0x6000 <= group <= 0x60FF or 0x5000 <= group <= 0x50FF) and group % 2 == 0


def _is_standard_uid(value: str) -> bool:
    return value in UID_dictionary or value.startswith(STANDARD_UID_ROOT)


def _keeps_uid(tag: int) -> bool:
    """Class and syntax UIDs name kinds of things, not instances: never remapped."""
    keyword = keyword_for_tag(tag)
    return "ClassUID" in keyword or "TransferSyntax" in keyword or keyword in (
        "SOPClassesInStudy", "CodingSchemeUID", "ContextGroupExtensionCreatorUID", "MappingResourceUID",
        "PrivateInformationCreatorUID", "ContextUID", "TemplateExtensionCreatorUID",
    )


def _combined(code: str, typ: int | None) -> str:
    """Resolve a combined code by the attribute's type; None (unknown) keeps the element present."""
    if code == "Z/D":
        return "Z" if typ == 2 else "D"
    if code == "X/Z":
        return "X" if typ == 3 else "Z"
    if code == "X/D":
        return "X" if typ == 3 else "D"
    if code == "X/Z/D":
        return {3: "X", 2: "Z"}.get(typ or 1, "D")
    if code == "X/Z/U*":
        return {3: "X", 2: "Z"}.get(typ or 1, "U")
    return code


def _action(run: _Run, elem: DataElement, nested: bool, deep: bool) -> tuple[str, str | None]:
    """(action code, option that chose a C) for one public element."""
    tag = int(elem.tag)
    if tag in run.remove:
        return "X", None
    if tag in run.keep:
        return "K", None
    if tag & 0xFFFF == 0:
        return "X", None  # group lengths go stale once elements change
    if _is_repeating_graphics(tag):
        return "X", None
    if tag == GRAPHIC_ANNOTATION_SEQUENCE and run.settings.clean_graphics:
        return "X", None
    if tag == PATIENT_ID:
        return "P", None
    row = _row(tag)
    if row is None:
        return _unlisted(run, elem, deep), None
    chosen_c: str | None = None
    for option in run.enabled:
        code = row.option(option)
        if code == "K":
            return "K", None
        if code == "C" and chosen_c is None:
            chosen_c = option
    if chosen_c is not None:
        return "C", chosen_c
    typ = attribute_type(run.sop_class, tag, nested)
    code = _combined(row.basic, typ)
    if typ is not None and known_iod(run.sop_class):
        # Plain X or Z on an attribute the IOD requires would leave an invalid instance.
        if code == "X" and typ in (1, 2):
            code = "D" if typ == 1 else "Z"
        elif code == "Z" and typ == 1:
            code = "D"
    return code, None


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
    for value in _values(elem.value):
        value = value.strip().rstrip("\x00")
        if len(value) >= 3:
            run.phi.add(value)
        if elem.VR == "PN":
            run.phi.update(p for p in re.split(r"[\^=]+", value) if len(p.strip()) >= 3)


def _shift_date(text: str, days: int) -> str | None:
    """Shift a DA (or the date part of a DT) back by `days`; None when it is not a date."""
    text = text.strip()
    match = re.fullmatch(r"(\d{4})(\d{2})?(\d{2})?(.*)", text)
    if not match:
        return None
    year, month, day, rest = match.groups()
    try:
        date = dt.date(int(year), int(month or 1), int(day or 1)) - dt.timedelta(days=days)
    except ValueError:
        return None
    if day:
        return date.strftime("%Y%m%d") + rest
    if month:
        return date.strftime("%Y%m") + rest
    return date.strftime("%Y") + rest


def _shifted(value: str, vr: str, days: int) -> str:
    out = []
    for one in value.split("\\"):
        parts = one.split("-") if vr == "DA" else [one]
        shifted = [(_shift_date(p, days) if p else "") for p in parts]
        if any(s is None for s in shifted):
            out.append(DUMMY_DATE if vr == "DA" else DUMMY_DATETIME)
        else:
            out.append("-".join(s or "" for s in shifted))
    return "\\".join(out)


def _dummy(run: _Run, elem: DataElement, purpose: str) -> object:
    vr = elem.VR
    values = _values(elem.value)
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
        if _normalise(token) in run.clean_tokens or any(_normalise(p) in run.clean_tokens for p in parts):
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
    values = _values(elem.value)
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
        if not elem.tag.is_private or tag in run.remove or (tag & 0xFFFF) < 0x1000:
            continue
        group, block, byte = tag >> 16, (tag >> 8) & 0xFF, tag & 0xFF
        creator_tag = (group << 16) | block
        if creator_tag not in ds:
            continue
        creator = str(ds[creator_tag].value or "").strip()
        if (creator, group, byte) in run.safe_private or tag in run.keep:
            keep.update((tag, creator_tag))
    return keep


def _apply(run: _Run, elem: DataElement, nested: bool, deep: bool, identity: bool) -> DataElement | None:
    tag = int(elem.tag)
    if tag in PIXEL_TAGS and tag not in run.remove:
        run.counts["kept"] += 1
        return elem
    code, option = _action(run, elem, nested, deep)
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
    if code == "S" or (code == "C" and option == "long_modified_dates"):
        return _shift(run, elem)
    if code == "C":
        return _clean(run, elem, option)
    # D, and U on a non-UID element.
    if not _values(elem.value) and vr not in BINARY_VRS:
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
    value = "\\".join(_values(elem.value))
    if not value:
        run.counts["kept"] += 1
        return elem
    run.counts["dates_shifted"] += 1
    _record_phi(run, elem)
    return _new(elem, _shifted(value, elem.VR, run.shift_days))


def _clean(run: _Run, elem: DataElement, option: str | None) -> DataElement | None:
    vr = elem.VR
    if option == "clean_graphics":
        run.counts["removed"] += 1
        return None
    if vr in FREE_TEXT_VRS:
        values = _values(elem.value)
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


def _method(settings: ProfileSettings, codes: list[str]) -> tuple[list[str], Sequence]:
    names = ["PS3.15 E.1 Basic Profile"] + [
        CODE_MEANINGS[code].removesuffix(" Option")[:64] for code in codes if code != "113100"
    ]
    items = []
    for code in codes:
        item = Dataset()
        item.CodeValue = code
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = CODE_MEANINGS[code]
        items.append(item)
    return names, Sequence(items)


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
                f"{keyword} {_tag_text(tag_for_keyword(keyword) or 0)[len(keyword) + 1:]} is missing or empty; "
                "not a composite instance this pipeline can de-identify"
            )
    remove = _resolve_tags(settings.remove, "remove")
    keep = _resolve_tags(settings.keep, "keep") - remove
    required = remove & REQUIRED_TAGS
    if required:
        names = ", ".join(sorted(_tag_text(t) for t in required))
        raise ProfileError(f"--remove names {names}, which every instance needs; take it off the list")

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
    enabled = frozenset(option for flag, option, _ in OPTIONS if getattr(settings, flag))
    run = _Run(
        settings=settings,
        key=key,
        sop_class=sop_class,
        shift_days=key.date_shift_days(original_pid),
        keep=keep,
        remove=remove,
        safe_private=_parse_safe_private(settings.safe_private_tags) if settings.retain_safe_private else frozenset(),
        clean_tokens=frozenset(tokens),
        enabled=enabled,
    )
    if stripped is not None and stripped.count:
        run.counts["private_removed"] += stripped.count
        run.phi.update(stripped.texts)
    try:
        out = _process(run, ds, nested=False, deep=False, identity=False)
        codes = ["113100"] + [code for flag, _, code in OPTIONS if getattr(settings, flag)]
        method_names, sequence = _method(settings, codes)
        out.PatientIdentityRemoved = "YES"
        out.add_new(0x00120063, "LO", method_names)
        out.DeidentificationMethodCodeSequence = sequence
        if settings.retain_long_modified_dates:
            out.add_new(LONGITUDINAL_MODIFIED, "CS", "MODIFIED")
        elif settings.retain_long_full_dates:
            out.add_new(LONGITUDINAL_MODIFIED, "CS", "UNMODIFIED")
        else:
            out.add_new(LONGITUDINAL_MODIFIED, "CS", "REMOVED")
        out.file_meta = _file_meta(run, ds, meta, out)
        _copy_encoding(ds, out)
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
            values.update(v.strip() for v in _values(elem.value))
    return frozenset(values)


def _file_meta(run: _Run, ds: Dataset, meta: Dataset, out: Dataset) -> FileMetaDataset:
    new = FileMetaDataset()
    new.MediaStorageSOPClassUID = out.SOPClassUID
    new.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    old_instance = str(meta.get("MediaStorageSOPInstanceUID", "") or "").strip()
    if old_instance and not run.settings.retain_uids and 0x00020003 not in run.keep:
        _remap_uid(run, old_instance)
    syntax = meta.get("TransferSyntaxUID")
    if not syntax:
        if ds.original_encoding[0] is not False:
            syntax = ImplicitVRLittleEndian
        elif ds.original_encoding[1] is False:
            syntax = ExplicitVRBigEndian
        else:
            syntax = ExplicitVRLittleEndian
    new.TransferSyntaxUID = syntax
    new.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    new.ImplementationVersionName = IMPLEMENTATION_VERSION
    return new


def _copy_encoding(src: Dataset, dst: Dataset) -> None:
    implicit, little = src.original_encoding
    if implicit is not None and little is not None:
        dst.set_original_encoding(implicit, little, src.original_character_set)


def mark_pixel_data_cleaned(ds: pydicom.Dataset) -> None:
    """After burned-in text was redacted: record Clean Pixel Data (113101) and BurnedInAnnotation NO."""
    sequence = ds.get("DeidentificationMethodCodeSequence") or Sequence()
    if not any(str(item.get("CodeValue", "")) == "113101" for item in sequence):
        item = Dataset()
        item.CodeValue = "113101"
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = CODE_MEANINGS["113101"]
        sequence.append(item)
        ds.DeidentificationMethodCodeSequence = sequence
        methods = list(_values(ds.get("DeidentificationMethod")))
        ds.add_new(0x00120063, "LO", [*methods, "Clean Pixel Data"])
    ds.BurnedInAnnotation = "NO"


# --------------------------------------------------------------------------------------------- write


def write_dicom(ds: pydicom.Dataset) -> bytes:
    """Encode as a Part 10 file in the dataset's transfer syntax; pixel data bytes are copied as they are."""
    buffer = io.BytesIO()
    # The input preamble is free-form (dual-personality files put a TIFF header there): never copy it.
    ds.preamble = b"\x00" * 128
    try:
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    except (ValueError, TypeError, AttributeError, KeyError, OverflowError, UnicodeError, LookupError) as exc:
        raise ProfileError(
            f"the de-identified dataset cannot be encoded ({type(exc).__name__}); report it with the input hash"
        ) from None
    return buffer.getvalue()


_UID_PATH = re.compile(r"[0-9]+(\.[0-9]+)*")


def output_relpath(ds: pydicom.Dataset) -> str:
    """dicom/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm of the de-identified dataset."""
    parts = []
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        value = str(ds.get(keyword, "") or "").strip().rstrip("\x00")
        if not _UID_PATH.fullmatch(value) or len(value) > 64:
            raise ProfileError(f"{keyword} is missing or not a valid UID, so the output cannot be named")
        parts.append(value)
    return f"dicom/{parts[0]}/{parts[1]}/{parts[2]}.dcm"
