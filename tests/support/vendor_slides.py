"""Vendor-faithful synthetic slides that OpenSlide opens: Philips TIFF, Leica SCN, Ventana BIF (tests only).

Each follows OpenSlide's format notes for its vendor and puts an identifying value ('ZQX...') in
every text field the vendor writes, and on the label or macro as printed text; `VALUES[vendor]`
lists them, every one of which must be absent from every output byte after de-identification.

- Philips (`write_philips_tiff`): Software 'Philips...', ImageDescription = DPUfsImport XML with
  patient, barcode (base64), device serial and dates, PIM_DP_SCANNED_IMAGES holding the WSI image
  (DICOM_PIXEL_SPACING in mm, one PixelDataRepresentation per level) and base64 JPEG LABELIMAGE and
  MACROIMAGE; tiled JPEG levels, reduced ones marked reduced-resolution.
- Leica SCN (`write_leica_scn`): the first IFD is the tiled macro whose ImageDescription is the SCN
  XML (collection in nanometre "clicks", a macro image covering the collection, a brightfield main
  image with its view offset, one dimension per pyramid IFD); MPP from the level-0 resolution tags.
- Ventana BIF (`write_ventana_bif`): IFD 0 'Label Image' (OpenSlide's macro) whose XMP is the
  `<iScan>` element (Magnification, ScanRes, UserName, BarCode1D...), a 'Thumbnail', then
  'level=N mag=M' tiled levels; level 0's XMP is the EncodeInfo stitching map (one AOI, serpentine
  tile numbering from the bottom, joints with zero overlap).
"""

from __future__ import annotations

import base64
from pathlib import Path

import cv2
import numpy as np
import tifffile

from tests.support.wsi_factory import draw_text, tissue

VALUES: dict[str, dict[str, str]] = {
    "philips": {
        "name": "ZQXPHILNAME^ROSALIND",
        "patient_id": "ZQXPHID-31337",
        "barcode": "ZQXPHBC-2718",
        "serial": "ZQXPHSN-1414",
        "source": "ZQXPHSRC-case17",
        "label": "ZQXPHLBL-99",
    },
    "leica": {
        "collection": "ZQXSCNCOLL-8",
        "image": "ZQXSCNIMG-9",
        "uuid": "3f2a9c4e-1b7d-4e8f-a2c1-9d0e8f7a6b5c",
        "barcode": "ZQXSCNBC-4040",
        "serial": "ZQXSCNSN-6060",
        "label": "ZQXSCNLBL-12",
    },
    "ventana": {
        "user": "zqxbif.operator",
        "case": "ZQXBIFCASE-2025-3",
        "annotation": "ZQXBIFANNOT block4",
        "barcode": "ZQXBIFBC-7777",
        "unit": "ZQXBIFUNIT-0042",
        "label": "ZQXBIFLBL-31",
    },
}
DATES = {"philips": "20230405060708", "leica": "2023-04-05T06:07:08.09Z", "ventana": "2023-04-05"}
LEVEL0 = (1024, 768)
TILE = 256


def _jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return encoded.tobytes()


def _printed(width: int, height: int, lines: list[str], tissue_from: int | None = None) -> np.ndarray:
    image = np.full((height, width, 3), 238, np.uint8)
    if tissue_from is not None:
        image[:, tissue_from:] = tissue(width - tissue_from, height, seed=11)
    for index, line in enumerate(lines):
        draw_text(image, 12, 30 + 60 * index, line, scale=0.8)
    return image


