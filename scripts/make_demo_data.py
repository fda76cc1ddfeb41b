"""Make synthetic sample inputs full of fake PHI for `make demo`.

Writes DIR/input/ (DICOM studies, a slide, and a few bad files) and DIR/demo.key. All names,
IDs and dates are invented.

Deterministic: the same bytes on every call (UIDs derived from fixed seeds, a fixed demo key, seeded
pixels), so running `make demo` again writes the same outputs to the same paths instead of adding
new ones. The slide is a real Aperio SVS as OpenSlide reads it (vendor `aperio`, MPP 0.499, a
thumbnail, a label with printed fake PHI, a macro): each page carries exactly one ImageDescription
(tifffile's own shape description is turned off with `metadata=None`).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, UltrasoundImageStorage, generate_uid

PATIENTS = [
    ("DOE^JANE", "MRN-0042-77", "19610412"),
    ("ROE^RICHARD", "MRN-0099-13", "19750830"),
]
# Not a secret: the demo's fixed key, so that every `make demo` names its outputs the same way.
DEMO_KEY = hashlib.sha256(b"deid-pipeline demo key (not for real data)").digest()


def _uid(*parts: object) -> str:
    """A UID derived from `parts` only (pydicom's root): the same on every run."""
    return generate_uid(entropy_srcs=["deid-pipeline demo", *(str(part) for part in parts)])


def _dataset(sop_class: str, patient: tuple[str, str, str], study_uid: str, series_uid: str, number: int) -> Dataset:
    name, patient_id, birth = patient
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    sop_uid = _uid(study_uid, series_uid, "instance", number)
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = _uid(study_uid, "for")
    ds.PatientName = name
    ds.PatientID = patient_id
    ds.PatientBirthDate = birth
    ds.PatientSex = "F" if "JANE" in name else "M"
    ds.PatientAge = "063Y"
    ds.OtherPatientIDsSequence = Sequence([Dataset()])
    ds.OtherPatientIDsSequence[0].PatientID = patient_id + "-OLD"
    ds.OtherPatientIDsSequence[0].IssuerOfPatientID = "GENERAL HOSPITAL"
    ds.StudyDate = "20240115"
    ds.SeriesDate = "20240115"
    ds.ContentDate = "20240115"
    ds.StudyTime = "101500"
    ds.AccessionNumber = f"ACC{number:05d}"
    ds.StudyID = "S1"
    ds.InstitutionName = "General Hospital"
    ds.ReferringPhysicianName = "HOUSE^GREGORY"
    ds.OperatorsName = "TECH^TINA"
    ds.StationName = "CT-ROOM-3"
    ds.DeviceSerialNumber = "SN-123456"
    ds.StudyDescription = f"CT chest for {name.split('^')[0].title()}"
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    ds.ImageComments = f"Patient {patient_id} tolerated the scan"
    ds.add_new(0x00110010, "LO", "ACME PRIVATE")
    ds.add_new(0x00111001, "LO", f"{name} internal note")
    ref = Dataset()
    ref.ReferencedSOPClassUID = sop_class
    ref.ReferencedSOPInstanceUID = _uid(study_uid, "ref")
    ds.ReferencedImageSequence = Sequence([ref])
    ds.Modality = "US" if sop_class == UltrasoundImageStorage else "CT"
    ds.Rows = 32
    ds.Columns = 32
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    rng = np.random.default_rng(number)
    ds.PixelData = rng.integers(0, 4095, (32, 32), dtype=np.uint16).tobytes()
    if sop_class == UltrasoundImageStorage:
        ds.BurnedInAnnotation = "YES"
    ds.preamble = b"\x00" * 128
    return ds


def _slide(path: Path) -> bool:
    """A small Aperio SVS with PHI in its description and on its label, and a macro."""
    try:
        import tifffile
    except ImportError:
        return False
    aperio = {"metadata": None, "software": False}  # one ImageDescription per page, Aperio's own
    rng = np.random.default_rng(7)
    level0 = (rng.normal(215, 12, (1024, 1024, 3))).clip(0, 255).astype(np.uint8)
    level0[300:700, 300:700] = (180, 90, 160)
    description = (
        "Aperio Image Library v12.0.15\r\n1024x1024 [0,0 1024x1024] (256x256) JPEG/RGB Q=80"
        "|AppMag = 20|MPP = 0.4990|Filename = DOE_JANE_MRN-0042-77|Date = 01/15/24|Time = 10:15:00"
        "|User = tech.tina|ScanScope ID = SS1234"
    )
    label = np.full((200, 400, 3), 255, np.uint8)
    cv2.putText(label, "DOE JANE", (16, 70), cv2.FONT_HERSHEY_SIMPLEX, 1.6, (0, 0, 0), 4)
    cv2.putText(label, "MRN-0042-77", (16, 150), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (0, 0, 0), 3)
    macro = np.full((200, 600, 3), 235, np.uint8)
    macro[:, :200] = label[:, :200]
    macro[40:160, 260:560] = (180, 90, 160)
    with tifffile.TiffWriter(path) as tif:
        tif.write(
            level0, tile=(256, 256), compression="jpeg", description=description, photometric="rgb", **aperio
        )
        tif.write(
            level0[::4, ::4].copy(),
            description="Aperio Image Library v12.0.15\r\n1024x1024 -> 256x256 - |AppMag = 20|MPP = 0.4990",
            photometric="rgb",
            **aperio,
        )
        tif.write(
            level0[::2, ::2].copy(),
            tile=(256, 256),
            compression="jpeg",
            photometric="rgb",
            description="Aperio Image Library v12.0.15\r\n1024x1024 [0,0 1024x1024] -> 512x512 JPEG/RGB Q=80",
            **aperio,
        )
        tif.write(
            label,
            description="Aperio Image Library v12.0.15\r\nlabel 400x200",
            photometric="rgb",
            subfiletype=1,
            **aperio,
        )
        tif.write(
            macro,
            description="Aperio Image Library v12.0.15\r\nmacro 600x200",
            photometric="rgb",
            subfiletype=9,
            **aperio,
        )
    return True


def main(target: str) -> None:
    root = Path(target)
    inputs = root / "input"
    (inputs / "studies").mkdir(parents=True, exist_ok=True)
    (inputs / "slides").mkdir(parents=True, exist_ok=True)
    (inputs / "misc").mkdir(parents=True, exist_ok=True)
    number = 0
    for patient_index, patient in enumerate(PATIENTS):
        study_uid = _uid("study", patient_index)
        for series_index in range(2):
            series_uid = _uid(study_uid, "series", series_index)
            for _ in range(3):
                number += 1
                ds = _dataset(CTImageStorage, patient, study_uid, series_uid, number)
                # Deliberately misleading names: classification is by content, not extension.
                name = f"p{patient_index}_s{series_index}_{number}.{'img' if number % 2 else 'dcm'}"
                pydicom.dcmwrite(inputs / "studies" / name, ds, enforce_file_format=True)
    us = _dataset(UltrasoundImageStorage, PATIENTS[0], _uid("study", "us"), _uid("series", "us"), 99)
    pydicom.dcmwrite(inputs / "studies" / "us_with_burned_in_text.dcm", us, enforce_file_format=True)
    good = (inputs / "studies" / "p0_s0_1.img").read_bytes()
    # Cut inside the last element (the pixel data), so that the file is always damaged: a cut at a
    # fixed fraction could fall on an element boundary and leave a shorter but valid instance.
    (inputs / "misc" / "truncated.dcm").write_bytes(good[: len(good) - 7])
    (inputs / "misc" / "notes.txt").write_text("not an image\n")
    (inputs / "misc" / "empty.dcm").write_bytes(b"")
    _slide(inputs / "slides" / "DOE_JANE_slide.svs")
    key = root / "demo.key"
    key.write_bytes(DEMO_KEY)
    count = sum(1 for p in inputs.rglob("*") if p.is_file())
    print(f"sample data: {count} files under {inputs} (key: {key})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo_data")
