"""A synthetic 3DHISTECH MIRAX slide laid out as OpenSlide's MIRAX notes describe it (tests only).

`write_mirax(root, stem)` writes `root/<stem>.mrxs` and the folder `root/<stem>/` holding:

- `Slidedat.ini` (UTF-8 with a BOM): [GENERAL] with the slide id, name, barcode, creation time and
  project (identifying values, `MIRAX_VALUES`), IMAGENUMBER_X/Y and CameraImageDivisionsPerSide;
  [HIERARCHICAL] with HIER_0 = 'Slide zoom level' (one section per zoom level: overlap, microns per
  pixel, JPEG, image size, concat factor) and the non-hierarchical layers 'Scan data layer'
  (macro = ScanDataLayer_SlideThumbnail, label = ScanDataLayer_SlideBarcode, thumbnail =
  ScanDataLayer_SlidePreview, and an XML info header) and VIMSLIDE_POSITION_BUFFER; [DATAFILE].
- `Index.dat`: '01.02' + SLIDE_ID, then the hierarchical and non-hierarchical root pointers, their
  record tables and the linked data pages (image index, offset, length, file number).
- `Data0000.dat`: every JPEG image and the camera position buffer (9-byte records).

The camera takes 2 x 2 photos of 512 x 512 pixels that overlap by 32 pixels; each photo is split
into 2 x 2 images of 256 x 256 (`CameraImageDivisionsPerSide = 2`), so the slide is 992 x 992 at
level 0. Level n + 1 concatenates 2 x 2 images of level n, halved: overlaps end up inside images.
Photos are cut from one continuous "truth" image, so any region OpenSlide paints equals the truth.
The label and macro carry printed identifying text.
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

from tests.support.wsi_factory import draw_text, tissue

MIRAX_VALUES = {
    "slide_id": "5e0c3a7f2b9d4c18a6e1f0b2c3d4e5f6",
    "name": "ZQXMRXNAME-LungBx",
    "barcode": "ZQXMRXBC-6161",
    "project": "ZQXMRXPROJ-Onco",
    "label": "ZQXMRXLBL-88",
}
CREATED = "16/12/2013 10:47:41"
IMAGE = 256
DIVISIONS = 2
PHOTOS = 2  # per side
OVERLAP = 32  # pixels between photos at level 0
LEVELS = 3
MPP = 0.2428
SIDE = PHOTOS * DIVISIONS * IMAGE - (PHOTOS - 1) * OVERLAP  # 992


def truth_image() -> np.ndarray:
    image = tissue(SIDE, SIDE, seed=13)
    draw_text(image, 300, 470, "ZQX MIRAX TEXT", scale=1.0)
    return image


def _jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return encoded.tobytes()


def _level0_images(truth: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    step = DIVISIONS * IMAGE - OVERLAP
    images = {}
    for py in range(PHOTOS):
        for px in range(PHOTOS):
            photo = truth[py * step : py * step + DIVISIONS * IMAGE, px * step : px * step + DIVISIONS * IMAGE]
            for j in range(DIVISIONS):
                for i in range(DIVISIONS):
                    images[(px * DIVISIONS + i, py * DIVISIONS + j)] = photo[
                        j * IMAGE : (j + 1) * IMAGE, i * IMAGE : (i + 1) * IMAGE
                    ]
    return images


def _level_images(level0: dict[tuple[int, int], np.ndarray], level: int) -> dict[tuple[int, int], np.ndarray]:
    """Images of `level`, keyed by the level-0 image index of their top-left image."""
    concat = 1 << level
    across = PHOTOS * DIVISIONS
    out = {}
    for y in range(0, across, concat):
        for x in range(0, across, concat):
            canvas = np.full((concat * IMAGE, concat * IMAGE, 3), 255, np.uint8)
            for j in range(concat):
                for i in range(concat):
                    if (x + i, y + j) in level0:
                        canvas[j * IMAGE : (j + 1) * IMAGE, i * IMAGE : (i + 1) * IMAGE] = level0[(x + i, y + j)]
            out[(x, y)] = cv2.resize(canvas, (IMAGE, IMAGE), interpolation=cv2.INTER_AREA) if concat > 1 else canvas
    return out


def slidedat(levels: int = LEVELS) -> str:
    v = MIRAX_VALUES
    lines = [
        "[GENERAL]",
        "SLIDE_VERSION = 01.02",
        f"SLIDE_ID = {v['slide_id']}",
        f"SLIDE_NAME = {v['name']}",
        f"SLIDE_BARCODE = {v['barcode']}",
        f"SLIDE_CREATIONDATETIME = {CREATED}",
        f"PROJECT_NAME = {v['project']}",
        "SLIDE_TYPE = 1",
        f"IMAGENUMBER_X = {PHOTOS * DIVISIONS}",
        f"IMAGENUMBER_Y = {PHOTOS * DIVISIONS}",
        f"CameraImageDivisionsPerSide = {DIVISIONS}",
        "OBJECTIVE_MAGNIFICATION = 20",
        "OBJECTIVE_NAME = Plan-Apochromat",
        "[HIERARCHICAL]",
        "HIER_COUNT = 1",
        "HIER_0_NAME = Slide zoom level",
        f"HIER_0_COUNT = {levels}",
    ]
    for k in range(levels):
        lines += [f"HIER_0_VAL_{k} = ZoomLevel_{k}", f"HIER_0_VAL_{k}_SECTION = LAYER_0_LEVEL_{k}_SECTION"]
    values = ["ScanDataLayer_SlideThumbnail", "ScanDataLayer_SlideBarcode", "ScanDataLayer_SlidePreview",
              "ScanDataLayer_XMLInfoHeader"]
    lines += ["NONHIER_COUNT = 2", "NONHIER_0_NAME = Scan data layer", f"NONHIER_0_COUNT = {len(values)}"]
    for index, value in enumerate(values):
        lines += [
            f"NONHIER_0_VAL_{index} = {value}",
            f"NONHIER_0_VAL_{index}_SECTION = NONHIERLAYER_0_VAL_{index}_SECTION",
        ]
    lines += [
        "NONHIER_1_NAME = VIMSLIDE_POSITION_BUFFER",
        "NONHIER_1_COUNT = 1",
        "NONHIER_1_VAL_0 = default",
        "NONHIER_1_VAL_0_SECTION = NONHIERLAYER_1_SECTION",
        "INDEXFILE = Index.dat",
        "[DATAFILE]",
        "FILE_COUNT = 1",
        "FILE_0 = Data0000.dat",
    ]
    for k in range(levels):
        lines += [
            f"[LAYER_0_LEVEL_{k}_SECTION]",
            f"OVERLAP_X = {OVERLAP >> k}",
            f"OVERLAP_Y = {OVERLAP >> k}",
            f"MICROMETER_PER_PIXEL_X = {MPP * 2**k:.6f}",
            f"MICROMETER_PER_PIXEL_Y = {MPP * 2**k:.6f}",
            "IMAGE_FORMAT = JPEG",
            "IMAGE_FILL_COLOR_BGR = 16777215",
            f"DIGITIZER_WIDTH = {IMAGE}",
            f"DIGITIZER_HEIGHT = {IMAGE}",
            f"IMAGE_CONCAT_FACTOR = {0 if k == 0 else 1}",
        ]
    lines += [
        "[NONHIERLAYER_0_VAL_0_SECTION]", "THUMBNAIL_IMAGE_TYPE = JPEG",
        "[NONHIERLAYER_0_VAL_1_SECTION]", "BARCODE_IMAGE_TYPE = JPEG", f"BARCODE_VALUE = {v['barcode']}",
        "[NONHIERLAYER_0_VAL_2_SECTION]", "PREVIEW_IMAGE_TYPE = JPEG",
        "[NONHIERLAYER_0_VAL_3_SECTION]", "XMLINFOHEADER_TYPE = XML",
        "[NONHIERLAYER_1_SECTION]", "VIMSLIDE_POSITION_DATA_FORMAT_VERSION = 257",
    ]
    return "\ufeff" + "\r\n".join(lines) + "\r\n"


def _printed(width: int, height: int, lines: list[str], tissue_from: int | None = None) -> np.ndarray:
    image = np.full((height, width, 3), 240, np.uint8)
    if tissue_from is not None:
        image[:, tissue_from:] = tissue(width - tissue_from, height, seed=17)
    for index, line in enumerate(lines):
        draw_text(image, 10, 30 + 50 * index, line, scale=0.7)
    return image


def write_mirax(root: Path, stem: str = "ZQXMRXFILE-slide", levels: int = LEVELS) -> Path:
    """Write the slide; returns the path of the .mrxs file."""
    v = MIRAX_VALUES
    folder = root / stem
    folder.mkdir(parents=True, exist_ok=True)
    truth = truth_image()
    level0 = _level0_images(truth)
    data = bytearray(b"01.02" + v["slide_id"].encode("ascii"))
    data += b"\x00" * (-len(data) % 16)

    def put(blob: bytes) -> tuple[int, int]:
        offset = len(data)
        data.extend(blob)
        return offset, len(blob)

    hier: list[list[tuple[int, int, int]]] = []  # per level: (image index, offset, length)
    across = PHOTOS * DIVISIONS
    for level in range(levels):
        records = []
        for (x, y), image in sorted(_level_images(level0, level).items(), key=lambda item: (item[0][1], item[0][0])):
            offset, length = put(_jpeg(image))
            records.append((y * across + x, offset, length))
        hier.append(records)
    step = DIVISIONS * IMAGE - OVERLAP
    positions = b"".join(struct.pack("<Bii", 1, px * step, py * step) for py in range(PHOTOS) for px in range(PHOTOS))
    nonhier = [
        put(_jpeg(_printed(600, 240, [v["label"], v["barcode"]], tissue_from=220))),  # macro
        put(_jpeg(_printed(300, 240, [v["label"], v["name"][:12], v["barcode"]]))),  # label
        put(_jpeg(cv2.resize(truth, (124, 124), interpolation=cv2.INTER_AREA))),  # thumbnail (preview)
        put(f"<ImageInfo><SlideName>{v['name']}</SlideName></ImageInfo>".encode()),  # XML info header
        put(positions),
    ]
    (folder / "Data0000.dat").write_bytes(bytes(data))
    (folder / "Slidedat.ini").write_bytes(slidedat(levels).encode("utf-8"))
    (folder / "Index.dat").write_bytes(index_dat(v["slide_id"], hier, nonhier))
    mrxs = root / f"{stem}.mrxs"
    mrxs.write_bytes(b"MRXS\x00\x01" + v["slide_id"].encode("ascii") + b"\x00" * 10)
    return mrxs


def index_dat(slide_id: str, hier: list[list[tuple[int, int, int]]], nonhier: list[tuple[int, int]]) -> bytes:
    out = bytearray(b"01.02" + slide_id.encode("ascii"))
    roots = len(out)
    out += b"\x00" * 8  # hier root, nonhier root (patched below)

    def ints(*values: int) -> int:
        offset = len(out)
        out.extend(struct.pack(f"<{len(values)}i", *values))
        return offset

    hier_table = ints(*([0] * len(hier)))
    for level, records in enumerate(hier):
        page = ints(len(records), 0, *[v for image, offset, length in records for v in (image, offset, length, 0)])
        head = ints(0, page)
        struct.pack_into("<i", out, hier_table + 4 * level, head)
    nonhier_table = ints(*([0] * len(nonhier)))
    for record, (offset, length) in enumerate(nonhier):
        page = ints(1, 0, 0, 0, offset, length, 0)
        head = ints(0, page)
        struct.pack_into("<i", out, nonhier_table + 4 * record, head)
    struct.pack_into("<ii", out, roots, hier_table, nonhier_table)
    return bytes(out)
