"""JPEG helpers for tiles: sanitize marker segments, merge TIFF JPEGTables, encode and decode.

Raw tiles and the JPEGTables tag copied from an input keep their entropy-coded data byte for byte,
under the one segment rule of `deid.jpegsafe` (shared with encapsulated DICOM frames): COM, APPn
payloads, fill bytes and bytes after EOI go; APP0 (JFIF) and APP14 (Adobe colour transform) are
rebuilt from fixed values and the numbers decoders need.
"""

from __future__ import annotations

import struct

import imagecodecs
import numpy as np

from deid.jpegsafe import EOI, SOI, sanitize_jpeg


def _segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each marker segment before SOS; the SOS entry ends at len(data)."""
    if not data.startswith(SOI):
        raise ValueError("not a JPEG stream")
    out: list[tuple[int, int, int]] = []
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError("malformed JPEG marker sequence")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:  # EOI of a tables-only stream
            out.append((marker, pos, pos + 2))
            return out
        (length,) = struct.unpack_from(">H", data, pos + 2)
        end = pos + 2 + length
        if marker == 0xDA:
            out.append((marker, pos, len(data)))
            return out
        out.append((marker, pos, end))
        pos = end
    return out


def strip_metadata(data: bytes) -> bytes:
    """The stream under the one segment rule (`deid.jpegsafe.sanitize_jpeg`); ValueError when malformed."""
    return sanitize_jpeg(data)


def merge_tables(tables: bytes | None, tile: bytes) -> bytes:
    """An abbreviated TIFF tile plus the JPEGTables tag value -> a self-contained JPEG stream."""
    if not tables or len(tables) <= 4:
        return tile
    body = tables[2:-2] if tables.endswith(EOI) else tables[2:]
    return SOI + body + tile[2:]


# Chroma subsampling (horizontal, vertical) -> the name imagecodecs' encoder takes.
SUBSAMPLING_NAMES = {(1, 1): "444", (2, 1): "422", (2, 2): "420"}


def encode(rgb: np.ndarray, quality: int, subsampling: tuple[int, int] = (2, 2)) -> bytes:
    """Baseline JPEG (YCbCr, JFIF) of an HxWx3 uint8 array; 4:2:0 unless `subsampling` says otherwise."""
    return bytes(
        imagecodecs.jpeg8_encode(
            np.ascontiguousarray(rgb), level=quality, subsampling=SUBSAMPLING_NAMES[subsampling]
        )
    )


def chroma_subsampling(data: bytes) -> tuple[int, int] | None:
    """(horizontal, vertical) chroma subsampling of a 3-component JPEG stream's frame header, or None
    when the stream has no such header or uses a layout the tile encoder cannot reproduce."""
    try:
        segments = _segments(data)
    except (ValueError, struct.error):
        return None
    for marker, start, end in segments:
        if marker in (0xC0, 0xC1, 0xC2) and end - start >= 19 and data[start + 9] == 3:
            factors = [(data[start + 11 + 3 * i] >> 4, data[start + 11 + 3 * i] & 15) for i in range(3)]
            (yh, yv), (ch, cv) = factors[0], factors[1]
            if factors[2] != (ch, cv) or not ch or not cv or yh % ch or yv % cv:
                return None
            ratio = (yh // ch, yv // cv)
            return ratio if ratio in SUBSAMPLING_NAMES else None
    return None


def decode(data: bytes, tables: bytes | None = None, photometric_rgb_data: bool = False) -> np.ndarray:
    """HxWx3 uint8 RGB. `photometric_rgb_data`: the stream holds RGB samples (no colour transform)."""
    stream = merge_tables(tables, data)
    if photometric_rgb_data:
        out = imagecodecs.jpeg8_decode(stream, colorspace="RGB", outcolorspace="RGB")
    else:
        out = imagecodecs.jpeg8_decode(stream)
    array = np.asarray(out)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return array[:, :, :3]


def has_adobe_rgb_transform(data: bytes) -> bool:
    """True when an APP14 Adobe segment says the samples are not colour-transformed (RGB)."""
    for marker, start, end in _segments(data):
        if marker == 0xEE and data[start + 4 : start + 9] == b"Adobe" and end - start >= 16:
            return data[start + 15] == 0
    return False


def component_count(data: bytes) -> int:
    for marker, start, _ in _segments(data):
        if marker in (0xC0, 0xC1, 0xC2):
            return data[start + 9]
    return 0
