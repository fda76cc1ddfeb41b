"""A strict walk over the byte structure of a DICOM stream, before pydicom parses it.

pydicom is forgiving on purpose: a file cut short or an element whose length runs past its container
is read silently with a partial value, an undefined length on a text element makes it scan for a
delimiter to the end of the file. A pipeline must instead reject such inputs up front with a reason,
so this module checks every element at every depth: tags, VRs, lengths against what remains in the
enclosing item or sequence, item and delimiter tags, encapsulated pixel data fragments, nesting depth
and the sizes of fixed-width binary values. A deflated dataset is inflated in chunks up to a cap
(`inflate_dataset`) before it is walked.

Messages name offsets, never values. A tag is named only when pydicom's dictionary knows it or it is
a well-formed private tag whose creator came first (deid.dicom.elements.is_nameable); the declared
length of a damaged element is never quoted: both may be four bytes of input text read as a header.
"""

from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Container
from dataclasses import dataclass

from pydicom.datadict import dictionary_VR

from deid.dicom.elements import tag_text
from deid.errors import InputTooLargeError, InvalidInputError
from deid.settings import Limits

MAX_DEPTH = 32
UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_END = 0xFFFEE00D
SEQUENCE_END = 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010

VALID_VRS = frozenset({
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD", "OF", "OL", "OV",
    "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV",
})
# Explicit VRs with a 2-byte reserved field and a 4-byte length.
LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "SV", "UV"})
FIXED_WIDTH = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "FD": 8, "AT": 4, "SV": 8, "UV": 8,
               "OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED = ("1.2.840.10008.1.2.1.99",)
# Deflated datasets: inflated INFLATE_CHUNK_BYTES at a time; the header that sets the cap is read from
# the first GEOMETRY_PREFIX_BYTES; everything but declared pixel data may take MAX_INFLATED_OTHER_BYTES.
INFLATE_CHUNK_BYTES = 1024 * 1024
GEOMETRY_PREFIX_BYTES = 1024 * 1024
MAX_INFLATED_OTHER_BYTES = 64 * 1024 * 1024
# SamplesPerPixel, NumberOfFrames, Rows, Columns, BitsAllocated.
_GEOMETRY_TAGS = frozenset({0x00280002, 0x00280008, 0x00280010, 0x00280011, 0x00280100})


def _bad(message: str) -> InvalidInputError:
    return InvalidInputError(f"malformed DICOM: {message}; the file is damaged or not DICOM, re-export it")


_U16 = {True: struct.Struct("<H").unpack_from, False: struct.Struct(">H").unpack_from}
_U32 = {True: struct.Struct("<I").unpack_from, False: struct.Struct(">I").unpack_from}
_TAG = {True: struct.Struct("<HH").unpack_from, False: struct.Struct(">HH").unpack_from}


# Explicit VR codes as they appear in the stream.
_VR_CODES = {vr.encode("ascii"): vr for vr in VALID_VRS}


