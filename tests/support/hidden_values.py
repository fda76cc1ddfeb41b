"""Synthetic inputs that hide an identifying value where no attribute or tag shows it.

The value is `MARKER` ("ZQXWARBLE QUINTESSA") and its DICOM spelling `MARKER_PN`, each in ASCII
(= UTF-8), UTF-16LE and UTF-16BE (`PAYLOAD`), placed in JPEG COM and APPn segments, in APP0 JFIF
and APP14 Adobe payloads, between scan data and EOI, after EOI, in JPEG 2000 COM segments and JP2
boxes, and in the text tags, header and slack of ICC profiles. `assert_absent` checks every spelling.
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image, ImageCms

MARKER = "ZQXWARBLE QUINTESSA"
MARKER_PN = "ZQXWARBLE^QUINTESSA"
SPELLINGS = tuple(
    text.encode(codec)
    for text in (MARKER, MARKER_PN, "ZQXWARBLE", "QUINTESSA")
    for codec in ("utf-8", "utf-16-le", "utf-16-be")
)
PAYLOAD = b" ".join(SPELLINGS[:6])

SOI, EOI = b"\xff\xd8", b"\xff\xd9"


def assert_absent(blob: bytes, where: str = "output") -> None:
    """No spelling of the marker, in any case, in `blob`."""
    folded = blob.lower()
    for spelling in SPELLINGS:
        assert spelling.lower() not in folded, f"{spelling!r} found in the {where}"


def assert_present(blob: bytes) -> None:
    """The synthetic input really carries the marker (so a passing absence check means something)."""
    assert all(spelling in blob for spelling in SPELLINGS[:6])


# -- JPEG ---------------------------------------------------------------------------------------------


def segment(marker: int, body: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(body) + 2) + body


def header_segments(stream: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """(marker, body) of each segment before the first SOS, and where the SOS starts."""
    out = []
    pos = 2
    while stream[pos + 1] != 0xDA:
        marker = stream[pos + 1]
        (length,) = struct.unpack_from(">H", stream, pos + 2)
        out.append((marker, stream[pos + 4 : pos + 2 + length]))
        pos += 2 + length
    return out, pos


def hide_in_jpeg(stream: bytes, payload: bytes = PAYLOAD) -> bytes:
    """`stream` with the payload in COM, APP1 (Exif), APP13 (Photoshop), the APP0 JFIF thumbnail and
    the APP14 Adobe segment (when present), a COM between scan data and EOI, and after EOI."""
    segments, sos = header_segments(stream)
    parts = [SOI, segment(0xFE, payload)]
    for marker, body in segments:
        if marker == 0xE0 and body.startswith(b"JFIF\0"):
            width = -(-len(payload) // 3)
            thumb = payload.ljust(3 * width, b" ")
            body = body[:12] + bytes((width, 1)) + thumb
        elif marker == 0xEE and body.startswith(b"Adobe"):
            body = body + payload
        parts.append(segment(marker, body))
    parts.append(segment(0xE1, b"Exif\0\0" + payload))
    parts.append(segment(0xED, b"Photoshop 3.0\0" + payload))
    scan = stream[sos:]
    assert scan.endswith(EOI)
    parts += [scan[:-2], segment(0xFE, payload), EOI, payload]
    return b"".join(parts)


def split_tables(stream: bytes) -> tuple[bytes, bytes]:
    """A full stream -> (tables-only stream, abbreviated stream), as TIFF JPEGTables and a tile."""
    segments, sos = header_segments(stream)
    tables = [segment(m, b) for m, b in segments if m in (0xC4, 0xDB)]
    rest = [segment(m, b) for m, b in segments if m not in (0xC4, 0xDB)]
    return SOI + b"".join(tables) + EOI, SOI + b"".join(rest) + stream[sos:]


def hide_in_tables(tables: bytes, payload: bytes = PAYLOAD) -> bytes:
    return (
        SOI + segment(0xFE, payload) + segment(0xE1, b"http://ns.adobe.com/xap/1.0/\0" + payload) + tables[2:] + payload
    )


# -- JPEG 2000 ----------------------------------------------------------------------------------------


def j2k_codestream(pixels: np.ndarray, tile: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG2000", irreversible=False, no_jp2=True, tile_size=(tile, tile))
    return buffer.getvalue()


def hide_in_j2k(codestream: bytes, payload: bytes = PAYLOAD) -> bytes:
    """COM in the main header and in the first tile-part header (Psot fixed), bytes after EOC."""
    com = b"\xff\x64" + struct.pack(">HH", len(payload) + 4, 1) + payload
    siz_len = struct.unpack_from(">H", codestream, 4)[0]
    after_siz = 4 + siz_len
    out = codestream[:after_siz] + com + codestream[after_siz:]
    sot = out.index(b"\xff\x90\x00\x0a")
    (psot,) = struct.unpack_from(">I", out, sot + 6)
    patched = out[: sot + 6] + struct.pack(">I", psot + len(com) if psot else 0) + out[sot + 10 : sot + 12]
    out = patched + com + out[sot + 12 :]
    assert out.endswith(EOI)
    return out + payload


def hide_in_jp2(jp2: bytes, payload: bytes = PAYLOAD) -> bytes:
    """xml and uuid boxes before the codestream box, and bytes after it."""
    xml = struct.pack(">I4s", len(payload) + 8, b"xml ") + payload
    uuid = struct.pack(">I4s", len(payload) + 24, b"uuid") + b"\x11" * 16 + payload
    index = jp2.index(b"jp2c") - 4
    return jp2[:index] + xml + uuid + jp2[index:] + uuid


# -- ICC ----------------------------------------------------------------------------------------------


def srgb_icc() -> bytes:
    return bytes(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())


def _mluc(text: str) -> bytes:
    utf16 = text.encode("utf-16-be")
    return b"mluc\0\0\0\0" + struct.pack(">II2s2sII", 1, 12, b"en", b"US", len(utf16), 28) + utf16


def _desc(data: bytes) -> bytes:
    return b"desc\0\0\0\0" + struct.pack(">I", len(data) + 1) + data + b"\0" + b"\0" * 78


def icc_with_values(base: bytes | None = None, payload: bytes = PAYLOAD) -> bytes:
    """A valid profile (the colour tags of `base`, sRGB by default) whose text carries the marker:
    desc and cprt (mluc), dmnd (desc), dmdd and vued (text), a private tag, the header's creator and
    device fields, slack after the last tag inside the declared size, and bytes after it."""
    base = base or srgb_icc()
    (count,) = struct.unpack_from(">I", base, 128)
    tags = []
    for index in range(count):
        signature, offset, length = struct.unpack_from(">4sII", base, 132 + 12 * index)
        if signature not in (b"desc", b"cprt"):
            tags.append((signature, base[offset : offset + length]))
    tags += [
        (b"desc", _mluc(f"Profile of {MARKER} {MARKER_PN}")),
        (b"cprt", _mluc(f"Copyright {MARKER}")),
        (b"dmnd", _desc(payload)),
        (b"dmdd", b"text\0\0\0\0" + payload + b"\0"),
        (b"vued", b"text\0\0\0\0" + payload + b"\0"),
        (b"ZQXW", b"data\0\0\0\0\0\0\0\0" + payload),
    ]
    header = bytearray(base[:128])
    header[48:52] = b"ZQXW"  # device manufacturer
    header[52:56] = b"ARBL"  # device model
    header[80:84] = b"QUIN"  # creator
    header[84:100] = b"\0" * 16
    table_end = 132 + 12 * len(tags)
    position = (table_end + 3) & ~3
    table, blobs = [struct.pack(">I", len(tags))], []
    for signature, data in tags:
        table.append(struct.pack(">4sII", signature, position, len(data)))
        padded = data + b"\0" * (-len(data) % 4)
        blobs.append(padded)
        position += len(padded)
    slack = payload + b"\0" * (-len(payload) % 4)
    body = b"".join(table) + b"\0" * (((table_end + 3) & ~3) - table_end) + b"".join(blobs) + slack
    profile = bytearray(header + body)
    struct.pack_into(">I", profile, 0, len(profile))
    return bytes(profile) + payload


def colour_through(profile: bytes, pixels: np.ndarray) -> np.ndarray:
    """`pixels` converted from `profile` to sRGB by LittleCMS (what a viewer would show)."""
    source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    target = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    return np.asarray(ImageCms.profileToProfile(Image.fromarray(pixels), source, target))


# -- slides -------------------------------------------------------------------------------------------


def write_hostile_slide(path: object, rgb: bool, tile: int = 256, width: int = 512, height: int = 512) -> np.ndarray:
    """A generic tiled TIFF (levels 1 and 2) whose JPEG tiles, JPEGTables and ICC profile hide the marker.

    rgb: RGB samples with APP14 Adobe and abbreviated tiles plus a JPEGTables tag (like Aperio);
    else YCbCr 4:2:0 with JFIF APP0, self-contained tiles. Artist and HostComputer hold the marker,
    so the run's leak check knows it. Returns the level-0 pixels as the tiles decode (before hiding).
    """
    import imagecodecs
    import tifffile

    from tests.support import wsi_factory

    image = wsi_factory.tissue(width, height)
    levels = [image, np.ascontiguousarray(image[::2, ::2])]
    tags = [(315, 2, 0, MARKER_PN, True), (316, 2, 0, MARKER, True)]
    icc = icc_with_values()
    with tifffile.TiffWriter(str(path)) as tif:
        for index, level in enumerate(levels):
            tiles, tables = [], None
            for y in range(0, level.shape[0], tile):
                for x in range(0, level.shape[1], tile):
                    block = np.full((tile, tile, 3), 255, np.uint8)
                    part = level[y : y + tile, x : x + tile]
                    block[: part.shape[0], : part.shape[1]] = part
                    if rgb:
                        full = bytes(imagecodecs.jpeg8_encode(block, level=85, colorspace="RGB", outcolorspace="RGB"))
                        tables, abbreviated = split_tables(full)
                        tiles.append(hide_in_jpeg(abbreviated))
                    else:
                        full = bytes(imagecodecs.jpeg8_encode(block, level=85, subsampling="420"))
                        tiles.append(hide_in_jpeg(full))
            extra = [(34675, 7, len(icc), icc, True)] + tags if index == 0 else []
            tif.write(
                iter(tiles),
                shape=level.shape,
                dtype=np.uint8,
                tile=(tile, tile),
                compression="jpeg",
                photometric="rgb" if rgb else "ycbcr",
                **({"compressionargs": {"outcolorspace": "RGB"}} if rgb else {"subsampling": (2, 2)}),
                jpegtables=hide_in_tables(tables) if tables else None,
                subfiletype=0 if index == 0 else 1,
                resolution=((20000, 1), (20000, 1)),
                resolutionunit="CENTIMETER",
                metadata=None,
                software=False,
                extratags=extra,
            )
    return image
