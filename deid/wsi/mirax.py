"""3DHISTECH MIRAX (.mrxs): one slide is a `.mrxs` file plus the same-named folder beside it.

The folder holds `Slidedat.ini` (the slide's key file), the index file it names (`Index.dat`) and
the data files (`Data0000.dat`, ...) that pack the slide's JPEG images. The listing treats the
`.mrxs` file and that folder's files as ONE input (`unit_folder`, `is_mirax_folder`): one audit
record named by the `.mrxs` file's hash, the folder's files never separate inputs.

`check_mirax` is the pre-open guard the slide probe runs (in its memory-capped child) before
OpenSlide reads the slide. OpenSlide trusts Slidedat.ini: it allocates DIGITIZER_WIDTH x
DIGITIZER_HEIGHT x 4 bytes per image, opens the files [DATAFILE] names relative to the folder, and
hands each image to libjpeg. So the guard requires:

* Slidedat.ini of at most 1 MiB (OpenSlide's own limit) with [GENERAL] and [HIERARCHICAL], a
  positive camera image grid of at most `MAX_IMAGES` images, and HIER_0 = 'Slide zoom level';
* every zoom level's section: an image size whose RGBA buffer fits `MAX_IMAGE_BUFFER_BYTES`, a
  known image format, a concat factor that keeps the pyramid finite;
* file names ([DATAFILE], INDEXFILE) that are plain names inside the folder (no '/', '\\' or '..');
* in Index.dat, every image record of every zoom level inside its data file, and, for JPEG, an SOF
  declaring exactly the level's image size (`deid.codestream.check_unit`): a hostile 256 x 256
  image claiming 65500 x 65500 is `too_large` before any decoder runs. Label, macro and thumbnail
  records (decoded whole by OpenSlide) must declare at most `MAX_IMAGE_BUFFER_BYTES` of pixels.

Memory: one index page at a time and a few KiB per image header; nothing scales with the slide.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

from deid.codestream import HEADER_PREFIX_BYTES, Geometry, check_unit, read_header
from deid.errors import InputTooLargeError, InvalidInputError

MRXS_SUFFIX = ".mrxs"
SLIDEDAT = "Slidedat.ini"
SLIDEDAT_MAX_BYTES = 1 << 20
INDEX_VERSION = b"01.02"
MAX_IMAGE_BUFFER_BYTES = 256 * 1024 * 1024
MAX_IMAGES = 1 << 24
MAX_LEVELS = 32
MAX_PAGE_RECORDS = 1 << 20
MAX_PAGES = 1 << 16
_FORMATS = ("JPEG", "PNG", "BMP24")
_ASSOCIATED = {
    "ScanDataLayer_SlideThumbnail": "THUMBNAIL_IMAGE_TYPE",
    "ScanDataLayer_SlideBarcode": "BARCODE_IMAGE_TYPE",
    "ScanDataLayer_SlidePreview": "PREVIEW_IMAGE_TYPE",
}


def is_mrxs_name(path: str) -> bool:
    return path.lower().endswith(MRXS_SUFFIX)


def unit_folder(mrxs_path: str) -> str:
    """The folder of a .mrxs file: its path without the extension."""
    return mrxs_path[: -len(MRXS_SUFFIX)]


def is_slidedat_name(name: str) -> bool:
    return name.casefold() == SLIDEDAT.casefold()


def looks_like_slidedat(head: bytes) -> bool:
    """A Slidedat.ini by content: an INI text with the [GENERAL] and [HIERARCHICAL] sections."""
    text = _decode(head)
    return "[GENERAL]" in text and "[HIERARCHICAL]" in text


@dataclass(frozen=True)
class Slidedat:
    sections: dict[str, dict[str, str]]

    def get(self, section: str, key: str) -> str:
        value = self.sections.get(section, {}).get(key)
        if value is None:
            raise InvalidInputError(f"the MIRAX Slidedat.ini has no {key} in [{section}]; the slide is damaged")
        return value

    def integer(self, section: str, key: str) -> int:
        try:
            return int(self.get(section, key).strip())
        except ValueError:
            raise InvalidInputError(f"the MIRAX Slidedat.ini has a non-integer {key}; the slide is damaged") from None


def parse_slidedat(data: bytes) -> Slidedat:
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for raw in _decode(data).splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1].strip(), {})
        elif "=" in line and current is not None:
            key, _, value = line.partition("=")
            current[key.strip()] = value.strip()
    return Slidedat(sections)


def _decode(data: bytes) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _plain_name(name: str, what: str) -> str:
    if not name or "/" in name or "\\" in name or name in (".", "..") or "\x00" in name:
        raise InvalidInputError(f"the MIRAX Slidedat.ini names a {what} outside the slide's folder; refused")
    return name


@dataclass(frozen=True)
class ZoomLevel:
    width: int
    height: int
    image_format: str


def check_mirax(mrxs_path: str) -> None:
    """The guard (module docstring); a no-op for paths that are not .mrxs files."""
    if not is_mrxs_name(mrxs_path):
        return
    folder = unit_folder(mrxs_path)
    slidedat_path = os.path.join(folder, SLIDEDAT)
    try:
        size = os.path.getsize(slidedat_path)
        if size > SLIDEDAT_MAX_BYTES:
            raise InvalidInputError(f"the MIRAX Slidedat.ini is larger than {SLIDEDAT_MAX_BYTES} bytes; refused")
        with open(slidedat_path, "rb") as handle:
            ini = parse_slidedat(handle.read())
    except OSError:
        raise InvalidInputError(
            "the MIRAX slide has no readable Slidedat.ini in the folder named like its .mrxs file; copy the "
            "whole folder beside the .mrxs file"
        ) from None
    images_x, images_y = ini.integer("GENERAL", "IMAGENUMBER_X"), ini.integer("GENERAL", "IMAGENUMBER_Y")
    if not (images_x > 0 and images_y > 0 and images_x * images_y <= MAX_IMAGES):
        raise InputTooLargeError(
            f"the MIRAX Slidedat.ini declares a {images_x} x {images_y} camera image grid, outside 1 to "
            f"{MAX_IMAGES} images; the slide is damaged or hostile"
        )
    levels = zoom_levels(ini)
    files = [_plain_name(ini.get("DATAFILE", f"FILE_{i}"), "data file") for i in range(_file_count(ini))]
    index = _plain_name(ini.get("HIERARCHICAL", "INDEXFILE"), "index file")
    paths = [os.path.join(folder, name) for name in files]
    try:
        with open(os.path.join(folder, index), "rb") as handle:
            _check_index(handle, ini, levels, paths, images_x * images_y)
    except OSError:
        raise InvalidInputError(
            "a file the MIRAX Slidedat.ini names is missing from the slide's folder; copy the whole folder"
        ) from None


def _file_count(ini: Slidedat) -> int:
    count = ini.integer("DATAFILE", "FILE_COUNT")
    if not 0 < count <= 65536:
        raise InvalidInputError("the MIRAX Slidedat.ini declares an impossible data file count; damaged")
    return count


def zoom_levels(ini: Slidedat) -> list[ZoomLevel]:
    if ini.get("HIERARCHICAL", "HIER_0_NAME") != "Slide zoom level":
        raise InvalidInputError("the MIRAX Slidedat.ini has no 'Slide zoom level' as HIER_0; unsupported layout")
    count = ini.integer("HIERARCHICAL", "HIER_0_COUNT")
    if not 0 < count <= MAX_LEVELS:
        raise InvalidInputError(f"the MIRAX Slidedat.ini declares {count} zoom levels; 1 to {MAX_LEVELS} are read")
    levels, exponent = [], 0
    for k in range(count):
        section = ini.get("HIERARCHICAL", f"HIER_0_VAL_{k}_SECTION")
        width = ini.integer(section, "DIGITIZER_WIDTH")
        height = ini.integer(section, "DIGITIZER_HEIGHT")
        exponent += ini.integer(section, "IMAGE_CONCAT_FACTOR")
        image_format = ini.get(section, "IMAGE_FORMAT").strip()
        if not (width > 0 and height > 0 and width * height * 4 <= MAX_IMAGE_BUFFER_BYTES):
            raise InputTooLargeError(
                f"MIRAX zoom level {k} declares {width} x {height}-pixel images, more than a "
                f"{MAX_IMAGE_BUFFER_BYTES}-byte buffer each (or none); the slide is damaged or hostile"
            )
        if not 0 <= exponent <= 30:
            raise InvalidInputError(f"MIRAX zoom level {k} declares an impossible concat factor; damaged")
        if image_format not in _FORMATS:
            raise InvalidInputError(f"MIRAX zoom level {k} declares an unknown image format; unsupported")
        levels.append(ZoomLevel(width, height, image_format))
    return levels


def _check_index(handle: BinaryIO, ini: Slidedat, levels: list[ZoomLevel], data_paths: list[str], images: int) -> None:
    slide_id = ini.get("GENERAL", "SLIDE_ID").encode("utf-8")
    if handle.read(len(INDEX_VERSION) + len(slide_id)) != INDEX_VERSION + slide_id:
        raise InvalidInputError("the MIRAX index file does not match its Slidedat.ini (version or SLIDE_ID); damaged")
    hier_root, nonhier_root = _ints(handle, len(INDEX_VERSION) + len(slide_id), 2)
    sizes = [os.path.getsize(path) for path in data_paths]
    for k, level in enumerate(levels):
        (head,) = _ints(handle, hier_root + 4 * k, 1)
        for image, offset, length, fileno in _records(handle, head, 4, images):
            del image
            _check_image(data_paths, sizes, fileno, offset, length, level, f"an image of MIRAX zoom level {k}")
    for record in _associated_records(ini):
        (head,) = _ints(handle, nonhier_root + 4 * record, 1)
        for _zero, _zero2, offset, length, fileno in _records(handle, head, 5, 1):
            _check_image(data_paths, sizes, fileno, offset, length, None, "a MIRAX label, macro or thumbnail")


def _associated_records(ini: Slidedat) -> list[int]:
    """Record numbers of the JPEG label, macro and thumbnail among the non-hierarchical values."""
    hier = ini.sections.get("HIERARCHICAL", {})
    found, offset = [], 0
    for layer in range(int(hier.get("NONHIER_COUNT", "0") or 0)):
        count = int(hier.get(f"NONHIER_{layer}_COUNT", "0") or 0)
        for value in range(count):
            name = hier.get(f"NONHIER_{layer}_VAL_{value}", "")
            if hier.get(f"NONHIER_{layer}_NAME") == "Scan data layer" and name in _ASSOCIATED:
                found.append(offset + value)
        offset += count
    return found


def _records(handle: BinaryIO, head: int, width: int, limit: int) -> list[tuple[int, ...]]:
    """The records of a linked list of index data pages (the first page is always empty)."""
    _zero, page = _ints(handle, head, 2)
    out: list[tuple[int, ...]] = []
    for _ in range(MAX_PAGES):
        if width == 5:  # a non-hierarchical page: [1, next, 0, 0, offset, size, fileno]
            count, _next, *rest = _ints(handle, page, 7)
            return [(0, 0, *rest[2:])] if count == 1 else []
        count, following = _ints(handle, page, 2)
        if not 0 <= count <= MAX_PAGE_RECORDS or len(out) + count > max(limit, 1) * 4:
            raise InvalidInputError("a MIRAX index page declares an impossible number of images; damaged")
        values = _ints(handle, page + 8, count * width)
        out.extend(tuple(values[i : i + width]) for i in range(0, len(values), width))
        if following == 0:
            return out
        page = following
    raise InvalidInputError("the MIRAX index pages do not end; the file is damaged")


def _ints(handle: BinaryIO, offset: int, count: int) -> tuple[int, ...]:
    if offset < 0:
        raise InvalidInputError("the MIRAX index file points before its start; the file is damaged")
    handle.seek(offset)
    data = handle.read(4 * count)
    if len(data) != 4 * count:
        raise InvalidInputError("the MIRAX index file ends inside a record; the file is truncated")
    return struct.unpack(f"<{count}i", data)


def _check_image(
    paths: list[str], sizes: list[int], fileno: int, offset: int, length: int, level: ZoomLevel | None, what: str
) -> None:
    if not 0 <= fileno < len(paths) or offset < 0 or length <= 0 or offset + length > sizes[fileno]:
        raise InvalidInputError(f"{what} lies outside its data file; the slide is truncated or damaged")
    if level is not None and level.image_format != "JPEG":
        return  # PNG and BMP decode into the buffer the level declares
    with open(paths[fileno], "rb") as data:
        data.seek(offset)
        head = data.read(min(length, HEADER_PREFIX_BYTES))
        if read_header(head, "jpeg", what) is None and length > len(head):
            data.seek(offset)
            head = data.read(min(length, 1 << 20))
    if level is not None:
        check_unit(head, "jpeg", Geometry(level.width, level.height, 3), what)
        return
    header = read_header(head, "jpeg", what)
    if header is None or header.width * header.height * 4 > MAX_IMAGE_BUFFER_BYTES:
        raise InputTooLargeError(f"{what} declares more than {MAX_IMAGE_BUFFER_BYTES} bytes of pixels, or none")

