"""Synthetic inputs full of unique, greppable fake PHI, shared by the verify/QA/fuzz/log tests.

Every PHI string contains 'ZQX' so a stray copy is easy to find. Imported as
`from tests.support.phi_fixtures import ...`; it holds no tests itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

PATIENT_NAME = "ZQXNAME^ALPHA"
PATIENT_ID = "MRN-ZQX-4242"
OTHER_ID = "MRN-ZQX-OLD-77"
BIRTH_DATE = "19520317"
STUDY_DATE = "20230911"
ACCESSION = "ACCZQX9001"
INSTITUTION = "ZQX Memorial Hospital"
REFERRING = "ZQXDOCTOR^BETA"
OPERATOR = "ZQXTECH^GAMMA"
PRIVATE_NOTE = "ZQXPRIVATE note about ZQXNAME"
COMMENT = "Patient MRN-ZQX-4242 came in"
STATION = "ZQX-STATION-9"
SLIDE_FILENAME = "ZQXSLIDE_ALPHA_MRN-ZQX-4242"
SLIDE_USER = "zqx.tech.user"
SLIDE_BARCODE = "BCZQX-123456"

# Values an output must never contain (raw strings, before any PN/date variants).
DICOM_PHI = (
    PATIENT_NAME,
    "ZQXNAME",
    PATIENT_ID,
    OTHER_ID,
    ACCESSION,
    INSTITUTION,
    "ZQXDOCTOR",
    "ZQXTECH",
    "ZQXPRIVATE",
    STATION,
)
SLIDE_PHI = (SLIDE_FILENAME, SLIDE_USER, SLIDE_BARCODE)
ALL_PHI = DICOM_PHI + SLIDE_PHI + ("ZQX",)


def phi_dataset(number: int = 1, *, rows: int = 16, columns: int = 16) -> Dataset:
    """A small CT instance with PHI in names, IDs, dates, a nested sequence and a private element."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    sop_uid = generate_uid()
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["zqx-study", str(number // 10)])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["zqx-series", str(number // 5)])
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = BIRTH_DATE
    ds.PatientSex = "F"
    ds.StudyDate = STUDY_DATE
    ds.SeriesDate = STUDY_DATE
    ds.StudyTime = "101500"
    ds.AccessionNumber = ACCESSION
    ds.InstitutionName = INSTITUTION
    ds.ReferringPhysicianName = REFERRING
    ds.OperatorsName = OPERATOR
    ds.StationName = STATION
    ds.ImageComments = COMMENT
    ds.OtherPatientIDsSequence = Sequence([Dataset()])
    ds.OtherPatientIDsSequence[0].PatientID = OTHER_ID
    ds.add_new(0x00110010, "LO", "ZQX VENDOR")
    ds.add_new(0x00111001, "LO", PRIVATE_NOTE)
    ds.Modality = "CT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    ds.Rows = rows
    ds.Columns = columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = np.random.default_rng(number).integers(0, 4095, (rows, columns), dtype=np.uint16).tobytes()
    ds.preamble = b"\x00" * 128
    return ds


def phi_dicom_bytes(number: int = 1) -> bytes:
    from io import BytesIO

    buffer = BytesIO()
    pydicom.dcmwrite(buffer, phi_dataset(number), enforce_file_format=True)
    return buffer.getvalue()


def write_phi_dicoms(folder: Path, count: int = 3) -> list[Path]:
    """`count` instances named after the patient (the name is PHI too)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number in range(1, count + 1):
        path = folder / f"ZQXNAME_ALPHA_{number}.dcm"
        path.write_bytes(phi_dicom_bytes(number))
        paths.append(path)
    return paths


def slide_description(width: int = 512, height: int = 512) -> str:
    return (
        f"Aperio Image Library v12.0.15\r\n{width}x{height} [0,0 {width}x{height}] (256x256) JPEG/RGB Q=80"
        f"|AppMag = 20|MPP = 0.4990|Filename = {SLIDE_FILENAME}|Date = 09/11/23|Time = 10:15:00"
        f"|User = {SLIDE_USER}|Barcode = {SLIDE_BARCODE}"
    )


def write_phi_svs(path: Path, size: int = 512) -> Path:
    """A small Aperio-style SVS: PHI in the description, plus a label and a macro."""
    import tifffile

    rng = np.random.default_rng(3)
    level0 = rng.normal(215, 12, (size, size, 3)).clip(0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tifffile.TiffWriter(path) as tif:
        tif.write(level0, tile=(256, 256), compression="jpeg", description=slide_description(size, size),
                  photometric="rgb")
        tif.write(level0[::4, ::4].copy(), description="Aperio Image Library v12.0.15\r\nthumb", photometric="rgb")
        label = np.full((100, 200, 3), 255, np.uint8)
        tif.write(label, description="Aperio Image Library v12.0.15\r\nlabel 200x100", photometric="rgb",
                  subfiletype=1)
        tif.write(label.copy(), description="Aperio Image Library v12.0.15\r\nmacro 200x100", photometric="rgb",
                  subfiletype=9)
    return path
