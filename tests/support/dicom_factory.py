"""Synthetic DICOM datasets for tests: a small study full of known identifying values.

`study()` returns four CT instances of one patient in two series. The second series references the
first in nested sequences; every instance carries private elements (one a private sequence), an
overlay group, dates, names and IDs. PHI holds the identifying values so tests can look for them.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian

ROOT = "1.2.826.0.1.3680043.9.7777"
STUDY_UID = f"{ROOT}.1.1"
FRAME_OF_REFERENCE_UID = f"{ROOT}.4.1"

PHI = {
    "PatientName": "DOE^JOHN^Q",
    "PatientID": "MRN-5551234",
    "PatientBirthDate": "19610415",
    "OtherPatientID": "ALT-778899",
    "AccessionNumber": "ACC20240001",
    "ReferringPhysicianName": "HOUSE^GREGORY",
    "InstitutionName": "St Elsewhere General Hospital",
    "InstitutionAddress": "1 Hospital Road, Springfield",
    "StationName": "CTSTATION7",
    "OperatorsName": "RATCHED^MILDRED",
    "StudyDate": "20240315",
    "StudyID": "STUDY42",
    "DeviceSerialNumber": "SN-998877",
    "PrivateText": "JOHN DOE PRIVATE NOTE",
    "PrivateSeqText": "PRIVATE SEQ SECRET",
    "ImageComments": "Patient DOE reports pain",
    "OverlayText": "OVERLAY COMMENT DOE",
    "NestedName": "WATSON^JOHN",
}


def series_uid(series: int) -> str:
    return f"{ROOT}.2.{series}"


def instance_uid(series: int, number: int) -> str:
    return f"{ROOT}.3.{series}.{number}"


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def instance(series: int = 1, number: int = 1, rows: int = 8, columns: int = 8) -> Dataset:
    """One CT instance (explicit VR little endian) with file meta and 8x8 16-bit pixels."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = instance_uid(series, number)
    ds.InstanceCreationDate = PHI["StudyDate"]
    ds.InstanceCreationTime = "101010"
    ds.StudyDate = PHI["StudyDate"]
    ds.SeriesDate = PHI["StudyDate"]
    ds.ContentDate = PHI["StudyDate"]
    ds.AcquisitionDateTime = PHI["StudyDate"] + "101500.000000"
    ds.StudyTime = "101010"
    ds.ContentTime = "101500"
    ds.AccessionNumber = PHI["AccessionNumber"]
    ds.Modality = "CT"
    ds.Manufacturer = "ACME"
    ds.InstitutionName = PHI["InstitutionName"]
    ds.InstitutionAddress = PHI["InstitutionAddress"]
    ds.ReferringPhysicianName = PHI["ReferringPhysicianName"]
    ds.StationName = PHI["StationName"]
    ds.StudyDescription = f"CT CHEST {PHI['PatientName'].split('^')[0]} {PHI['PatientID']}"
    ds.SeriesDescription = f"AXIAL {series}"
    ds.OperatorsName = PHI["OperatorsName"]
    ds.ManufacturerModelName = "SCANMASTER"
    ds.PatientName = PHI["PatientName"]
    ds.PatientID = PHI["PatientID"]
    ds.PatientBirthDate = PHI["PatientBirthDate"]
    ds.PatientSex = "M"
    ds.PatientAge = "062Y"
    ds.PatientWeight = "80"
    other = Dataset()
    other.PatientID = PHI["OtherPatientID"]
    other.IssuerOfPatientID = "OTHER HOSPITAL"
    ds.OtherPatientIDsSequence = Sequence([other])
    ds.ContrastBolusAgent = "IODINE"
    ds.DeviceSerialNumber = PHI["DeviceSerialNumber"]
    ds.SoftwareVersions = "1.0"
    ds.SliceThickness = "1.0"
    ds.KVP = "120"
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = series_uid(series)
    ds.StudyID = PHI["StudyID"]
    ds.SeriesNumber = series
    ds.InstanceNumber = number
    ds.ImagePositionPatient = [0, 0, number]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = FRAME_OF_REFERENCE_UID
    ds.PositionReferenceIndicator = ""
    ds.ImageComments = PHI["ImageComments"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.PixelSpacing = [0.5, 0.5]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.BurnedInAnnotation = "NO"
    if series == 2:
        # References to the first series, nested two levels deep.
        ref = Dataset()
        ref.ReferencedSOPClassUID = CTImageStorage
        ref.ReferencedSOPInstanceUID = instance_uid(1, number)
        ds.SourceImageSequence = Sequence([ref])
        inner = Dataset()
        inner.ReferencedSOPClassUID = CTImageStorage
        inner.ReferencedSOPInstanceUID = instance_uid(1, 1)
        series_item = Dataset()
        series_item.SeriesInstanceUID = series_uid(1)
        series_item.ReferencedInstanceSequence = Sequence([inner])
        evidence = Dataset()
        evidence.StudyInstanceUID = STUDY_UID
        evidence.ReferencedSeriesSequence = Sequence([series_item])
        ds.ReferencedImageEvidenceSequence = Sequence([evidence])
        procedure = Dataset()
        procedure.CodeValue = "CT-CHEST"
        procedure.CodingSchemeDesignator = "99LOCAL"
        procedure.CodeMeaning = "CT chest"
        ds.ProcedureCodeSequence = Sequence([procedure])
        observer = Dataset()
        observer.VerifyingObserverName = PHI["NestedName"]
        observer.VerifyingOrganization = PHI["InstitutionName"]
        observer.VerificationDateTime = PHI["StudyDate"] + "120000"
        ds.VerifyingObserverSequence = Sequence([observer])
    # Private elements: a text element and a private sequence holding a text element.
    block = ds.private_block(0x0011, "ACME PRIVATE", create=True)
    block.add_new(0x01, "LO", PHI["PrivateText"])
    inner_private = Dataset()
    inner_private.add_new(0x00100010, "PN", PHI["PatientName"])
    inner_private.add_new(0x00091001, "LO", PHI["PrivateSeqText"])
    block.add_new(0x02, "SQ", Sequence([inner_private]))
    block.add_new(0x03, "DS", "42.5")
    # An overlay group.
    ds.add_new(0x60000010, "US", rows)
    ds.add_new(0x60000011, "US", columns)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", b"\xff" * ((rows * columns + 15) // 16 * 2))
    ds.add_new(0x60004000, "LT", PHI["OverlayText"])
    pixels = (np.arange(rows * columns, dtype=np.uint16) * (series + number)).reshape(rows, columns)
    ds.PixelData = pixels.tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.SourceApplicationEntityTitle = "HOSPITALPACS"
    ds.file_meta = meta
    ds.set_original_encoding(False, True, "ISO_IR 100")
    return ds


def study() -> list[Dataset]:
    """Four instances of one patient: series 1 and 2, two instances each."""
    return [instance(series, number) for series in (1, 2) for number in (1, 2)]


def with_patient(ds: Dataset, patient_id: str, name: str) -> Dataset:
    ds.PatientID = patient_id
    ds.PatientName = name
    return ds


def ultrasound(burned_in: str | None) -> Dataset:
    """An ultrasound instance with BurnedInAnnotation set to `burned_in` (None: absent)."""
    ds = instance()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.Modality = "US"
    if burned_in is None:
        del ds.BurnedInAnnotation
    else:
        ds.BurnedInAnnotation = burned_in
    return ds


def to_bytes(ds: Dataset, implicit: bool = False) -> bytes:
    buffer = io.BytesIO()
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def all_strings(ds: Dataset) -> list[str]:
    """Every string value at every depth (including file meta) of a dataset, for leak checks."""
    out: list[str] = []
    meta = getattr(ds, "file_meta", None)
    elements = list(ds.iterall()) + (list(meta.iterall()) if meta is not None else [])
    for elem in elements:
        if elem.VR == "SQ":
            continue
        value = elem.value
        if isinstance(value, bytes):
            out.append(value.decode("latin-1"))
        elif isinstance(value, list | pydicom.multival.MultiValue):
            out.extend(str(v) for v in value)
        elif value is not None:
            out.append(str(value))
    return out
