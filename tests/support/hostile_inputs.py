"""Hostile inputs made in the tests: decompression bombs, pixel data that disagrees with its header,
garbage element headers that spell input text. Every input is built here from pydicom, tifffile and
raw bytes; nothing is downloaded.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEGBaseline8Bit

from tests.support import dicom_factory, wsi_factory

# The text a garbage element header is read from (issue 11: "(5241,4C42) declares 1431395909 bytes").
GARBAGE_NAME = "SMITH^ARBLE^QUINCY^MARBLEHEAD"
_PIXEL_DATA_EXPLICIT = struct.pack("<HH", 0x7FE0, 0x0010)


def svs_with_sof(path: Path, width: int, height: int) -> Path:
    """A tiny Aperio SVS (2 x 2 JPEG tiles of 256) whose level-0 tiles' SOF claims `width` x `height`."""
    wsi_factory.write_aperio_svs(
        path, width=512, height=512, tile=256, text_corner=None, downsamples=(1,), label=False, macro=False
    )
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages[0]
        units = list(zip(page.dataoffsets, page.databytecounts, strict=True))  # type: ignore[union-attr]
    for offset, count in units:
        sof = bytes(data[offset : offset + count]).find(b"\xff\xc0")
        assert sof > 0, "tifffile wrote a tile without a baseline SOF"
        struct.pack_into(">HH", data, offset + sof + 5, height, width)
    path.write_bytes(bytes(data))
    return path


def deflated_bomb(inflated_bytes: int) -> bytes:
    """A Deflated Explicit VR Little Endian instance (8 x 8 pixels) whose dataset inflates to
    `inflated_bytes`: a private OB element of zeros, compressed chunk by chunk (never held whole)."""
    ds = dicom_factory.instance()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.add_new(0x7FE10010, "LO", "BOMB")
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    head = body.getvalue()
    zeros = inflated_bytes - len(head) - 12
    head += struct.pack("<HH2sHI", 0x7FE1, 0x1000, b"OB", 0, zeros)
    meta = DicomBytesIO()
    meta.is_little_endian, meta.is_implicit_VR = True, False
    write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    out = io.BytesIO()
    out.write(b"\0" * 128 + b"DICM" + meta.getvalue())
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out.write(compressor.compress(head))
    chunk = bytes(1 << 20)
    while zeros:
        size = min(zeros, len(chunk))
        out.write(compressor.compress(chunk[:size]))
        zeros -= size
    out.write(compressor.flush())
    return out.getvalue()


def deflated_instance(rows: int = 8, columns: int = 8, number: int = 1) -> bytes:
    """An ordinary deflated instance (instance `number` of series 1), written by pydicom."""
    ds = dicom_factory.instance(number=number, rows=rows, columns=columns)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    return dicom_factory.to_bytes(ds)


def native_with_pixel_length(length: int) -> bytes:
    """An 8 x 8, 8-bit instance (64 pixel bytes declared) whose PixelData (OB, last) holds `length` bytes.

    Written raw: pydicom pads odd values on write, which would hide a value one byte short.
    """
    ds = dicom_factory.instance()
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = bytes(range(64))
    ds["PixelData"].VR = "OB"
    data = dicom_factory.to_bytes(ds)
    header = data.rindex(_PIXEL_DATA_EXPLICIT + b"OB")
    value = bytes(range(256))[:length] if length <= 256 else bytes(length)
    return data[:header] + _PIXEL_DATA_EXPLICIT + b"OB\0\0" + struct.pack("<I", length) + value


def jpeg_frame(rows: int = 16, columns: int = 16, seed: int = 0) -> bytes:
    """One baseline JPEG frame of MONOCHROME2 8-bit pixels."""
    pixels = (np.arange(rows * columns, dtype=np.uint16).reshape(rows, columns) * (seed + 3) % 256).astype(np.uint8)
    return bytes(imagecodecs.jpeg8_encode(pixels, level=90))


def with_sof(frame: bytes, width: int, height: int) -> bytes:
    sof = frame.find(b"\xff\xc0")
    patched = bytearray(frame)
    struct.pack_into(">HH", patched, sof + 5, height, width)
    return bytes(patched)


def jpeg_instance(fragments: list[bytes], frames: int, has_bot: bool = False) -> Dataset:
    """A JPEG Baseline MONOCHROME2 16 x 16 instance: `fragments` encapsulated (one per frame when
    has_bot), NumberOfFrames `frames`."""
    ds = dicom_factory.instance(rows=16, columns=16)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.NumberOfFrames = frames
    ds.PixelData = encapsulate(fragments, has_bot=has_bot)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds


def j2k_codestream(width: int, height: int, components: int = 1, tile: int | None = None) -> bytes:
    """The start of a JPEG 2000 codestream: SOC and a SIZ marker (enough for the header check)."""
    tile = tile or max(width, height)
    siz = struct.pack(">HHIIIIIIIIH", 38 + 3 * components, 0, width, height, 0, 0, tile, tile, 0, 0, components)
    return b"\xff\x4f\xff\x51" + siz + b"\x07\x01\x01" * components + b"\xff\x93"


def garbage_tag_instance() -> tuple[bytes, bytes]:
    """(an implicit VR instance, the 8 bytes of its garbage header): PatientName's length is cut so the
    next element header is read from inside the name text ("ARBL" as a tag, "E^QU" as a length)."""
    ds = dicom_factory.instance()
    ds.PatientName = GARBAGE_NAME
    data = dicom_factory.to_bytes(ds, implicit=True)
    name = GARBAGE_NAME.encode()
    start = data.index(name)
    header = start - 8
    assert data[header : header + 4] == struct.pack("<HH", 0x0010, 0x0010)
    cut = name.index(b"ARBL")  # "SMITH^" : the value now ends here, "ARBLE^QU" is read as a header
    patched = data[: header + 4] + struct.pack("<I", cut) + data[header + 8 :]
    return patched, name[cut : cut + 8]
