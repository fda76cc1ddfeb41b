"""The leak check of a DICOM output just encoded, without parsing it again.

`scan_encoded_dicom(ds, payload, relpath, values)` gives the hits of deid/verify/scan.py's
`scan_output(payload, relpath, values)` for a payload that is pydicom's Part 10 encoding of `ds`:
the structured search reads each element of `ds` in memory as the re-parse would read it, and falls
back to parsing `payload` wherever the written bytes could read differently. The matching rules are
scan.py's; this module only stands in for the parse.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

import pydicom
from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataset import FileMetaDataset, validate_file_meta
from pydicom.uid import UID
from pydicom.valuerep import CUSTOMIZABLE_CHARSET_VR, EXPLICIT_VR_LENGTH_32, PersonName

from deid.verify.scan import (
    NUMBER_VRS,
    PIXEL_DATA_TAGS,
    TEXT_VRS,
    codec_of,
    decoded_pieces,
    dictionary_vr,
    finish_hits,
    location_tag,
    match_pieces,
    needles_of,
    scan_output,
    scan_raw,
    scan_text,
)
from deid.verify.values import MAX_STRUCTURED_BYTES, LeakHit, PhiLike, element_texts


def scan_encoded_dicom(ds: Any, payload: bytes, relpath: str, values: Iterable[PhiLike]) -> list[LeakHit]:
    """`scan_output(payload, relpath, values)` for a payload that is the Part 10 encoding of `ds` just
    made by pydicom (deid.dicom.writer.write_dicom), without parsing the payload again.

    The structured search runs over `ds` itself, reading each element as the re-parse of `payload`
    would read it (`_written_pieces`: the same elements in file order, the same texts, the same
    locations), and the raw pass and the relative path are searched as scan_output searches them, so
    the hits are the same. Where the written bytes could read differently from the dataset in memory
    (implicit VR private elements, UN, values too long for their VR's length field, text that is not
    plain ASCII in a character set that could change it, anything unconverted), `payload` is parsed
    and scanned as scan_output does.
    """
    written = _written_pieces(ds, relpath) if payload[128:132] == b"DICM" else None
    if written is None:
        return scan_output(payload, relpath, values)
    structure_hits, pieces = written
    needles = needles_of(values)
    hits = scan_text(relpath.replace("/", " / "), needles, relpath, "relpath")
    hits += structure_hits + match_pieces(pieces, needles, relpath)
    hits += scan_raw(io.BytesIO(payload), needles, relpath)
    return finish_hits(hits)


class _Unmirrored(Exception):
    """The dataset in memory may not read back as its written bytes do: scan the bytes instead."""


# The character set whose texts are searched as pydicom converts them on the re-parse (not a plain
# codec) and which encodes every text losslessly, so the dataset's own texts are those texts.
_LOSSLESS_ENCODINGS = (["UTF8"], ["utf_8"])


def _written_pieces(ds: Any, relpath: str) -> tuple[list[LeakHit], list[tuple[str, str]]] | None:
    """(hits, pieces) that `_scan_dicom_structure` finds in the written form of `ds`; None when the
    dataset in memory cannot stand for its bytes (see scan_encoded_dicom)."""
    if getattr(ds, "file_meta", None) is None or not ds._dict:
        return None
    try:
        meta = _written_meta(ds)
        implicit = UID(str(meta.TransferSyntaxUID)).is_implicit_VR
    except (AttributeError, ValueError, KeyError, TypeError):
        return None
    pieces: list[tuple[str, str]] = []
    try:
        hits = _mirror_pieces(meta, relpath, "dicom:meta", 0, pieces, False, default_encoding)
        hits += _mirror_pieces(ds, relpath, "dicom", 0, pieces, implicit, default_encoding)
    except _Unmirrored:
        return None
    return hits, pieces


def _mirror_pieces(
    ds: Any,
    relpath: str,
    prefix: str,
    depth: int,
    pieces: list[tuple[str, str]],
    implicit: bool,
    parent_encoding: Any,
) -> list[LeakHit]:
    """`_dataset_pieces` of the re-parsed `ds`, made from `ds` in memory. Raises _Unmirrored."""
    if depth > 64:
        return [LeakHit(relpath, "unverifiable", f"{prefix}:sequence nesting deeper than 64")]
    encoding = _own_encoding(ds, parent_encoding)  # as pydicom gives an item its parent's
    codec = codec_of(encoding)
    if codec is None and encoding not in _LOSSLESS_ENCODINGS:
        raise _Unmirrored
    present = ds._dict
    hits: list[LeakHit] = []
    for tag in sorted(present, key=int):  # the writer's order, and so the re-parse's
        tag = int(tag)
        if tag in PIXEL_DATA_TAGS or (tag & 0xFFFF == 0 and tag >> 16 > 6):  # group lengths are not written
            continue
        elem = present[tag]
        if getattr(elem, "is_raw", True):
            raise _Unmirrored
        if elem.value is None:
            continue  # written with no value: nothing to search (other empty values give no text either)
        vr = str(elem.VR)
        if implicit:
            if (tag >> 16) & 1:
                raise _Unmirrored  # the re-parse names a private element's VR from its creator
            read_vr = dictionary_vr(tag)
            if read_vr is None:
                _require_ambiguous(tag, elem.value)
            elif (read_vr == "SQ") != (vr == "SQ"):
                raise _Unmirrored
        else:
            if len(vr) != 2:
                raise _Unmirrored
            read_vr = vr
        where = f"{prefix}{location_tag(tag, present)}"
        if vr == "SQ":
            for index, item in enumerate(elem.value):
                hits += _mirror_pieces(item, relpath, f"{where}[{index}]>", depth + 1, pieces, implicit, encoding)
            continue
        if read_vr in NUMBER_VRS:
            continue
        if read_vr in TEXT_VRS and codec is not None:
            text = _written_text(elem.value, vr, codec)
            if not implicit and vr not in EXPLICIT_VR_LENGTH_32 and len(text) >= 0xFFFF:
                raise _Unmirrored  # written as UN
            pieces += [(where, part.strip("\x00 ")) for part in text.split("\\") if part.strip("\x00 ")]
            continue
        if read_vr == "UN":
            raise _Unmirrored  # the re-parse may convert it to its dictionary VR
        value = elem.value
        if read_vr in TEXT_VRS:  # a lossless character set: the re-parse converts the text
            pieces += [(where, text) for text in element_texts(elem)]
        elif isinstance(value, bytes | bytearray):
            data = bytes(value) + b"\x00" * (len(value) % 2)
            if not implicit and vr not in EXPLICIT_VR_LENGTH_32 and len(data) > 0xFFFF:
                raise _Unmirrored
            if len(data) <= MAX_STRUCTURED_BYTES:
                pieces += decoded_pieces(data, where)
        elif not _numbers(value):
            raise _Unmirrored
    return hits


def _written_meta(ds: Any) -> FileMetaDataset:
    """The file meta pydicom's dcmwrite(ds, enforce_file_format=True) writes: a copy of ds.file_meta
    with the SOP class and instance UIDs of `ds`, the elements validation adds, and a group length."""
    meta = FileMetaDataset(dict(ds.file_meta._dict))  # new elements are set, none is changed in place
    for meta_keyword, keyword in (
        ("MediaStorageSOPClassUID", "SOPClassUID"),
        ("MediaStorageSOPInstanceUID", "SOPInstanceUID"),
    ):
        ours, theirs = meta.get(meta_keyword, None), ds.get(keyword, None)
        if ours is None or (theirs and theirs != ours):
            setattr(meta, meta_keyword, theirs)
    validate_file_meta(meta, enforce_standard=True)
    if "FileMetaInformationGroupLength" not in meta:
        meta.FileMetaInformationGroupLength = 0
    return meta


def _own_encoding(ds: Any, parent_encoding: Any) -> Any:
    elem = ds._dict.get(0x00080005)
    if elem is None:
        return parent_encoding
    if getattr(elem, "is_raw", True):
        raise _Unmirrored
    try:
        return convert_encodings(elem.value)
    except (LookupError, ValueError, TypeError):
        raise _Unmirrored from None


def _require_ambiguous(tag: int, value: object) -> None:
    """An implicit VR element whose dictionary VR is 'US or SS' holding numbers, or 'OB or OW' holding
    bytes: the re-parse converts its bytes to the same. Anything else: raise _Unmirrored."""
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        raise _Unmirrored from None
    if vr == "US or SS" and _numbers(value):
        return
    if vr == "OB or OW" and isinstance(value, bytes | bytearray):
        return
    raise _Unmirrored


def _numbers(value: object) -> bool:
    if isinstance(value, int | float):
        return True
    return isinstance(value, list | tuple | pydicom.multival.MultiValue) and all(
        isinstance(v, int | float) for v in value
    )


def _written_text(value: object, vr: str, codec: str) -> str:
    """The text a text element's bytes decode to on the re-parse: its values joined by backslashes.

    Only values that the writer encodes to bytes that decode back to the same text: str and
    PersonName in ASCII, or in a character set VR that `codec` encodes strictly. Raises _Unmirrored.
    """
    items = value if isinstance(value, list | tuple | pydicom.multival.MultiValue) else [value]
    texts = []
    for item in items:
        if not isinstance(item, str | PersonName):
            raise _Unmirrored
        texts.append(str(item))
    text = "\\".join(texts)
    if not text.isascii():
        if vr not in CUSTOMIZABLE_CHARSET_VR:
            raise _Unmirrored  # written in the default encoding, read back in `codec`
        try:
            text.encode(codec)
        except (UnicodeError, LookupError):
            raise _Unmirrored from None
    return text
