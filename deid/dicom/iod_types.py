"""Attribute types (1, 2, 3) in common IODs, for the combined action codes of PS3.15 Table E.1-1.

The Basic Profile gives some attributes a combined code (Z/D, X/Z, X/D, X/Z/D, X/Z/U*) whose choice
depends on the attribute's type in the IOD of the instance: remove an optional (Type 3) attribute,
empty a Type 2 one, dummy a Type 1 one. The module tables of PS3.3 are not available offline, so this
is a small hand-built table of the top-level attributes that carry such codes (plus the few plain X
or Z attributes that an IOD requires, e.g. Presentation Creation Date in a presentation state) for the
IODs this pipeline sees most: CT, MR, US, SC, NM, PET, CR/DX/MG, SR, KO, PR, RT, SEG, ECG and VL
Whole Slide Microscopy, classic and enhanced. Types were read from PS3.3 (2024b); a conditional type
(1C, 2C) is recorded as its unconditional one, which is the choice that keeps the instance valid.

`attribute_type` returns None when the IOD is not in the table or the attribute is nested in a
sequence (whose type depends on the macro, not the IOD). Callers then take the conservative choice
that keeps the instance valid: presence kept, value emptied or dummied (see deidentify._combined).
In a known IOD an attribute the table does not list is Type 3 there (or not part of the IOD).
"""

from __future__ import annotations

from typing import Final

