"""Synthetic vendor slide metadata with fake PHI in each place a vendor puts it (tests only).

Leica SCN (ImageDescription XML), Ventana/Roche BIF (XMP `<iScan>`), Philips TIFF (ImageDescription
XML of `<Attribute>`s), Hamamatsu NDPI (private tags 65427, 65442, 65449), MIRAX Slidedat.ini text,
and an ICC profile whose description holds a name. Every value holds 'ZQX'. `VENDOR_VALUES` maps
each vendor to (kind suffix, value) pairs the harvest must find; `TECHNICAL_VALUES` must not be.
Imported as `from tests.support.vendor_fixtures import ...`; it holds no tests itself.
"""

from __future__ import annotations

import base64
import struct
from pathlib import Path

import numpy as np
import tifffile

LEICA_BARCODE = "ZQXLBC-31337"
LEICA_UUID = "7d1e4c2a-9b3f-4e21-a8c0-5a6b7c8d9e0f"
LEICA_XML = f"""<?xml version="1.0" encoding="utf-8"?>
<scn xmlns="http://www.leica-microsystems.com/scn/2010/10/01">
  <collection name="ZQXSCN-COLLECTION-42" uuid="urn:uuid:{LEICA_UUID}" sizeX="20000" sizeY="10000">
    <barcode>{base64.b64encode(LEICA_BARCODE.encode()).decode()}</barcode>
    <image name="ZQXSCN-IMAGE-77" uuid="urn:uuid:0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d">
      <creationDate>2021-03-04T05:06:07.89Z</creationDate>
      <device model="Leica SCN400;Leica SCN" version="1.5.1.10864 2012/05/10 13:29:07" serial="ZQXSN-SCN-5150"/>
      <pixels sizeX="20000" sizeY="10000"><dimension sizeX="20000" sizeY="10000" r="0" ifd="0"/></pixels>
      <view sizeX="20000" sizeY="10000" offsetX="0" offsetY="0" spacingZ="0"/>
      <scanSettings><objectiveSettings><objective>20</objective></objectiveSettings></scanSettings>
    </image>
  </collection>
</scn>"""

VENTANA_XMP = """<?xml version="1.0" encoding="utf-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="">
<iScan BuildDate="2019-01-01" BuildVersion="3.3.1.1" CaseNumber="ZQXCASE-2024-118"
  Magnification="40" ScanRes="0.25" ScannerModel="VENTANA DP 200" ShowLabel="1"
  SlideAnnotation="ZQX block 3 H&amp;E" BarCode1D="ZQXBAR1D-77" UnitNumber="ZQXUNIT-0091"
  UserName="zqxventana.user" ScanDate="2022-06-15" Z-layers="1">
  <AOI0 AOIScanned="1" Left="10" Top="20" Right="30" Bottom="40"/>
</iScan>
</rdf:Description></rdf:RDF></x:xmpmeta>"""

PHILIPS_NAME = "ZQXWARBLE^QUINTESSA"
PHILIPS_BARCODE = "ZQXPBC-8080"


def _attr(name: str, value: str, vr: str = "IString") -> str:
    return f'<Attribute Name="{name}" Group="0x0010" Element="0x0010" PMSVR="{vr}">{value}</Attribute>'


PHILIPS_XML = (
    '<?xml version="1.0" encoding="UTF-8" ?><DataObject ObjectType="DPUfsImport">'
    + _attr("DICOM_PATIENT_NAME", f'"{PHILIPS_NAME}"')
    + _attr("DICOM_PATIENT_ID", "ZQXPHIL-ID-55")
    + _attr("DICOM_MANUFACTURER", "PHILIPS")
    + _attr("DICOM_SOFTWARE_VERSIONS", '"4.0.3" "1.2.3"', "IStringArray")
    + _attr("DICOM_DEVICE_SERIAL_NUMBER", "ZQXDEV-SN-4321")
    + _attr("DICOM_ACQUISITION_DATETIME", "20220102030405.000000")
    + _attr("PIM_DP_UFS_BARCODE", base64.b64encode(PHILIPS_BARCODE.encode()).decode())
    + _attr("PIM_DP_SCANNED_IMAGES", "<Array></Array>")
    + "</DataObject>"
)

NDPI_REFERENCE = "ZQXNDPI-REF-9"
NDPI_SERIAL = "ZQXNDPISN-0777"
NDPI_MACRO_SERIAL = "ZQXNDPISN-MACRO-1"
NDPI_PROPERTY_MAP = (
    "[NDP.S]\r\nVersion=2.1\r\nCalibration=Bright;SerialNumber=ZQXNDPI-PMAP-SN;Date=2020/07/08 09:10:11"
    ";Mode=Bright\r\nObjective.Lens.Magnificant=20"
)

SLIDEDAT_INI = """\ufeff[GENERAL]
SLIDE_ID = 9f3c2a1b7e6d5c4b3a291807f6e5d4c3
SLIDE_NAME = ZQXMIRAX-SLIDE-12
SLIDE_BARCODE = ZQXMRXBC-404
SLIDE_CREATIONDATETIME = 16/12/2013 10:47:41
PROJECT_NAME = ZQXPROJECT-Lung
SLIDE_VERSION = 01.02
SLIDE_TYPE = 1
CAMERA_IMAGE_DIVISIONS_PER_SIDE = 2
OBJECTIVE_MAGNIFICATION = 20
[HIERARCHICAL]
HIER_COUNT = 2
HIER_0_NAME = Slide zoom level
"""