@dataclass
class _Walker:
    data: bytes | bytearray
    explicit: bool
    little: bool

    def __post_init__(self) -> None:
        self._unpack16 = _U16[self.little]
        self._unpack32 = _U32[self.little]
        self._unpack_tag = _TAG[self.little]
        self._hashable = isinstance(self.data, bytes)  # slices of it can be looked up in _VR_CODES

    def _u16(self, offset: int) -> int:
        return int(self._unpack16(self.data, offset)[0])

    def _u32(self, offset: int) -> int:
        return int(self._unpack32(self.data, offset)[0])

    def _tag(self, offset: int, end: int) -> int:
        if offset + 4 > end:
            raise _bad(f"truncated element header at offset {offset}")
        group, element = self._unpack_tag(self.data, offset)
        return int((group << 16) | element)

    def dataset(
        self, offset: int, end: int, depth: int, until_delimiter: bool, spans: list[ElementSpan] | None = None
    ) -> int:
        """Walk elements from `offset`; return the offset after the dataset (after E00D if delimited).

        `spans`: a list to append each private element of this (top) level to.
        """
        if depth > MAX_DEPTH:
            raise _bad(f"sequences nested deeper than {MAX_DEPTH} levels at offset {offset}")
        seen: set[int] = set()  # tags of this dataset so far: private elements are named after their creator
        while offset < end:
            tag = self._tag(offset, end)
            if tag == ITEM_END:
                if not until_delimiter:
                    raise _bad(f"unexpected item delimiter at offset {offset}")
                return offset + 8
            if tag in (ITEM, SEQUENCE_END):
                raise _bad(f"unexpected item or sequence tag {tag_text(tag)} at offset {offset}")
            start = offset
            vr, length, value = self._header(tag, offset, end, seen)
            offset = self._value(tag, vr, length, value, offset, end, depth, seen)
            seen.add(tag)
            if spans is not None and (tag >> 16) & 1:
                spans.append(ElementSpan(tag, start, offset, vr if self.explicit else None, value, length == UNDEFINED))
        if until_delimiter:
            raise _bad("an item of undefined length has no item delimiter (truncated file?)")
        return offset

    def element(self, offset: int, end: int, depth: int, seen: Container[int] = ()) -> int:
        """Walk one element; return the offset after it."""
        tag = self._tag(offset, end)
        vr, length, value = self._header(tag, offset, end, seen)
        return self._value(tag, vr, length, value, offset, end, depth, seen)

    # A tag is named only in a message (never the bare tag of an unlisted element, nor its declared
    # length), and looked up only then: naming a tag costs more than walking its element.
    def _header(self, tag: int, offset: int, end: int, seen: Container[int]) -> tuple[str, int, int]:
        """(VR, declared length, offset of the value) of the element at `offset`."""
        if self.explicit:
            if offset + 8 > end:
                raise _bad(f"truncated header of element {tag_text(tag, seen)} at offset {offset}")
            raw_vr = self.data[offset + 4 : offset + 6]
            vr = _VR_CODES.get(raw_vr if self._hashable else bytes(raw_vr))  # type: ignore[arg-type]
            if vr is None:
                raise _bad(f"element {tag_text(tag, seen)} has an invalid VR code at offset {offset + 4}")
            if vr in LONG_VRS:
                if offset + 12 > end:
                    raise _bad(f"truncated header of element {tag_text(tag, seen)} at offset {offset}")
                return vr, self._unpack32(self.data, offset + 8)[0], offset + 12
            return vr, self._unpack16(self.data, offset + 6)[0], offset + 8
        if offset + 8 > end:
            raise _bad(f"truncated header of element {tag_text(tag, seen)} at offset {offset}")
        return self._implicit_vr(tag), self._unpack32(self.data, offset + 4)[0], offset + 8

    def _value(
        self, tag: int, vr: str, length: int, value: int, offset: int, end: int, depth: int, seen: Container[int]
    ) -> int:
        """Check the value of an element whose header `_header` read; return the offset after it."""
        if length == UNDEFINED:
            if tag == PIXEL_DATA and vr in ("OB", "OW", "UN") and depth == 0:
                return self.fragments(value, end)
            if vr == "SQ":
                return self.sequence(value, end, depth, None)
            if vr == "UN":
                # PS3.5 6.2.2: a UN value of undefined length is a sequence in implicit VR little endian.
                walker = _Walker(self.data, explicit=False, little=True) if self.explicit else self
                return walker.sequence(value, end, depth, None)
            raise _bad(
                f"element {tag_text(tag, seen)} of VR {vr} has an undefined length, allowed only for sequences"
            )
        if value + length > end:
            raise _bad(
                f"element {tag_text(tag, seen)} at offset {offset} declares a value longer than the "
                f"{max(end - value, 0)} bytes that remain in its container (truncated file or wrong length)"
            )
        width = FIXED_WIDTH.get(vr)
        if width and length % width:
            raise _bad(
                f"element {tag_text(tag, seen)} of VR {vr} at offset {offset} has a length that is not a "
                f"multiple of {width}"
            )
        if vr == "SQ":
            self.sequence(value, value + length, depth, value + length)
        return value + length

    def _implicit_vr(self, tag: int) -> str:
        return _implicit_vr(tag)

    def sequence(self, offset: int, end: int, depth: int, defined_end: int | None) -> int:
        while True:
            if defined_end is not None and offset >= defined_end:
                return offset
            tag = self._tag(offset, end)
            if offset + 8 > end:
                raise _bad(f"truncated item header at offset {offset}")
            length = self._u32(offset + 4)
            if tag == SEQUENCE_END:
                if defined_end is not None:
                    raise _bad(f"sequence delimiter inside a sequence of defined length at offset {offset}")
                return offset + 8
            if tag != ITEM:
                raise _bad(f"expected an item tag at offset {offset}, found an element {tag_text(tag)}")
            start = offset + 8
            if length == UNDEFINED:
                offset = self.dataset(start, end, depth + 1, until_delimiter=True)
            else:
                if start + length > end:
                    raise _bad(f"item at offset {offset} declares more than the {end - start} bytes that remain")
                self.dataset(start, start + length, depth + 1, until_delimiter=False)
                offset = start + length
            if defined_end is None and offset >= end:
                raise _bad("a sequence of undefined length has no sequence delimiter (truncated file?)")

    def fragments(self, offset: int, end: int) -> int:
        while True:
            tag = self._tag(offset, end)
            if offset + 8 > end:
                raise _bad(f"truncated pixel data fragment header at offset {offset}")
            length = self._u32(offset + 4)
            if tag == SEQUENCE_END:
                return offset + 8
            if tag != ITEM or length == UNDEFINED:
                raise _bad(f"encapsulated pixel data has a bad fragment at offset {offset}")
            if offset + 8 + length > end:
                raise _bad(
                    f"pixel data fragment at offset {offset} declares more than the {end - offset - 8} bytes "
                    "that remain (truncated file?)"
                )
            offset += 8 + length


