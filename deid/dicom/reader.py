"""Strict reading of DICOM bytes, bounded by the run's limits.

`read_dicom` parses a file and converts every element at every depth, so that malformed values fail
here with a reason and not later at write time. `read_for_profile` also drops the private elements
the profile will remove anyway before pydicom decodes them, and reports them as StrippedPrivate.
Deflated datasets are inflated in chunks up to a cap (deid.dicom.structure.inflate_dataset), and
the pixel data is checked against the image pixel module before anything decodes it
(deid.dicom.pixel_data: which checks run always and which only when pixels are decoded).
Messages name tags and offsets, never values, and name a tag only when it is a dictionary or
well-formed private tag (deid.dicom.elements.tag_text).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.multival import MultiValue

from deid.classify import looks_like_raw_dicom
from deid.dicom.elements import NUMERIC_VRS, tag_text
from deid.dicom.pixel_data import check_pixel_data
from deid.dicom.structure import DatasetLayout, check_structure, dataset_layout
from deid.errors import InputTooLargeError, InvalidInputError, UnsupportedFormatError
from deid.settings import Limits, ProfileSettings

DICOMDIR_CLASS = "1.2.840.10008.1.3.10"

# Longer private values are bulk data (thumbnails, raw headers), not names or numbers to search for.
MAX_PRIVATE_TEXT_BYTES = 64 * 1024
UNDEFINED_LENGTH = 0xFFFFFFFF
# Up to this size a file's top-level private elements are cut from the bytes before pydicom reads
# them (one more copy of the file); larger files, pixel data mostly, are stripped after parsing.
MAX_FILTERED_BYTES = 64 * 1024 * 1024
ITEM_TAG_BYTES = (b"\xfe\xff\x00\xe0", b"\xff\xfe\xe0\x00")  # (FFFE,E000) little and big endian


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
        layout = dataset_layout(data, has_preamble, limits)
        if layout is not None:
            data = _without_private(data, layout, strip_private)
    else:
        check_structure(data, has_preamble, limits)
    try:
        # One parse: the bytes are already in memory (bounded by max_file_bytes), and nothing below
        # decodes pixels, so the budget check still comes before any pixel-sized allocation.
        ds = pydicom.dcmread(io.BytesIO(data), force=not has_preamble)
        _check_pixel_budget(ds, limits)
        _force_parse(ds, strip_private)
        check_pixel_data(ds)
    except (InvalidInputError, InputTooLargeError):
        raise
    except InvalidDicomError:
        raise InvalidInputError("not DICOM: pydicom found no DICOM dataset; check the input") from None
    except RecursionError:
        raise InvalidInputError("malformed DICOM: sequences nested too deeply to parse") from None
    except (ValueError, TypeError, KeyError, EOFError, OSError, AttributeError, NotImplementedError,
            UnicodeError, OverflowError, IndexError, BytesLengthException) as exc:
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
                f"malformed DICOM: element {tag_text(int(tag), ds._dict)} cannot be parsed ({type(exc).__name__}); "
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
