"""Tell DICOM from whole-slide images by content, never by file name.

Classification reads only the head of a file. DICOM: the 'DICM' magic at offset 128, or (for files
without a preamble) a dataset pydicom parses with `force=True` whose first element is a plausible
group-0002/0008 tag. WSI: TIFF and BigTIFF magic (SVS, NDPI, SCN, BIF, Philips TIFF, generic TIFF);
MIRAX is a `.mrxs` index beside a folder holding `Slidedat.ini`, recognised by that folder's content.
A DICOM file of the VL Whole Slide Microscopy SOP class is a slide, not a DICOM study instance.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from typing import Literal

import pydicom
from pydicom.errors import InvalidDicomError

Kind = Literal["dicom", "wsi", "unknown"]
HEAD_BYTES = 64 * 1024

VL_WHOLE_SLIDE_MICROSCOPY = "1.2.840.10008.5.1.4.1.1.77.1.6"
# InputRef.subtype of a DICOM instance this run wrote from a slide (stored into the Healthcare source store).
WSI_OUTPUT_SUBTYPE = "wsi-output"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


@dataclass(frozen=True)
class InputRef:
    """One input object: where it is, how big, its content hash and what it is.

    Small enough to be a PCollection element: no pixel or file bytes.
    """

    # repr=False: Beam logs elements at DEBUG, and an input path can carry PHI.
    path: str = field(repr=False)
    size: int
    sha256: str
    kind: Kind
    # 'tiff', 'dicom-wsi', 'mrxs' for slides; 'dicom' for DICOM; '' for unknown.
    subtype: str = ""
    # DICOM-WSI and MIRAX units span several files: the other files of the unit.
    companions: tuple[str, ...] = field(default=(), repr=False)
    # For DICOM-WSI: a key grouping the files of one slide (a keyed hash, never the raw UID). For MIRAX:
    # the SHA-256 over the hashes of all the unit's files, which names its output.
    group_key: str = ""


def is_tiff(head: bytes) -> bool:
    return head[:4] in _TIFF_MAGICS


def has_dicm_preamble(head: bytes) -> bool:
    return len(head) >= 132 and head[128:132] == b"DICM"


def looks_like_raw_dicom(head: bytes) -> bool:
    """A preamble-less DICOM stream starts with a group 0002 or 0008 element (little endian)."""
    if len(head) < 8:
        return False
    group, element = struct.unpack_from("<HH", head, 0)
    if group not in (0x0002, 0x0008):
        return False
    vr = head[4:6]
    explicit = vr.isalpha() and vr.isupper()
    if explicit:
        return True
    (length,) = struct.unpack_from("<I", head, 4)
    return length < 0x10000 and element < 0x1000


def dicom_sop_class(head: bytes) -> str | None:
    """SOP Class UID from the head of a DICOM file, or None when it cannot be read from the head."""
    try:
        ds = pydicom.dcmread(io.BytesIO(head), force=True, stop_before_pixels=True, specific_tags=["SOPClassUID"])
        meta = getattr(ds, "file_meta", None)
        value = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta else None)
    except (InvalidDicomError, EOFError, OSError, ValueError, struct.error, KeyError, TypeError):
        return None
    return str(value) if value else None


def classify_head(head: bytes) -> tuple[Kind, str]:
    """(kind, subtype) from the first bytes of a file.

    DICM is tested before TIFF magic: a DICOM preamble may legally hold a TIFF header
    (dual-personality files), and such a file is still read as DICOM.
    """
    if has_dicm_preamble(head) or (not is_tiff(head) and looks_like_raw_dicom(head)):
        # Parse only when the WSI class UID appears at all: a byte search is far cheaper than pydicom.
        if VL_WHOLE_SLIDE_MICROSCOPY.encode("ascii") in head and dicom_sop_class(head) == VL_WHOLE_SLIDE_MICROSCOPY:
            return "wsi", "dicom-wsi"
        return "dicom", "dicom"
    if is_tiff(head):
        return "wsi", "tiff"
    return "unknown", ""
