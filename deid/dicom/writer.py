"""What a de-identified dataset records about itself, and its encoding as a Part 10 file.

`record_method` adds the De-identification Method attributes (PS3.15 E.1, CID 7050 codes) and
`mark_pixel_data_cleaned` extends them after pixel redaction; `file_meta` builds new file meta
information in the input's transfer syntax; `write_dicom` encodes and `output_relpath` names the file.
"""

from __future__ import annotations

import io
import re

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from deid.dicom.elements import element_values
from deid.dicom.policy import enabled_option_codes
from deid.errors import ProfileError
from deid.settings import ProfileSettings

IMPLEMENTATION_VERSION = "DEID_PIPELINE_1"
LONGITUDINAL_MODIFIED = 0x00280303
DEIDENTIFICATION_METHOD = 0x00120063
BASIC_PROFILE_CODE = "113100"
CLEAN_PIXEL_DATA_CODE = "113101"

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

_UID_PATH = re.compile(r"[0-9]+(\.[0-9]+)*")


def _method_item(code: str) -> Dataset:
    item = Dataset()
    item.CodeValue = code
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = CODE_MEANINGS[code]
    return item


def record_method(out: Dataset, settings: ProfileSettings) -> None:
    """PatientIdentityRemoved, De-identification Method (text and codes), Longitudinal Temporal Information."""
    codes = [BASIC_PROFILE_CODE, *enabled_option_codes(settings)]
    names = ["PS3.15 E.1 Basic Profile"] + [
        CODE_MEANINGS[code].removesuffix(" Option")[:64] for code in codes if code != BASIC_PROFILE_CODE
    ]
    out.PatientIdentityRemoved = "YES"
    out.add_new(DEIDENTIFICATION_METHOD, "LO", names)
    out.DeidentificationMethodCodeSequence = Sequence([_method_item(code) for code in codes])
    if settings.retain_long_modified_dates:
        out.add_new(LONGITUDINAL_MODIFIED, "CS", "MODIFIED")
    elif settings.retain_long_full_dates:
        out.add_new(LONGITUDINAL_MODIFIED, "CS", "UNMODIFIED")
    else:
        out.add_new(LONGITUDINAL_MODIFIED, "CS", "REMOVED")


def mark_pixel_data_cleaned(ds: pydicom.Dataset) -> None:
    """After burned-in text was redacted: record Clean Pixel Data (113101) and BurnedInAnnotation NO."""
    sequence = ds.get("DeidentificationMethodCodeSequence") or Sequence()
    if not any(str(item.get("CodeValue", "")) == CLEAN_PIXEL_DATA_CODE for item in sequence):
        sequence.append(_method_item(CLEAN_PIXEL_DATA_CODE))
        ds.DeidentificationMethodCodeSequence = sequence
        methods = list(element_values(ds.get("DeidentificationMethod")))
        ds.add_new(DEIDENTIFICATION_METHOD, "LO", [*methods, "Clean Pixel Data"])
    ds.BurnedInAnnotation = "NO"


def file_meta(ds: Dataset, meta: Dataset, out: Dataset) -> FileMetaDataset:
    """File meta of `out` (de-identified from `ds`, whose file meta was `meta`), in the input's syntax."""
    new = FileMetaDataset()
    new.MediaStorageSOPClassUID = out.SOPClassUID
    new.MediaStorageSOPInstanceUID = out.SOPInstanceUID
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


def copy_encoding(src: Dataset, dst: Dataset) -> None:
    """Give `dst` the byte order, VR mode and character set `src` was read with."""
    implicit, little = src.original_encoding
    if implicit is not None and little is not None:
        dst.set_original_encoding(implicit, little, src.original_character_set)


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


def output_relpath(ds: pydicom.Dataset) -> str:
    """dicom/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm of the de-identified dataset."""
    parts = []
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        value = str(ds.get(keyword, "") or "").strip().rstrip("\x00")
        if not _UID_PATH.fullmatch(value) or len(value) > 64:
            raise ProfileError(f"{keyword} is missing or not a valid UID, so the output cannot be named")
        parts.append(value)
    return f"dicom/{parts[0]}/{parts[1]}/{parts[2]}.dcm"
