"""Synthetic Hamamatsu NDPI files written byte by byte, as a NanoZoomer writes them (tests only).

OpenSlide's Hamamatsu notes describe the layout reproduced here: classic little-endian TIFF whose
next-directory offsets are 64-bit (the header's too), one IFD per pyramid level holding ONE JPEG
strip with restart markers (YCbCr, 4:4:4, restart interval = the MCUs of one row, like the real
samples), the private tags 65420 (format flag), 65421 (source lens: 40, 20, ... for levels, -1 for
the macro), 65422/65423 (offsets from the slide centre), 65426 (MCU starts: the offset of each
restart interval in the strip), and the text a scanner fills: DateTime, 65427 (slide reference),
65442 (scanner serial) and the 65449 property map. `write_ndpi` makes a slide OpenSlide opens, every
text field and the macro's printed label holding identifying values (`NDPI_VALUES`);
`write_header_only_ndpi` makes a sparse file whose level-0 JPEG header declares any size (100,000 x
80,000) with a full MCU-starts table but no pixel data, to test the guard and the plan.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from tests.support.wsi_factory import draw_text, tissue

NDPI_VALUES = {
    "reference": "ZQXNDPREF-4242",
    "serial": "ZQXNDPSN-90210",
    "map_serial": "ZQXPMAPSN-77",
    "date": "2019:11:12 13:14:15",
    "label": "ZQXLBL-5151",
}
PROPERTY_MAP = (
    "Created=2019/11/12\r\nUpdated=2019/11/12\r\nProduct=C13210\r\nsystem.version=3.2.1\r\n"
    f"Calibration=Bright;SerialNumber={NDPI_VALUES['map_serial']};Date=2019/11/12 13:14:15;Mode=Bright\r\n"
    "Objective.Lens.Magnificant=20\r\n"
)
MPP = 0.4545

_ASCII, _SHORT, _LONG, _RATIONAL, _SLONG, _FLOAT = 2, 3, 4, 5, 9, 11
_FORMATS = {_SHORT: "H", _LONG: "I", _SLONG: "i", _FLOAT: "f"}


@dataclass
class Page:
    """One IFD: its strip (bytes, or a size to leave sparse) and its tags (tag -> (type, values))."""

    width: int
    height: int
    strip: bytes
    strip_size: int = 0  # > len(strip): the rest of the strip is left as a hole in a sparse file
    tags: dict[int, tuple[int, object]] = field(default_factory=dict)


def encode_restart_jpeg(image: np.ndarray, quality: int = 85) -> tuple[bytes, list[int]]:
    """A baseline JPEG (4:4:4) with one restart interval per MCU row, and each interval's start offset."""
    mcus_per_row = -(-image.shape[1] // 8)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_RST_INTERVAL, mcus_per_row]
    params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    assert ok
    data = encoded.tobytes()
    sos = data.index(b"\xff\xda")
    body = sos + 2 + struct.unpack_from(">H", data, sos + 2)[0]
    starts = [body]
    pos = body
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            break
        if 0xD0 <= data[pos + 1] <= 0xD7:
            starts.append(pos + 2)
        pos += 2 if data[pos + 1] != 0xFF else 1
    return data, starts


def _level_tags(page_width: int, height: int, lens: float, starts: list[int] | None, first: bool) -> dict:
    per_cm = round(10_000 / MPP * abs(lens) / 20)
    tags: dict[int, tuple[int, object]] = {
        256: (_LONG, [page_width]),
        257: (_LONG, [height]),
        258: (_SHORT, [8, 8, 8]),
        259: (_SHORT, [7]),
        262: (_SHORT, [6]),
        271: (_ASCII, "Hamamatsu"),
        272: (_ASCII, "C13210"),
        277: (_SHORT, [3]),
        278: (_LONG, [height]),
        282: (_RATIONAL, [(per_cm, 1)]),
        283: (_RATIONAL, [(per_cm, 1)]),
        296: (_SHORT, [3]),
        305: (_ASCII, "NDP.scan 3.2.4"),
        306: (_ASCII, NDPI_VALUES["date"]),
        530: (_SHORT, [1, 1]),
        65420: (_SHORT, [1]),
        65421: (_FLOAT, [lens]),
        65422: (_SLONG, [1250000]),
        65423: (_SLONG, [-96000]),
        65424: (_SLONG, [0]),
        65427: (_ASCII, NDPI_VALUES["reference"]),
        65442: (_ASCII, NDPI_VALUES["serial"]),
    }
    if starts is not None:
        tags[65426] = (_LONG, starts)
    if first:
        tags[65449] = (_ASCII, PROPERTY_MAP)
    return tags


def write_ndpi(path: Path, width: int = 2048, height: int = 1536, levels: int = 3) -> Path:
    """An NDPI that OpenSlide opens: `levels` levels (lens 20, 10, 5...) and a macro with a printed label."""
    image = tissue(width, height, seed=3)
    draw_text(image, width // 3, height // 3, "ZQX TISSUE", scale=1.2)
    pages = []
    for level in range(levels):
        if level:
            image = cv2.resize(image, (-(-image.shape[1] // 2), -(-image.shape[0] // 2)), interpolation=cv2.INTER_AREA)
        data, starts = encode_restart_jpeg(image)
        tags = _level_tags(image.shape[1], image.shape[0], 20.0 / 2**level, starts, level == 0)
        pages.append(Page(image.shape[1], image.shape[0], data, tags=tags))
    macro = np.full((400, 1200, 3), 235, np.uint8)
    macro[:, 400:] = tissue(800, 400, seed=5)
    draw_text(macro, 20, 60, NDPI_VALUES["label"], scale=0.9)
    draw_text(macro, 20, 160, "ZQX PATIENT", scale=0.9)
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(macro, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    tags = _level_tags(1200, 400, -1.0, None, False)
    tags[65421] = (_FLOAT, [-1.0])
    pages.append(Page(1200, 400, encoded.tobytes(), tags=tags))
    return write_pages(path, pages)


def jpeg_header(width: int, height: int, restart_interval: int, subsampling: int = 0x22) -> bytes:
    """SOI, a quantisation table, SOF0 (3 components, Y sampled `subsampling`), DRI, SOS: no scan data.

    A side above 65535 is written as 0, as NDPI does.
    """
    dqt = b"\xff\xdb" + struct.pack(">H", 67) + b"\x00" + bytes(range(1, 65))
    sof_w, sof_h = (width if width <= 0xFFFF else 0), (height if height <= 0xFFFF else 0)
    components = bytes([1, subsampling, 0, 2, 0x11, 0, 3, 0x11, 0])
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, sof_h, sof_w, 3) + components
    dri = b"\xff\xdd" + struct.pack(">HH", 4, restart_interval) if restart_interval else b""
    sos = b"\xff\xda" + struct.pack(">HB", 12, 3) + bytes([1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0])
    return b"\xff\xd8" + dqt + sof + dri + sos


def write_header_only_ndpi(
    path: Path, width: int, height: int, restart_interval: int | None = None, strip_size: int = 2 * 1024**3
) -> Path:
    """A sparse NDPI whose one level's JPEG header declares `width` x `height` (4:2:0, MCU 16 x 16).

    `restart_interval` (MCUs) defaults to a 2,000-pixel-wide interval when it divides the row, else
    one MCU row; 0 writes no restart markers. The MCU-starts table has one entry per interval.
    """
    mcus = -(-width // 16)
    if restart_interval is None:
        restart_interval = 125 if mcus % 125 == 0 else mcus
    header = jpeg_header(width, height, restart_interval)
    starts = None
    if restart_interval:
        count = -(-height // 16) * (mcus // restart_interval)
        step = (strip_size - len(header)) // count
        starts = [len(header) + i * step for i in range(count)]
    tags = _level_tags(width, height, 20.0, starts, True)
    return write_pages(path, [Page(width, height, header, strip_size=strip_size, tags=tags)])


def write_pages(path: Path, pages: list[Page]) -> Path:
    """Classic little-endian TIFF, NDPI style: strips first, then each IFD with its values, 64-bit next offsets."""
    with open(path, "wb") as out:
        out.write(b"II*\x00" + b"\x00" * 12)
        strips = []
        end = 16
        for page in pages:
            strips.append(end)
            out.seek(end)
            out.write(page.strip)
            end += max(page.strip_size, len(page.strip))
        previous_next = 4
        for page, offset in zip(pages, strips, strict=True):
            tags = dict(page.tags)
            tags[273] = (_LONG, [offset])
            tags[279] = (_LONG, [max(page.strip_size, len(page.strip))])
            ifd = end + end % 2
            out.seek(previous_next)
            out.write(struct.pack("<Q", ifd))
            previous_next, end = _write_ifd(out, ifd, tags)
    return path


def _encode(kind: int, values: object) -> tuple[int, bytes]:
    if kind == _ASCII:
        data = str(values).encode("latin-1") + b"\x00"
        return len(data), data
    items = list(values)  # type: ignore[call-overload]
    if kind == _RATIONAL:
        return len(items), b"".join(struct.pack("<II", *item) for item in items)
    return len(items), struct.pack(f"<{len(items)}{_FORMATS[kind]}", *items)


def _write_ifd(out, offset: int, tags: dict[int, tuple[int, object]]) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Write the IFD at `offset` (values after it); return (where its 64-bit next offset lies, its end)."""
    encoded = [(tag, kind, *_encode(kind, values)) for tag, (kind, values) in sorted(tags.items())]
    table = 2 + 12 * len(encoded) + 8
    extra = offset + table
    entries, blobs = b"", b""
    for tag, kind, count, data in encoded:
        if len(data) <= 4:
            entries += struct.pack("<HHI", tag, kind, count) + data.ljust(4, b"\x00")
        else:
            entries += struct.pack("<HHII", tag, kind, count, extra + len(blobs))
            blobs += data + (b"\x00" if len(data) % 2 else b"")
    out.seek(offset)
    out.write(struct.pack("<H", len(encoded)) + entries + b"\x00" * 8 + blobs)
    return offset + 2 + 12 * len(encoded), extra + len(blobs)