def _levels(width: int, height: int, count: int = 3, seed: int = 7) -> list[np.ndarray]:
    image = tissue(width, height, seed=seed)
    draw_text(image, width // 2 - 120, height // 2 - 20, "ZQX TISSUE TEXT", scale=1.0)
    out = [image]
    for _ in range(count - 1):
        image = cv2.resize(image, (-(-image.shape[1] // 2), -(-image.shape[0] // 2)), interpolation=cv2.INTER_AREA)
        out.append(image)
    return out


# -- Philips ------------------------------------------------------------------------------------------


def _attr(name: str, value: str, group: str = "0x0010", element: str = "0x0010", vr: str = "IString") -> str:
    return f'<Attribute Name="{name}" Group="{group}" Element="{element}" PMSVR="{vr}">{value}</Attribute>'


def _pair(value: float) -> str:
    return f'"{value:.8g}" "{value:.8g}"'


def _array(name: str, group: str, element: str, items: str) -> str:
    head = f'<Attribute Name="{name}" Group="{group}" Element="{element}" PMSVR="IDataObjectArray">'
    return f"{head}<Array>{items}</Array></Attribute>"


def philips_xml(levels: int, mpp: float = 0.25) -> str:
    v = VALUES["philips"]
    label = base64.b64encode(_jpeg(_printed(400, 300, [v["label"], v["name"][:12], v["barcode"]]))).decode()
    macro = base64.b64encode(_jpeg(_printed(900, 300, [v["label"], v["patient_id"]], tissue_from=360))).decode()
    spacing = mpp / 1000
    representations = "".join(
        '<DataObject ObjectType="PixelDataRepresentation">'
        + _attr("DICOM_PIXEL_SPACING", _pair(spacing * 2**k), "0x0028", "0x0030", "IDoubleArray")
        + _attr("PIIM_PIXEL_DATA_REPRESENTATION_NUMBER", str(k), "0x101D", "0x2001", "IUInt16")
        + _attr("PIIM_PIXEL_DATA_REPRESENTATION_COLUMNS", str(LEVEL0[0] >> k), "0x2001", "0x115E", "IUInt32")
        + _attr("PIIM_PIXEL_DATA_REPRESENTATION_ROWS", str(LEVEL0[1] >> k), "0x2001", "0x115D", "IUInt32")
        + "</DataObject>"
        for k in range(levels)
    )
    wsi = (
        '<DataObject ObjectType="DPScannedImage">'
        + _attr("PIM_DP_IMAGE_TYPE", "WSI", "0x101D", "0x1004", "IString")
        + _attr("DICOM_PIXEL_SPACING", _pair(spacing), "0x0028", "0x0030", "IDoubleArray")
        + _attr(
            "DICOM_DERIVATION_DESCRIPTION",
            f'tiff-useBigTIFF=1-useRgb=0-levels=10002,10000,10001-processing=0-q80-sourceFilename="{v["source"]}.isyntax"',
            "0x0008",
            "0x2111",
        )
        + _attr("DICOM_ACQUISITION_DATETIME", DATES["philips"], "0x0008", "0x002A")
        + _array("PIIM_PIXEL_DATA_REPRESENTATION_SEQUENCE", "0x1001", "0x8B01", representations)
        + "</DataObject>"
    )
    associated = "".join(
        '<DataObject ObjectType="DPScannedImage">'
        + _attr("PIM_DP_IMAGE_TYPE", kind, "0x101D", "0x1004")
        + _attr("PIM_DP_IMAGE_DATA", data, "0x101D", "0x1005", "IString")
        + "</DataObject>"
        for kind, data in (("LABELIMAGE", label), ("MACROIMAGE", macro))
    )
    return (
        '<?xml version="1.0" encoding="UTF-8" ?><DataObject ObjectType="DPUfsImport">'
        + _attr("DICOM_PATIENT_NAME", f'"{v["name"]}"')
        + _attr("DICOM_PATIENT_ID", v["patient_id"], "0x0010", "0x0020")
        + _attr("DICOM_MANUFACTURER", "PHILIPS", "0x0008", "0x0070")
        + _attr("DICOM_DEVICE_SERIAL_NUMBER", v["serial"], "0x0018", "0x1000")
        + _attr("DICOM_STUDY_DATE", DATES["philips"][:8], "0x0008", "0x0020")
        + _attr("PIM_DP_UFS_BARCODE", base64.b64encode(v["barcode"].encode()).decode(), "0x101D", "0x1002")
        + _array("PIM_DP_SCANNED_IMAGES", "0x101D", "0x1003", wsi + associated)
        + "</DataObject>"
    )


def write_philips_tiff(path: Path, levels: int = 3) -> Path:
    description = philips_xml(levels)
    with tifffile.TiffWriter(path) as tif:
        for index, image in enumerate(_levels(*LEVEL0, count=levels, seed=21)):
            tif.write(
                image,
                tile=(TILE, TILE),
                compression="jpeg",
                photometric="rgb",
                subfiletype=0 if index == 0 else 1,
                description=description if index == 0 else f"level={index}",
                software="Philips DP v1.0",
                metadata=None,
            )
    return path


# -- Leica SCN ----------------------------------------------------------------------------------------

_SCN_NS = "http://www.leica-microsystems.com/scn/2010/10/01"
_NM_PER_PIXEL = 500  # level 0 of the main image: 0.5 um per pixel
_COLLECTION = (600_000, 450_000)  # nm
_MAIN_OFFSET = (40_000, 30_000)  # nm
_MACRO = (300, 225)  # px over the whole collection: 2000 nm per pixel


def leica_xml(levels: int) -> str:
    v = VALUES["leica"]
    barcode = base64.b64encode(v["barcode"].encode()).decode()
    version = "1.5.1.10864 2012/05/10 13:29:07"
    device = f'<device model="Leica SCN400;Leica SCN" version="{version}" serial="{v["serial"]}"/>'

    def settings(objective: str) -> str:
        return (
            f"<scanSettings><objectiveSettings><objective>{objective}</objective></objectiveSettings>"
            "<illuminationSettings><numericalAperture>0.4</numericalAperture>"
            "<illuminationSource>brightfield</illuminationSource></illuminationSettings></scanSettings>"
        )

    main_dims = "".join(
        f'<dimension sizeX="{LEVEL0[0] >> k}" sizeY="{LEVEL0[1] >> k}" r="{k}" ifd="{k + 1}"/>' for k in range(levels)
    )
    width_nm, height_nm = LEVEL0[0] * _NM_PER_PIXEL, LEVEL0[1] * _NM_PER_PIXEL
    return (
        f'<?xml version="1.0" encoding="utf-8"?><scn xmlns="{_SCN_NS}">'
        f'<collection name="{v["collection"]}" uuid="urn:uuid:{v["uuid"]}" '
        f'sizeX="{_COLLECTION[0]}" sizeY="{_COLLECTION[1]}">'
        f"<barcode>{barcode}</barcode>"
        f'<image name="{v["image"]}-macro" uuid="urn:uuid:0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e">'
        f"<creationDate>{DATES['leica']}</creationDate>{device}"
        f'<pixels sizeX="{_MACRO[0]}" sizeY="{_MACRO[1]}">'
        f'<dimension sizeX="{_MACRO[0]}" sizeY="{_MACRO[1]}" r="0" ifd="0"/></pixels>'
        f'<view sizeX="{_COLLECTION[0]}" sizeY="{_COLLECTION[1]}" offsetX="0" offsetY="0" spacingZ="0"/>'
        f"{settings('0.5')}</image>"
        f'<image name="{v["image"]}" uuid="urn:uuid:{v["uuid"][:-4]}beef">'
        f"<creationDate>{DATES['leica']}</creationDate>{device}"
        f'<pixels sizeX="{LEVEL0[0]}" sizeY="{LEVEL0[1]}">{main_dims}</pixels>'
        f'<view sizeX="{width_nm}" sizeY="{height_nm}" '
        f'offsetX="{_MAIN_OFFSET[0]}" offsetY="{_MAIN_OFFSET[1]}" spacingZ="0"/>'
        f"{settings('20')}</image>"
        "</collection></scn>"
    )


def write_leica_scn(path: Path, levels: int = 3) -> Path:
    v = VALUES["leica"]
    macro = _printed(*_MACRO, [v["label"], v["barcode"][:10]], tissue_from=120)
    per_cm = 10_000_000 // _NM_PER_PIXEL
    with tifffile.TiffWriter(path) as tif:
        tif.write(macro, tile=(TILE, TILE), compression="jpeg", photometric="rgb", description=leica_xml(levels),
                  resolution=(per_cm // 4, per_cm // 4), resolutionunit="CENTIMETER", metadata=None, software=False)
        for index, image in enumerate(_levels(*LEVEL0, count=levels, seed=31)):
            tif.write(image, tile=(TILE, TILE), compression="jpeg", photometric="rgb",
                      resolution=(per_cm >> index, per_cm >> index), resolutionunit="CENTIMETER",
                      metadata=None, software=False)
    return path


# -- Ventana BIF --------------------------------------------------------------------------------------


def iscan_xmp() -> bytes:
    v = VALUES["ventana"]
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<iScan BuildDate="2019-01-01" BuildVersion="3.3.1.1" CaseNumber="{v["case"]}" Magnification="40" '
        f'ScanRes="0.25" ScannerModel="VENTANA DP 200" ShowLabel="1" SlideAnnotation="{v["annotation"]}" '
        f'BarCode1D="{v["barcode"]}" UnitNumber="{v["unit"]}" UserName="{v["user"]}" ScanDate="{DATES["ventana"]}" '
        'Z-layers="1"><AOI0 AOIScanned="1" Left="10" Top="20" Right="300" Bottom="200"/></iScan>'
    ).encode()


def encode_info(cols: int, rows: int) -> bytes:
    """The level-0 stitching map: one AOI, tiles numbered serpentine from the bottom row, zero overlaps."""

    def number(col: int, row: int) -> int:
        from_bottom = rows - 1 - row
        position = col if from_bottom % 2 == 0 else cols - 1 - col
        return from_bottom * cols + position + 1

    joints = []
    for row in range(rows):
        for col in range(cols):
            if col + 1 < cols:
                joints.append(("RIGHT", number(col, row), number(col + 1, row)))
            if row > 0:
                joints.append(("UP", number(col, row), number(col, row - 1)))
    joint_xml = "".join(
        f'<TileJointInfo FlagJoined="1" Direction="{d}" Tile1="{a}" Tile2="{b}" '
        'OverlapX="0" OverlapY="0" Confidence="90"/>'
        for d, a, b in joints
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><EncodeInfo Ver="2"><SlideStitchInfo>'
        f'<ImageInfo AOIScanned="1" AOIIndex="0" NumRows="{rows}" NumCols="{cols}" Width="{TILE}" Height="{TILE}" '
        f'Pos-X="0" Pos-Y="0">{joint_xml}</ImageInfo></SlideStitchInfo>'
        '<AoiOrigin><AOI0 OriginX="0" OriginY="0"/></AoiOrigin></EncodeInfo>'
    ).encode()


def write_ventana_bif(path: Path, levels: int = 3) -> Path:
    v = VALUES["ventana"]
    xmp = iscan_xmp()
    stitch = encode_info(LEVEL0[0] // TILE, LEVEL0[1] // TILE)
    macro = _printed(800, 300, [v["label"], v["case"][:14]], tissue_from=320)
    pyramid = _levels(*LEVEL0, count=levels, seed=41)
    thumb = cv2.resize(pyramid[-1], (128, 96), interpolation=cv2.INTER_AREA)
    with tifffile.TiffWriter(path) as tif:
        tif.write(macro, compression="jpeg", photometric="rgb", description="Label Image",
                  extratags=[(700, 1, len(xmp), xmp, True)], metadata=None, software=False)
        tif.write(thumb, compression="jpeg", photometric="rgb", description="Thumbnail", metadata=None, software=False)
        for index, image in enumerate(pyramid):
            extratags = [(700, 1, len(stitch), stitch, True)] if index == 0 else []
            tif.write(image, tile=(TILE, TILE), compression="jpeg", photometric="rgb",
                      description=f"level={index} mag={40 >> index} quality=90", extratags=extratags,
                      metadata=None, software=False)
    return path


WRITERS = {"philips": write_philips_tiff, "leica": write_leica_scn, "ventana": write_ventana_bif}