_CT = "1.2.840.10008.5.1.4.1.1.2"
_ENHANCED_CT = ("1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2")
_MR = "1.2.840.10008.5.1.4.1.1.4"
_ENHANCED_MR = ("1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.4.3", "1.2.840.10008.5.1.4.1.1.4.4")
_US = ("1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.3.1")
_SC = ("1.2.840.10008.5.1.4.1.1.7",)
_SC_MULTIFRAME = tuple(f"1.2.840.10008.5.1.4.1.1.7.{n}" for n in (1, 2, 3, 4))
_NM_PET_CR_DX = (
    "1.2.840.10008.5.1.4.1.1.20",  # NM
    "1.2.840.10008.5.1.4.1.1.128",  # PET
    "1.2.840.10008.5.1.4.1.1.1",  # CR
    "1.2.840.10008.5.1.4.1.1.1.1",  # DX for presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # DX for processing
    "1.2.840.10008.5.1.4.1.1.1.2",  # MG for presentation
    "1.2.840.10008.5.1.4.1.1.1.2.1",  # MG for processing
    "1.2.840.10008.5.1.4.1.1.12.1",  # XA
)
_RT_IMAGE_DOSE = ("1.2.840.10008.5.1.4.1.1.481.1", "1.2.840.10008.5.1.4.1.1.481.2")
_SR = tuple(
    f"1.2.840.10008.5.1.4.1.1.88.{n}" for n in (11, 22, 33, 34, 35, 40, 50, 59, 65, 67, 68, 69, 70, 71, 72, 73, 74)
)
_PR = tuple(f"1.2.840.10008.5.1.4.1.1.11.{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8))
_RT_PLAN = ("1.2.840.10008.5.1.4.1.1.481.5", "1.2.840.10008.5.1.4.1.1.481.8")
_RT_STRUCT = ("1.2.840.10008.5.1.4.1.1.481.3",)
_RT_RECORD = (
    "1.2.840.10008.5.1.4.1.1.481.4",  # RT Beams Treatment Record
    "1.2.840.10008.5.1.4.1.1.481.6",  # RT Brachy Treatment Record
    "1.2.840.10008.5.1.4.1.1.481.7",  # RT Treatment Summary Record
    "1.2.840.10008.5.1.4.1.1.481.9",  # RT Ion Beams Treatment Record
)
_SEG = ("1.2.840.10008.5.1.4.1.1.66.4",)
_ECG = tuple(f"1.2.840.10008.5.1.4.1.1.9.{n}" for n in ("1.1", "1.2", "1.3", "2.1", "3.1", "4.1", "5.1"))
_WSI = ("1.2.840.10008.5.1.4.1.1.77.1.6",)

CONTENT_DATE = 0x00080023
CONTENT_TIME = 0x00080033
ACQUISITION_DATETIME = 0x0008002A
DEVICE_SERIAL_NUMBER = 0x00181000
CONTRAST_BOLUS_AGENT = 0x00180010
PATIENT_ID = 0x00100020
PATIENT_SEX_NEUTERED = 0x00102203
ACQUISITION_CONTEXT_SEQUENCE = 0x00400555
CONTENT_CREATOR_NAME = 0x00700084
PRESENTATION_CREATION_DATE = 0x00700082
PRESENTATION_CREATION_TIME = 0x00700083
REFERENCED_PPS_SEQUENCE = 0x00081111
RT_PLAN_DATE = 0x300A0006
RT_PLAN_TIME = 0x300A0007
REVIEWER_NAME = 0x300E0008
OPERATORS_NAME = 0x00081070
FIRST_TREATMENT_DATE = 0x30080054
MOST_RECENT_TREATMENT_DATE = 0x30080056

# Patient and General Study modules, in every composite IOD.
_PATIENT_STUDY: Final[dict[int, int]] = {PATIENT_ID: 2, PATIENT_SEX_NEUTERED: 2}
# General Image module (2C content date and time) and Contrast/Bolus module (Type 2 agent).
_CLASSIC_IMAGE: Final[dict[int, int]] = {
    **_PATIENT_STUDY,
    CONTENT_DATE: 2,
    CONTENT_TIME: 2,
    CONTRAST_BOLUS_AGENT: 2,
}
# Multi-frame Functional Groups (Type 1 content date/time), Enhanced General Equipment (Type 1
# serial number), Acquisition Context (Type 2 sequence).
_ENHANCED_IMAGE: Final[dict[int, int]] = {
    **_PATIENT_STUDY,
    CONTENT_DATE: 1,
    CONTENT_TIME: 1,
    ACQUISITION_DATETIME: 1,
    DEVICE_SERIAL_NUMBER: 1,
    ACQUISITION_CONTEXT_SEQUENCE: 2,
    CONTRAST_BOLUS_AGENT: 2,
}
# SR Document General: Type 1 content date/time, Type 2 Referenced PPS Sequence.
_SR_TYPES: Final[dict[int, int]] = {**_PATIENT_STUDY, CONTENT_DATE: 1, CONTENT_TIME: 1, REFERENCED_PPS_SEQUENCE: 2}
# Presentation State Identification: Type 1 creation date/time, Type 2 content creator's name.
_PR_TYPES: Final[dict[int, int]] = {
    **_PATIENT_STUDY,
    PRESENTATION_CREATION_DATE: 1,
    PRESENTATION_CREATION_TIME: 1,
    CONTENT_CREATOR_NAME: 2,
}
# RT Series (Type 2 operators' name), RT General Plan (Type 2 plan date/time), Approval (2C reviewer).
_RT_SERIES: Final[dict[int, int]] = {**_PATIENT_STUDY, OPERATORS_NAME: 2}
_RT_IMAGE_DOSE_TYPES: Final[dict[int, int]] = {**_CLASSIC_IMAGE, OPERATORS_NAME: 2}
_RT_PLAN_TYPES: Final[dict[int, int]] = {**_RT_SERIES, RT_PLAN_DATE: 2, RT_PLAN_TIME: 2, REVIEWER_NAME: 2}
_RT_STRUCT_TYPES: Final[dict[int, int]] = {**_RT_SERIES, REVIEWER_NAME: 2}
_RT_RECORD_TYPES: Final[dict[int, int]] = {
    **_RT_SERIES,
    FIRST_TREATMENT_DATE: 2,
    MOST_RECENT_TREATMENT_DATE: 2,
}
# Segmentation: enhanced equipment and multi-frame groups, Content Identification (Type 2 creator).
_SEG_TYPES: Final[dict[int, int]] = {
    **_PATIENT_STUDY,
    CONTENT_DATE: 1,
    CONTENT_TIME: 1,
    DEVICE_SERIAL_NUMBER: 1,
    CONTENT_CREATOR_NAME: 2,
}
# Waveform Identification (Type 1 acquisition datetime, content date/time), Acquisition Context.
_ECG_TYPES: Final[dict[int, int]] = {
    **_PATIENT_STUDY,
    CONTENT_DATE: 1,
    CONTENT_TIME: 1,
    ACQUISITION_DATETIME: 1,
    ACQUISITION_CONTEXT_SEQUENCE: 2,
}
# VL Whole Slide Microscopy Image: Type 1 acquisition datetime (WSI Image module) and as enhanced.
_WSI_TYPES: Final[dict[int, int]] = {
    **_PATIENT_STUDY,
    CONTENT_DATE: 1,
    CONTENT_TIME: 1,
    ACQUISITION_DATETIME: 1,
    DEVICE_SERIAL_NUMBER: 1,
    ACQUISITION_CONTEXT_SEQUENCE: 2,
}


def _table() -> dict[str, dict[int, int]]:
    table: dict[str, dict[int, int]] = {}
    groups: tuple[tuple[tuple[str, ...], dict[int, int]], ...] = (
        ((_CT, _MR, *_US, *_SC, *_SC_MULTIFRAME, *_NM_PET_CR_DX), _CLASSIC_IMAGE),
        ((*_ENHANCED_CT, *_ENHANCED_MR), _ENHANCED_IMAGE),
        (_SR, _SR_TYPES),
        (_PR, _PR_TYPES),
        (_RT_IMAGE_DOSE, _RT_IMAGE_DOSE_TYPES),
        (_RT_PLAN, _RT_PLAN_TYPES),
        (_RT_STRUCT, _RT_STRUCT_TYPES),
        (_RT_RECORD, _RT_RECORD_TYPES),
        (_SEG, _SEG_TYPES),
        (_ECG, _ECG_TYPES),
        (_WSI, _WSI_TYPES),
    )
    for uids, types in groups:
        for uid in uids:
            table[uid] = types
    return table


IOD_TYPES: Final[dict[str, dict[int, int]]] = _table()


def known_iod(sop_class_uid: str) -> bool:
    return sop_class_uid in IOD_TYPES


def attribute_type(sop_class_uid: str, tag: int, nested: bool) -> int | None:
    """1, 2 or 3 for a top-level attribute of a known IOD; None when unknown (nested or other IOD)."""
    if nested:
        return None
    types = IOD_TYPES.get(sop_class_uid)
    if types is None:
        return None
    return types.get(tag, 3)