@functools.lru_cache(maxsize=4096)
def _implicit_vr(tag: int) -> str:
    """The VR an implicit VR element is walked with: the dictionary's (its first when ambiguous)."""
    if tag >> 16 == 0xFFFE:
        return "SQ"
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "UN"  # private or newer elements: a value of undefined length is a sequence
    return vr.split(" or ")[0]


def _meta_transfer_syntax(data: bytes, offset: int) -> tuple[str | None, int]:
    """Walk the (explicit VR little endian) file meta group; return its transfer syntax and end."""
    walker = _Walker(data, explicit=True, little=True)
    syntax: str | None = None
    end = len(data)
    while offset + 8 <= end and walker._u16(offset) == 0x0002:
        tag = walker._tag(offset, end)
        next_offset = walker.element(offset, end, 0)
        if tag == 0x00020010:
            header = 12 if data[offset + 4 : offset + 6].decode("latin-1") in LONG_VRS else 8
            syntax = data[offset + header : next_offset].decode("latin-1").strip("\x00 ")
        offset = next_offset
    return syntax, offset


@dataclass(frozen=True)
class ElementSpan:
    """Where one element of a dataset lies in the stream."""

    tag: int
    start: int  # offset of the tag
    end: int  # offset after the value (after the delimiter for undefined lengths)
    vr: str | None  # None in implicit VR
    value_start: int
    undefined_length: bool


@dataclass(frozen=True)
class DatasetLayout:
    """Where a Part 10 stream's dataset starts, and its top-level private elements in file order."""

    dataset_start: int
    private: tuple[ElementSpan, ...]


def check_structure(data: bytes, has_preamble: bool, limits: Limits) -> None:
    """Raise InvalidInputError unless `data` is a structurally sound DICOM stream (InputTooLargeError
    for a deflated dataset that inflates past its cap, see `inflate_dataset`)."""
    _check(data, has_preamble, None, limits)


def dataset_layout(data: bytes, has_preamble: bool, limits: Limits) -> DatasetLayout | None:
    """check_structure(), and where the dataset and its top-level private elements lie in `data`.

    None for a deflated dataset, whose elements lie in the inflated stream rather than in `data`.
    """
    spans: list[ElementSpan] = []
    start = _check(data, has_preamble, spans, limits)
    return None if start is None else DatasetLayout(start, tuple(spans))


def _check(data: bytes, has_preamble: bool, spans: list[ElementSpan] | None, limits: Limits) -> int | None:
    """The walk of check_structure; returns the offset where the dataset starts (None if deflated)."""
    offset = 132 if has_preamble else 0
    syntax, offset = _meta_transfer_syntax(data, offset)
    body: bytes | bytearray = data
    dataset_start: int | None = offset
    if syntax in DEFLATED:
        dataset_start = None
        spans = None
        body = inflate_dataset(memoryview(data)[offset:], limits)
        offset = 0
        syntax = EXPLICIT_LE
    # The encoding is guessed the way pydicom reads it: some writers declare one transfer syntax and
    # encode the dataset in another, so VR presence is taken from the first element, and without a
    # meta group the byte order from the first group number.
    explicit = len(body) >= offset + 6 and body[offset + 4 : offset + 6].decode("latin-1") in VALID_VRS
    if syntax is None:
        little = True
        if len(body) >= offset + 2:
            group_le, group_be = struct.unpack_from("<H", body, offset)[0], struct.unpack_from(">H", body, offset)[0]
            little = not (group_le > 0xFF and group_be <= 0xFF)
    else:
        little = syntax != EXPLICIT_BE
    walker = _Walker(body, explicit=explicit, little=little)
    end = walker.dataset(offset, len(body), 0, until_delimiter=False, spans=spans)
    if end != len(body):
        raise _bad(f"{len(body) - end} stray bytes after the dataset")
    return dataset_start