# (kind suffix, value) the harvest must find, per vendor.
VENDOR_VALUES: dict[str, list[tuple[str, str]]] = {
    "leica": [
        ("ImageDescription:name", "ZQXSCN-COLLECTION-42"),
        ("ImageDescription:name", "ZQXSCN-IMAGE-77"),
        ("ImageDescription:uuid", LEICA_UUID),
        ("ImageDescription:barcode", LEICA_BARCODE),
        ("ImageDescription:creationDate", "2021-03-04"),
        ("ImageDescription:serial", "ZQXSN-SCN-5150"),
    ],
    "ventana": [
        ("XMP:UserName", "zqxventana.user"),
        ("XMP:CaseNumber", "ZQXCASE-2024-118"),
        ("XMP:SlideAnnotation", "ZQX block 3 H&E"),
        ("XMP:BarCode1D", "ZQXBAR1D-77"),
        ("XMP:UnitNumber", "ZQXUNIT-0091"),
        ("XMP:ScanDate", "20220615"),
    ],
    "philips": [
        ("ImageDescription:DICOM_PATIENT_NAME", PHILIPS_NAME),
        ("ImageDescription:DICOM_PATIENT_NAME", "QUINTESSA ZQXWARBLE"),
        ("ImageDescription:DICOM_PATIENT_ID", "ZQXPHIL-ID-55"),
        ("ImageDescription:DICOM_DEVICE_SERIAL_NUMBER", "ZQXDEV-SN-4321"),
        ("ImageDescription:DICOM_ACQUISITION_DATETIME", "2022-01-02"),
        ("ImageDescription:PIM_DP_UFS_BARCODE", PHILIPS_BARCODE),
    ],
    "ndpi": [
        ("NDPI_Reference", NDPI_REFERENCE),
        ("NDPI_ScannerSerialNumber", NDPI_SERIAL),
        ("NDPI_ScannerSerialNumber", NDPI_MACRO_SERIAL),
        ("NDPI_PropertyMap:SerialNumber", "ZQXNDPI-PMAP-SN"),
        ("NDPI_PropertyMap:Date", "2020-07-08"),
    ],
}
# Values the harvest must leave alone: versions, models, magnifications, vendor words.
TECHNICAL_VALUES = ("2019-01-01", "3.3.1.1", "VENTANA DP 200", "PHILIPS", "4.0.3", "Leica SCN400;Leica SCN")

_PIXELS = np.full((32, 32, 3), 200, np.uint8)


def write_leica_scn(path: Path) -> Path:
    tifffile.imwrite(path, _PIXELS, description=LEICA_XML, photometric="rgb")
    return path


def write_ventana_bif(path: Path) -> Path:
    xmp = VENTANA_XMP.encode("utf-8")
    with tifffile.TiffWriter(path) as tif:
        tif.write(_PIXELS, description="Label Image", photometric="rgb")
        tif.write(_PIXELS, description="level=0 mag=40 quality=95", photometric="rgb",
                  extratags=[(700, 1, len(xmp), xmp, True)])
    return path


def write_philips_tiff(path: Path) -> Path:
    tifffile.imwrite(path, _PIXELS, description=PHILIPS_XML, photometric="rgb", software="Philips")
    return path


def _ascii(tag: int, text: str) -> tuple[int, int, int, bytes, bool]:
    data = text.encode("ascii") + b"\x00"
    return (tag, 2, len(data), data, True)


def write_ndpi(path: Path) -> Path:
    """Two IFDs like NDPI's: a level with the reference, serial and property map; a macro with its serial."""
    with tifffile.TiffWriter(path) as tif:
        tif.write(_PIXELS, photometric="rgb", extratags=[
            _ascii(65427, NDPI_REFERENCE), _ascii(65442, NDPI_SERIAL), _ascii(65448, "NDP.scan 3.4.1"),
            _ascii(65449, NDPI_PROPERTY_MAP), (65421, 11, 1, 20.0, True),
        ])
        tif.write(_PIXELS, photometric="rgb", extratags=[(65421, 11, 1, -1.0, True), _ascii(65442, NDPI_MACRO_SERIAL)])
    return path


VENDOR_WRITERS = {"leica": write_leica_scn, "ventana": write_ventana_bif, "philips": write_philips_tiff,
                  "ndpi": write_ndpi}


def icc_profile(description: str) -> bytes:
    """A minimal ICC v4 profile whose 'desc' (mluc, UTF-16BE) is `description`."""
    text = description.encode("utf-16-be")
    mluc = b"mluc" + b"\x00" * 4 + struct.pack(">II", 1, 12) + b"enUS" + struct.pack(">II", len(text), 28) + text
    mluc += b"\x00" * (-len(mluc) % 4)
    tag_table = struct.pack(">I", 1) + b"desc" + struct.pack(">II", 128 + 4 + 12, len(mluc))
    body = tag_table + mluc
    header = bytearray(128)
    struct.pack_into(">I", header, 0, 128 + len(body))
    header[8:12] = bytes([4, 0x30, 0, 0])
    header[12:16], header[16:20], header[20:24], header[36:40] = b"mntr", b"RGB ", b"XYZ ", b"acsp"
    return bytes(header) + body


def write_output_tiff(path: Path, description: str = "Aperio Image Library|AppMag = 20", icc: bytes = b"") -> Path:
    """A de-identified-looking output TIFF; `icc` (if any) in the ICC profile tag (34675)."""
    extratags = [(34675, 7, len(icc), icc, True)] if icc else []
    tifffile.imwrite(path, _PIXELS, description=description, photometric="rgb", extratags=extratags)
    return path