def inflate_dataset(stream: bytes | memoryview, limits: Limits) -> bytearray:
    """A deflated dataset (PS3.5 A.5) inflated in chunks, never past its cap.

    The cap is the smaller of --max_file_bytes and the native pixel data its header declares (Rows x
    Columns x NumberOfFrames x SamplesPerPixel x BitsAllocated, read from the first inflated MiB) plus
    MAX_INFLATED_OTHER_BYTES for all other elements: a 1 MB file that inflates to 1 GiB of anything
    but declared pixels is `too_large` after at most 65 MiB. Declared pixels over --max_pixels are
    `too_large` as soon as the header is inflated. A deflate stream cut short is `invalid_input`.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    cap: int | None = None

    def take(chunk: bytes) -> None:
        nonlocal cap
        out.extend(chunk)
        if cap is None and len(out) >= GEOMETRY_PREFIX_BYTES:
            cap = _inflate_cap(out, limits)
        if cap is not None and len(out) > cap:
            raise InputTooLargeError(
                f"the deflated dataset inflates to more than {cap} bytes, the most its declared pixel data plus "
                f"{MAX_INFLATED_OTHER_BYTES} bytes of other elements (or --max_file_bytes) allow; refused before "
                "inflating further (decompression bomb or damaged file)"
            )

    try:
        # Input goes in slices and output comes out in chunks: zlib never holds more than one of each.
        for start in range(0, len(stream), INFLATE_CHUNK_BYTES):
            pending: bytes | memoryview = stream[start : start + INFLATE_CHUNK_BYTES]
            while pending and not inflater.eof:
                take(inflater.decompress(pending, INFLATE_CHUNK_BYTES))
                pending = inflater.unconsumed_tail
            if inflater.eof:
                break
        while not inflater.eof:
            chunk = inflater.decompress(b"", INFLATE_CHUNK_BYTES)
            if not chunk:
                break
            take(chunk)
    except zlib.error:
        raise _bad("the deflated dataset does not inflate") from None
    if not inflater.eof:
        raise _bad("the deflated dataset ends before its deflate stream does (truncated file?)")
    if cap is None:
        cap = _inflate_cap(out, limits)
        take(b"")  # the size so far against the cap
    return out


def _inflate_cap(prefix: bytes | bytearray, limits: Limits) -> int:
    """The inflated size allowed for a deflated dataset whose first bytes are `prefix`."""
    values = _top_level_values(prefix, _GEOMETRY_TAGS)
    rows, columns = values.get(0x00280010, 0), values.get(0x00280011, 0)
    pixels = rows * columns * max(values.get(0x00280008, 1), 1) * max(values.get(0x00280002, 1), 1)
    if pixels > limits.max_pixels:
        raise InputTooLargeError(
            f"Rows x Columns x NumberOfFrames x SamplesPerPixel is {pixels} pixels, over --max_pixels "
            f"{limits.max_pixels}; raise the limit to process this instance"
        )
    pixel_bytes = -(-pixels * max(values.get(0x00280100, 8), 1) // 8)
    return min(limits.max_file_bytes, pixel_bytes + MAX_INFLATED_OTHER_BYTES)


def _top_level_values(prefix: bytes | bytearray, wanted: frozenset[int]) -> dict[int, int]:
    """Integer values (US or IS) of `wanted` top-level elements found in an explicit VR little endian
    prefix, walking until the last wanted tag, the first element cut by the prefix, or damage."""
    walker = _Walker(prefix, explicit=True, little=True)
    found: dict[int, int] = {}
    offset, end = 0, len(prefix)
    while offset + 8 <= end:
        tag = walker._tag(offset, end)
        if tag > max(wanted):
            break
        try:
            next_offset = walker.element(offset, end, 0)
        except InvalidInputError:
            break
        if tag in wanted:
            vr = prefix[offset + 4 : offset + 6].decode("latin-1")
            value = bytes(prefix[offset + (12 if vr in LONG_VRS else 8) : next_offset])
            number = int.from_bytes(value[:2], "little") if vr == "US" else _integer_string(value)
            if number is not None:
                found[tag] = number
        offset = next_offset
    return found


def _integer_string(value: bytes) -> int | None:
    text = value.decode("latin-1").strip("\x00 ")
    return int(text) if text.isdigit() else None
