"""Burned-in text: per-word recall and precision of pixel redaction, ours against Presidio, same run.

    python bench/burned_in.py [--sets real,packages,synthetic] [--no-presidio] [--repeat N] [--png DIR]
        [--peer-python .venv-bench/bin/python]

Files (each a single frame):
* real: the presidio CR and CT localizer of ../shared/data/dicom_samples/presidio with their
  ground_truth.json word boxes (shifted by -25 px: the file's boxes are in Presidio's padded image);
* packages: the deid-data and pydicom-data images with burned-in text (ultrasound screens), their
  PHI word boxes labelled here by hand on the rendered frame (LABELS);
* synthetic: CT/DX/MG/CR-like 16-bit frames and an 8-bit report screen made here, names, IDs,
  dates, times and institutions drawn in Hershey and TrueType fonts of several sizes, light and dark,
  in the corners, flush with the edge and over anatomy, with some harmless text beside them.

Tools: ours is `deidentify_instance` (the whole per-instance recipe: read, profile, redaction,
encode, leak check) with --redact_text detect and with ocr; the peer is presidio-image-redactor's
`DicomImageRedactorEngine.redact_and_return_bbox(ds, fill="contrast", use_metadata=True)` run by
bench/presidio_peer.py in .venv-bench (a blank spaCy pipeline: en_core_web_lg is not installable
here, so NER-based PERSON detection is off; see that file).

Scores, on an 8-bit view of each frame (the original's min..max; palette colour through its LUT):
* recall: PHI words whose box is filled: >= 95 % of the pixels of the word's ink box (the labelled box
  tightened to the pixels that differ from the box's median by > 40 levels) within 16 levels of one
  value in the output. A dead-lettered or quarantined instance publishes nothing; its words are
  scored on the payload anyway when there is one, and the outcome column says what happened.
* precision: changed pixels (by > 16 levels) that lie inside any text box (the PHI words padded by a
  third of their height, plus generous boxes around all visible text: blocks labelled by hand on the
  real and package files, each line's box padded by a third of its height on the synthetic ones) /
  all changed pixels. A black box on a black ground changes only the ink, Presidio's "contrast" box
  changes all its pixels: changed pixels measure what the redaction destroyed.
* time per frame: wall time of one call after a warm-up, the fastest of --repeat calls (ours: the
  whole recipe; Presidio: the redaction of a loaded dataset, no file reading or writing).

Targets in the issue: recall 100 %, precision >= 90 %, no real sample quarantined for a descriptor.
Not a test: the numbers depend on the machine and on tesseract's version.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_color_lut
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PRESIDIO_DIR = ROOT.parent / "shared" / "data" / "dicom_samples" / "presidio"
GT_OFFSET = 25
INK_LEVELS = 40
UNIFORM_LEVELS = 16
CHANGE_LEVELS = 16
FILLED_FRACTION = 0.95

# (label, x, y, width, height)
WordBox = tuple[str, int, int, int, int]
Rect = tuple[int, int, int, int]


@dataclass
class Case:
    """One file to score: its bytes, PHI word boxes and boxes around all other visible text."""

    set_name: str
    name: str
    data: bytes = field(repr=False)
    phi: list[WordBox]
    text: list[Rect]


# --- real files: presidio's ground truth ------------------------------------------------------------

# Other visible text (not PHI in presidio's ground truth), labelled on the rendered frames.
PRESIDIO_TEXT = {
    "0_ORIGINAL_compressed.dcm": [  # "DOB:" line, "Semi-Upright" / "Portable" / "L", rotated film marker
        (0, 0, 850, 110),
        (1745, 15, 355, 55),
        (1890, 98, 230, 45),
        (2020, 160, 60, 80),
        (2090, 1655, 48, 70),
    ],
    "2_ORIGINAL.dicom": [(0, 0, 260, 55)],  # the two header lines incl. "DOB:"
}
PRESIDIO_ENTRY = {"0_ORIGINAL_compressed.dcm": "0", "2_ORIGINAL.dicom": "2"}


def real_cases() -> list[Case]:
    truth_path = PRESIDIO_DIR / "ground_truth.json"
    if not truth_path.is_file():
        print(f"skipped real: {PRESIDIO_DIR} not found", file=sys.stderr)
        return []
    truth = json.loads(truth_path.read_text())
    cases = []
    for name, entry in PRESIDIO_ENTRY.items():
        words = truth[f"sample_data/{entry}_ORIGINAL.dcm"]
        phi = [(w["label"], w["left"] - GT_OFFSET, w["top"] - GT_OFFSET, w["width"], w["height"]) for w in words]
        cases.append(Case("real", name, (PRESIDIO_DIR / name).read_bytes(), phi, PRESIDIO_TEXT[name]))
    return cases


# --- package files: labelled here -------------------------------------------------------------------

# PHI words only (names, IDs, dates/times, institution names), tight ink boxes measured on the rendered
# frame 0 and checked by eye; "text" are generous boxes around every other visible text (DOB:, sex,
# scan parameters, probe names, logos' lettering, orientation words).
LABELS: dict[str, dict] = {
    "deid-data ultrasounds/GREYSCALE_IMAGE.dcm": {
        "phi": [
            ("ZZZ", 8, 5, 28, 15),
            ("TEST", 39, 5, 39, 15),
            ("PATIENTFI...", 82, 5, 91, 15),
            ("00079241539", 183, 5, 99, 15),
            ("08/29/1951", 432, 5, 84, 15),
            ("CCHS", 556, 5, 42, 15),
            ("CLEVELAN...", 602, 5, 83, 15),
            ("03/02/2017", 823, 5, 84, 15),
            ("05:24:57PM", 923, 5, 86, 15),
        ],
        "text": [
            (0, 0, 1024, 24),
            (8, 22, 135, 245),
            (822, 22, 170, 24),
            (958, 76, 30, 18),
            (98, 90, 30, 30),
            (898, 316, 30, 22),
            (850, 694, 80, 24),
        ],
    },
    "deid-data ultrasounds/RGB_IMAGE.dcm": {
        "phi": [
            ("ZZZDOWNTIME,MARY", 3, 7, 225, 20),
            ("8:48:26", 504, 7, 72, 17),
            ("4/14/2020", 619, 7, 97, 17),
            ("120907058", 775, 7, 107, 17),
            ("00047431395", 4, 35, 132, 17),
            ("CCHS", 504, 35, 59, 17),
            ("CLEVELAND", 569, 35, 126, 17),
            ("CLINIC", 700, 35, 69, 17),
        ],
        "text": [(0, 0, 900, 58), (915, 60, 109, 295), (512, 738, 210, 30), (795, 740, 55, 22)],
    },
    "pydicom-data US1_UNCR.dcm": {
        "phi": [
            ("BAPTIST", 19, 25, 70, 14),
            ("MED", 99, 25, 30, 14),
            ("CTR", 139, 25, 30, 14),
            ("+2:09:04", 279, 41, 80, 14),
        ],
        "text": [
            (15, 20, 160, 90),
            (270, 20, 100, 40),
            (490, 20, 140, 90),
            (5, 132, 40, 22),
            (5, 212, 40, 22),
            (590, 132, 40, 22),
            (590, 212, 40, 22),
            (245, 358, 120, 20),
            (395, 452, 230, 22),
        ],
    },
    "pydicom-data OBXXXX1A.dcm": {
        # "OB" is the PatientName, 11-05-25-142825 the PatientID, "Philips Healthcare" the InstitutionName.
        "phi": [
            ("OB", 94, 9, 26, 14),
            ("11-05-25-142825", 96, 36, 168, 14),
            ("Philips", 327, 35, 67, 18),
            ("Healthcare", 402, 35, 108, 15),
            ("5/25/2011", 669, 8, 104, 17),
            ("2:56:22", 669, 36, 75, 14),
        ],
        "text": [(0, 0, 800, 60), (0, 62, 80, 200), (122, 82, 185, 24), (135, 470, 60, 50)],
    },
    "pydicom-data gdcm-US-ALOKA-16.dcm": {
        "phi": [
            ("*WESTWAY", 80, 0, 80, 12),
            ("MEDICAL*", 170, 0, 79, 12),
            ("24-MAY-02", 550, 0, 89, 12),
            ("11:24:20", 561, 12, 78, 12),
        ],
        "text": [
            (0, 0, 640, 26),
            (245, 18, 90, 44),
            (555, 18, 85, 44),
            (75, 55, 30, 20),
            (35, 426, 600, 20),
            (15, 450, 80, 20),
            (545, 450, 90, 20),
        ],
    },
}


def _package_path(name: str) -> Path | None:
    source, relative = name.split(" ", 1)
    if source == "deid-data":
        spec = importlib.util.find_spec("deid_data")
        if spec is None or spec.origin is None:
            return None
        path = Path(spec.origin).parent / "data" / relative
        return path if path.is_file() else None
    try:
        from pydicom.data import get_testdata_file

        found = get_testdata_file(relative, download=False)
    except Exception:  # noqa: BLE001 - pydicom-data missing: the file is skipped
        return None
    return Path(found) if found else None


def package_cases() -> list[Case]:
    cases = []
    for name, label in LABELS.items():
        path = _package_path(name)
        if path is None:
            print(f"skipped {name}: not installed (pip install deid-data pydicom-data)", file=sys.stderr)
            continue
        cases.append(
            Case("packages", name.split(" ", 1)[1].split("/")[-1], path.read_bytes(), label["phi"], label["text"])
        )
    return cases


# --- synthetic set ----------------------------------------------------------------------------------

_HERSHEY = {
    "simplex": cv2.FONT_HERSHEY_SIMPLEX,
    "duplex": cv2.FONT_HERSHEY_DUPLEX,
    "plain": cv2.FONT_HERSHEY_PLAIN,
    "complex": cv2.FONT_HERSHEY_COMPLEX,
    "triplex": cv2.FONT_HERSHEY_TRIPLEX,
}
_TTF = {
    "sans": "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "serif": "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
    "mono": "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
}


@dataclass(frozen=True)
class Line:
    """A line of words drawn in one font; a word starting with '*' is PHI (the '*' is not drawn).

    font: a Hershey name with `size` the scale and `thick` the stroke, or "ttf:<sans|serif|mono|default>"
    with `size` in pixels (DejaVu when installed, else Pillow's bundled font). where: tl, tr, bl, br,
    with '-flush' for text touching the edge, or (x, y) for the top-left of the line.
    """

    words: tuple[str, ...]
    where: str | tuple[int, int]
    font: str
    size: float
    thick: int = 1
    light: bool = True


def _word_mask(text: str, font: str, size: float, thick: int) -> np.ndarray:
    """The word's ink (uint8 0/255) in a tight canvas with the font's own baseline room."""
    if font.startswith("ttf:"):
        path = _TTF.get(font[4:])
        face = ImageFont.truetype(path, int(size)) if path and Path(path).is_file() else ImageFont.load_default(size)
        left, top, right, bottom = face.getbbox(text)
        canvas = Image.new("L", (right - left + 2, int(size * 1.4) + 2), 0)
        ImageDraw.Draw(canvas).text((1 - left, 1), text, fill=255, font=face)
        return np.asarray(canvas)
    face = _HERSHEY[font]
    (width, height), base = cv2.getTextSize(text, face, size, thick)
    canvas = np.zeros((height + base + 2 * thick + 2, width + 2 * thick + 2), np.uint8)
    cv2.putText(canvas, text, (thick + 1, height + thick + 1), face, size, 255, thick, cv2.LINE_AA)
    return canvas


def _draw_lines(rows: int, cols: int, lines: list[Line]) -> tuple[list, list]:
    """Masks placed in the frame: [(mask_full, light)], and [(label, phi, x, y, w, h)] per word."""
    placed, words, lines_seen = [], [], []
    for line in lines:
        masks = [_word_mask(w.lstrip("*"), line.font, line.size, line.thick) for w in line.words]
        space = max(4, int(masks[0].shape[0] * 0.35))
        width = sum(m.shape[1] for m in masks) + space * (len(masks) - 1)
        height = max(m.shape[0] for m in masks)
        if isinstance(line.where, tuple):
            x0, y0 = line.where
        else:
            corner, _, flush = line.where.partition("-")
            margin = 0 if flush else 8
            x0 = margin if corner[1] == "l" else cols - width - margin
            y0 = margin if corner[0] == "t" else rows - height - margin
            if flush:  # ink, not the glyph cell, touches the edges
                rows_inked = np.any([np.pad(m.any(axis=1), (0, height - m.shape[0])) for m in masks], axis=0)
                inked_rows = np.nonzero(rows_inked)[0]
                first, last = masks[0].any(axis=0), masks[-1].any(axis=0)
                x0 -= int(np.argmax(first)) if corner[1] == "l" else -int(np.argmax(last[::-1]))
                y0 -= int(inked_rows.min()) if corner[0] == "t" else -(height - 1 - int(inked_rows.max()))
        x = x0
        for word, mask in zip(line.words, masks, strict=True):
            full = np.zeros((rows, cols), np.uint8)
            h, w = mask.shape
            ys, xs = slice(max(y0, 0), min(y0 + h, rows)), slice(max(x, 0), min(x + w, cols))
            full[ys, xs] = mask[ys.start - y0 : ys.stop - y0, xs.start - x : xs.stop - x]
            iy, ix = np.nonzero(full)
            if iy.size:
                words.append(
                    (
                        word.lstrip("*"),
                        word.startswith("*"),
                        int(ix.min()),
                        int(iy.min()),
                        int(ix.max() - ix.min() + 1),
                        int(iy.max() - iy.min() + 1),
                        len(lines_seen),
                    )
                )
            placed.append((full, line.light))
            x += w + space
        lines_seen.append(line)
    return placed, words


def _anatomy(rows: int, cols: int, rng: np.random.Generator, kind: str) -> np.ndarray:
    """A display-space ground in 0..1: body ellipse, breast wedge, noisy gradient or paper."""
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    texture = cv2.GaussianBlur(rng.normal(0, 1, (rows, cols)).astype(np.float32), (0, 0), 5)
    texture /= max(float(np.abs(texture).max()), 1e-6)
    if kind == "body":
        inside = ((xx - cols / 2) / (cols * 0.40)) ** 2 + ((yy - rows / 2) / (rows * 0.44)) ** 2 < 1
        image = np.where(inside, 0.5 + 0.25 * texture, 0.03)
    elif kind == "breast":
        inside = ((xx / (cols * 0.75)) ** 2 + ((yy - rows / 2) / (rows * 0.48)) ** 2) < 1
        image = np.where(inside, 0.72 + 0.15 * texture - 0.25 * (xx / cols), 0.02)
    elif kind == "gradient":
        image = 0.15 + 0.35 * (xx / cols) + 0.12 * texture
    else:  # paper
        image = np.full((rows, cols), 0.93, np.float32)
    image = image + rng.normal(0, 0.012, (rows, cols))
    return np.clip(image, 0, 1).astype(np.float32)


@dataclass(frozen=True)
class SyntheticSpec:
    name: str
    modality: str
    sop_class: str
    rows: int
    cols: int
    bits: int
    signed: bool
    photometric: str
    ground: str
    header: dict[str, str]
    lines: tuple[Line, ...]


SYNTHETIC = (
    SyntheticSpec(
        "CT axial, int16",
        "CT",
        "1.2.840.10008.5.1.4.1.1.2",
        512,
        512,
        16,
        True,
        "MONOCHROME2",
        "body",
        {
            "PatientName": "QUINTERO^MARISOL",
            "PatientID": "8841207733",
            "StudyDate": "20120309",
            "StudyTime": "104226",
            "InstitutionName": "ST ELSEWHERE HOSP",
        },
        (
            Line(("*QUINTERO^MARISOL",), "tl", "simplex", 0.6, 1),
            Line(("ID", "*8841207733"), (8, 30), "simplex", 0.5, 1),
            Line(("*09-MAR-2012", "*10:42:26"), "tr", "ttf:default", 13),
            Line(("*ST", "*ELSEWHERE", "*HOSP"), "bl", "plain", 1.0, 1),
            Line(("W:400", "L:40"), "br", "plain", 1.0, 1),
            Line(("120", "kV", "250", "mAs"), (330, 466), "plain", 0.9, 1),
        ),
    ),
    SyntheticSpec(
        "DX chest, 12-bit MONOCHROME1",
        "DX",
        "1.2.840.10008.5.1.4.1.1.1.1",
        1024,
        840,
        12,
        False,
        "MONOCHROME1",
        "body",
        {
            "PatientName": "PALOMINO^ESTEBAN",
            "PatientID": "PX7730912",
            "PatientBirthDate": "19510309",
            "AccessionNumber": "A20120309X7",
            "StudyDate": "20120309",
        },
        (
            Line(("*PALOMINO,", "*ESTEBAN"), "tl-flush", "ttf:sans", 30),
            Line(("DOB:", "*3/9/1951"), (0, 40), "ttf:sans", 24),
            Line(("ACC", "*A20120309X7"), (0, 74), "ttf:mono", 18),
            Line(("*2012-03-09",), "br-flush", "duplex", 0.8, 2),
            Line(("PORTABLE",), "tr", "triplex", 1.0, 2),
            Line(("AP",), (790, 50), "triplex", 1.0, 2),
            Line(("L",), (760, 140), "simplex", 2.5, 5),
        ),
    ),
    SyntheticSpec(
        "MG, 14-bit, dark text over tissue",
        "MG",
        "1.2.840.10008.5.1.4.1.1.1.2",
        1400,
        1100,
        14,
        False,
        "MONOCHROME2",
        "breast",
        {
            "PatientName": "NAKAMURA^YUKI",
            "PatientID": "5520194",
            "StudyDate": "20191203",
            "InstitutionName": "MERCY WEST CLINIC",
        },
        (
            Line(("*NAKAMURA^YUKI",), (60, 520), "ttf:serif", 26, light=False),
            Line(("*12/03/2019",), "tr", "ttf:mono", 18),
            Line(("ID", "*5520194"), "br", "plain", 0.8, 1),
            Line(("*MERCY", "*WEST", "*CLINIC"), "bl", "complex", 0.7, 1),
            Line(("L", "CC"), (900, 60), "duplex", 1.6, 3),
            Line(("SCREENING",), (60, 760), "ttf:sans", 20, light=False),
        ),
    ),
    SyntheticSpec(
        "CR, 16-bit, noisy gradient",
        "CR",
        "1.2.840.10008.5.1.4.1.1.1",
        900,
        700,
        16,
        False,
        "MONOCHROME2",
        "gradient",
        {"PatientName": "OKONKWO^CHIDI", "PatientID": "00047431395", "StudyDate": "20120109", "StudyTime": "084826"},
        (
            Line(("*OKONKWO", "*CHIDI"), "tl", "simplex", 1.1, 2),
            Line(("*00047431395",), (8, 44), "ttf:default", 20),
            Line(("*01.09.2012", "*08:48"), "tr", "complex", 0.6, 1),
            Line(("SUPINE",), "bl", "duplex", 0.7, 1),
            Line(("R",), (640, 420), "ttf:sans", 48),
        ),
    ),
    SyntheticSpec(
        "dose report screen, 8-bit, dark on light",
        "CT",
        "1.2.840.10008.5.1.4.1.1.7",
        600,
        800,
        8,
        False,
        "MONOCHROME2",
        "paper",
        {
            "PatientName": "WOJCIK^HALINA",
            "PatientID": "PX-7730912",
            "StudyDate": "20191203",
            "InstitutionName": "LAKESIDE GENERAL",
        },
        (
            Line(("Dose", "Report"), (40, 30), "ttf:sans", 26, light=False),
            Line(("Patient:", "*WOJCIK,", "*HALINA"), (40, 90), "ttf:default", 18, light=False),
            Line(("Patient", "ID:", "*PX-7730912"), (40, 120), "ttf:default", 18, light=False),
            Line(("Exam", "date:", "*2019-12-03"), (40, 150), "ttf:default", 18, light=False),
            Line(("Hospital:", "*LAKESIDE", "*GENERAL"), (40, 180), "ttf:default", 18, light=False),
            Line(("CTDIvol", "12.3", "mGy", "DLP", "456", "mGy.cm"), (40, 240), "ttf:mono", 16, light=False),
        ),
    ),
)


def _synthetic_dataset(spec: SyntheticSpec, pixels: np.ndarray) -> bytes:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = spec.sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = spec.modality
    ds.Manufacturer = "BENCH"
    ds.PatientSex = "O"
    ds.StudyDate = ds.SeriesDate = spec.header.get("StudyDate", "20200101")
    ds.StudyTime = spec.header.get("StudyTime", "120000")
    for keyword, value in spec.header.items():
        setattr(ds, keyword, value)
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = spec.photometric
    ds.Rows, ds.Columns = spec.rows, spec.cols
    ds.BitsAllocated = 8 if spec.bits == 8 else 16
    ds.BitsStored = spec.bits
    ds.HighBit = spec.bits - 1
    ds.PixelRepresentation = int(spec.signed)
    if spec.bits > 8:  # a full-range window, as a modality would write one
        low, high = int(pixels.min()), int(pixels.max())
        ds.WindowCenter, ds.WindowWidth = (low + high) // 2, max(high - low, 1)
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
    ds.PixelData = pixels.tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = spec.sop_class
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def synthetic_cases() -> list[Case]:
    cases = []
    for index, spec in enumerate(SYNTHETIC):
        rng = np.random.default_rng(1000 + index)
        ground = _anatomy(spec.rows, spec.cols, rng, spec.ground)
        placed, words = _draw_lines(spec.rows, spec.cols, list(spec.lines))
        image = ground
        for mask, light in placed:
            alpha = mask.astype(np.float32) / 255.0
            image = image * (1 - alpha) + (0.98 if light else 0.02) * alpha
        low, high = (-1024, 3071) if spec.signed else (0, (1 << spec.bits) - 1)
        if spec.photometric == "MONOCHROME1":
            image = 1.0 - image
        stored = np.rint(low + image * (high - low))
        dtype = np.uint8 if spec.bits == 8 else (np.int16 if spec.signed else np.uint16)
        data = _synthetic_dataset(spec, stored.astype(dtype))
        phi = [(label, x, y, w, h) for label, is_phi, x, y, w, h, _ in words if is_phi]
        # The generous box around visible text: each line's box (word gaps included), padded by a third
        # of its height, as the real files' non-PHI text is labelled.
        text = []
        for number in sorted({entry[6] for entry in words}):
            boxes = [entry[2:6] for entry in words if entry[6] == number]
            x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
            x1, y1 = max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes)
            pad = max(3, (y1 - y0) // 3)
            text.append((max(x0 - pad, 0), max(y0 - pad, 0), x1 - x0 + 2 * pad, y1 - y0 + 2 * pad))
        cases.append(Case("synthetic", spec.name, data, phi, text))
    return cases


# --- scoring ----------------------------------------------------------------------------------------


def display(pixels: np.ndarray, ds: Dataset, low: float | None = None, high: float | None = None):
    """H x W x C float32 in 0..255 for scoring, and the (low, high) scale used (from the original)."""
    photometric = str(ds.PhotometricInterpretation)
    if photometric == "PALETTE COLOR" and pixels.ndim == 2:
        rgb = apply_color_lut(pixels, ds).astype(np.float32)
        return rgb / (257.0 if rgb.max() > 255 else 1.0), (0.0, 255.0)
    array = pixels.astype(np.float32)
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[2] == 3 and array.max() <= 255 and low is None:
        return array, (0.0, 255.0)
    if low is None or high is None:
        low, high = float(array.min()), float(array.max())
    scaled = (array - low) * (255.0 / max(high - low, 1e-6))
    return np.clip(scaled, 0, 255), (low, high)


def _frame0(pixels: np.ndarray, ds: Dataset) -> np.ndarray:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return pixels[0] if frames > 1 else pixels


def _ink_box(original: np.ndarray, box: Rect) -> Rect:
    x, y, w, h = box
    region = original[y : y + h, x : x + w].mean(axis=2)
    if region.size == 0:
        return box
    ys, xs = np.nonzero(np.abs(region - np.median(region)) > INK_LEVELS)
    if ys.size == 0:
        return box
    return (x + int(xs.min()), y + int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))


def _filled(output: np.ndarray, box: Rect) -> bool:
    x, y, w, h = box
    region = output[y : y + h, x : x + w]
    if region.size == 0:
        return False
    median = np.median(region.reshape(-1, region.shape[2]), axis=0)
    uniform = np.abs(region - median).max(axis=2) <= UNIFORM_LEVELS
    return float(uniform.mean()) >= FILLED_FRACTION


@dataclass
class Score:
    words: int
    redacted: int
    missed: list[str]
    changed: int
    changed_in_text: int
    frame_pixels: int

    @property
    def recall(self) -> float | None:
        return self.redacted / self.words if self.words else None

    @property
    def precision(self) -> float | None:
        return self.changed_in_text / self.changed if self.changed else None


def score(case: Case, original_ds: Dataset, original: np.ndarray, output: np.ndarray) -> Score:
    before, scale = display(_frame0(original, original_ds), original_ds)
    after, _ = display(_frame0(output, original_ds), original_ds, *scale)
    if after.shape != before.shape:
        raise ValueError(f"output shape {after.shape} differs from the input's {before.shape}")
    rows, cols = before.shape[:2]
    missed = []
    for label, x, y, w, h in case.phi:
        if not _filled(after, _ink_box(before, (x, y, w, h))):
            missed.append(label)
    region = np.zeros((rows, cols), bool)
    for _, x, y, w, h in case.phi:
        pad = max(3, h // 3)
        region[max(y - pad, 0) : y + h + pad, max(x - pad, 0) : x + w + pad] = True
    for x, y, w, h in case.text:
        region[max(y - 3, 0) : y + h + 3, max(x - 3, 0) : x + w + 3] = True
    changed = np.abs(after - before).max(axis=2) > CHANGE_LEVELS
    return Score(
        len(case.phi),
        len(case.phi) - len(missed),
        missed,
        int(changed.sum()),
        int((changed & region).sum()),
        rows * cols,
    )


# --- ours -------------------------------------------------------------------------------------------


@dataclass
class Run:
    score: Score | None = None
    seconds_per_frame: float | None = None
    outcome: str = ""
    pixels: np.ndarray | None = field(default=None, repr=False)


def run_ours(case: Case, mode: str, repeat: int = 1) -> Run:
    from deid.dicom.instance import InstanceSource, deidentify_instance
    from deid.errors import DeidError
    from deid.keys import DeidKey
    from deid.settings import ProfileSettings, RedactionSettings, RunSettings

    key = DeidKey.generate()
    settings = RunSettings(
        output="unused",
        key_token=key.to_token(),
        profile=ProfileSettings(pixel_redaction=True),
        redaction=RedactionSettings(text=mode),
    )
    source = InstanceSource(hashlib.sha256(case.data).hexdigest())
    seconds = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        try:
            result = deidentify_instance(case.data, settings, key, source)
        except DeidError as exc:
            return Run(outcome=f"dead letter ({type(exc).__name__}: {str(exc)[:90]})")
        seconds = min(seconds, time.perf_counter() - start)
    out = pydicom.dcmread(io.BytesIO(result.payload))
    frames = int(out.get("NumberOfFrames", 1) or 1)
    outcome = f"quarantined ({result.leak_summary()[:90]})" if result.leaked else "published"
    echoes = result.actions.get("descriptor_echo", 0)
    if echoes:
        outcome += f", {echoes} descriptor echo"
    return Run(seconds_per_frame=seconds / frames, outcome=outcome, pixels=out.pixel_array)


# --- the peer ---------------------------------------------------------------------------------------


def run_presidio(cases: list[Case], workdir: Path, python: Path, repeat: int) -> tuple[dict[str, dict], dict]:
    files = []
    for index, case in enumerate(cases):
        path = workdir / f"in_{index}.dcm"
        path.write_bytes(case.data)
        files.append(
            {
                "name": case.name,
                "path": str(path),
                "out": str(workdir / f"presidio_{index}.npy"),
                "pixels": len(case.data),
            }
        )
    job = workdir / "presidio_job.json"
    result = workdir / "presidio_result.json"
    job.write_text(json.dumps({"files": files, "result": str(result), "repeat": repeat}))
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [str(python), str(ROOT / "bench" / "presidio_peer.py"), str(job)], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0 or not result.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError("the Presidio peer failed: " + " | ".join(tail))
    data = json.loads(result.read_text())
    for item in files:
        entry = data["results"].get(item["name"], {})
        if "error" not in entry:
            entry["pixels"] = np.load(item["out"])
    return data["results"], {"versions": data["versions"], "recognizers": data["recognizers"]}


# --- report -----------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f}%"


def _cell(run: Run | None) -> str:
    if run is None:
        return "not run"
    if run.score is None:
        return "no output"
    s = run.score
    seconds = "" if run.seconds_per_frame is None else f" · {run.seconds_per_frame:.2f} s"
    return f"{s.redacted}/{s.words} · {_pct(s.precision)}{seconds}"


def _totals(runs: list[Run]) -> str:
    scored = [r.score for r in runs if r is not None and r.score is not None]
    if not scored:
        return "—"
    words = sum(s.words for s in scored)
    redacted = sum(s.redacted for s in scored)
    changed = sum(s.changed for s in scored)
    inside = sum(s.changed_in_text for s in scored)
    times = [r.seconds_per_frame for r in runs if r is not None and r.seconds_per_frame is not None]
    mean = f" · {sum(times) / len(times):.2f} s" if times else ""
    unscored = sum(1 for r in runs if r is None or r.score is None)
    extra = f" ({unscored} without output)" if unscored else ""
    recall = _pct(redacted / words if words else None)
    precision = _pct(inside / changed if changed else None)
    return f"**{redacted}/{words} = {recall}** · {precision}{mean}{extra}"


def write_png(directory: Path, case: Case, tool: str, ds: Dataset, original: np.ndarray, pixels: np.ndarray) -> None:
    before, scale = display(_frame0(original, ds), ds)
    after, _ = display(_frame0(pixels, ds), ds, *scale)
    image = np.concatenate([before, after], axis=1).astype(np.uint8)
    if str(ds.PhotometricInterpretation) == "MONOCHROME1":
        image = 255 - image
    image = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
    canvas = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(canvas)
    for _, x, y, w, h in case.phi:
        draw.rectangle([x, y, x + w - 1, y + h - 1], outline=(255, 0, 0))
    for x, y, w, h in case.text:
        draw.rectangle([x, y, x + w - 1, y + h - 1], outline=(0, 200, 0))
    safe = "".join(c if c.isalnum() else "_" for c in f"{case.set_name}_{case.name}_{tool}")
    canvas.save(directory / f"{safe}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="real,packages,synthetic")
    parser.add_argument("--no-presidio", action="store_true", help="skip the peer")
    parser.add_argument("--peer-python", default=str(ROOT / ".venv-bench" / "bin" / "python"))
    parser.add_argument("--repeat", type=int, default=1, help="calls per file and tool; the fastest is reported")
    parser.add_argument("--png", help="write before|after PNGs (PHI boxes red, other text green) here")
    args = parser.parse_args()
    sets = set(args.sets.split(","))

    cases: list[Case] = []
    if "real" in sets:
        cases += real_cases()
    if "packages" in sets:
        cases += package_cases()
    if "synthetic" in sets:
        cases += synthetic_cases()
    if not cases:
        raise SystemExit("no input files")
    png_dir = Path(args.png) if args.png else None
    if png_dir:
        png_dir.mkdir(parents=True, exist_ok=True)

    originals = {}
    for case in cases:
        ds = pydicom.dcmread(io.BytesIO(case.data))
        originals[case.name] = (ds, ds.pixel_array)

    # Warm-up (imports, first tesseract start), not timed: the smallest file in each mode.
    smallest = min(cases, key=lambda c: len(c.data))
    for mode in ("detect", "ocr"):
        run_ours(smallest, mode)

    ours: dict[str, dict[str, Run]] = {"detect": {}, "ocr": {}}
    for case in cases:
        ds, original = originals[case.name]
        for mode in ("detect", "ocr"):
            run = run_ours(case, mode, args.repeat)
            if run.pixels is not None:
                run.score = score(case, ds, original, run.pixels)
                if png_dir:
                    write_png(png_dir, case, f"ours_{mode}", ds, original, run.pixels)
            ours[mode][case.name] = run

    peer: dict[str, Run] = {}
    peer_info: dict = {}
    peer_note = ""
    if not args.no_presidio:
        python = Path(args.peer_python)
        if not python.is_file():
            peer_note = (
                f"Presidio not run: {python} missing "
                "(python3 -m venv .venv-bench; .venv-bench/bin/pip install presidio-image-redactor pydicom)"
            )
        else:
            with tempfile.TemporaryDirectory(prefix="burned_in_") as tmp:
                try:
                    results, peer_info = run_presidio(cases, Path(tmp), python, args.repeat)
                except RuntimeError as exc:
                    peer_note = str(exc)
                    results = {}
                for case in cases:
                    entry = results.get(case.name)
                    if entry is None:
                        continue
                    if "error" in entry:
                        peer[case.name] = Run(outcome=f"error ({entry['error'][:90]})")
                        continue
                    ds, original = originals[case.name]
                    run = Run(seconds_per_frame=entry["seconds"] / entry["frames"], outcome="redacted")
                    try:
                        run.score = score(case, ds, original, entry["pixels"])
                    except ValueError as exc:
                        run.outcome = f"not scored ({exc})"
                    if png_dir and run.score is not None:
                        write_png(png_dir, case, "presidio", ds, original, entry["pixels"])
                    peer[case.name] = run

    tesseract = subprocess.run(["tesseract", "--version"], capture_output=True, text=True)
    tesseract_version = (tesseract.stdout or tesseract.stderr).splitlines()[0] if tesseract.returncode == 0 else "?"
    print("Cells: PHI words redacted / PHI words · precision (changed pixels inside text boxes) · seconds per frame")
    print()
    print("| set | file | ours `detect` | ours `ocr` | Presidio | ours: outcome (detect / ocr) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for case in cases:
        det, ocr = ours["detect"][case.name], ours["ocr"][case.name]
        outcome = det.outcome if det.outcome == ocr.outcome else f"{det.outcome} / {ocr.outcome}"
        peer_run = peer.get(case.name)
        peer_cell = _cell(peer_run) if peer_run is None or peer_run.score is not None else peer_run.outcome
        print(f"| {case.set_name} | {case.name} | {_cell(det)} | {_cell(ocr)} | {peer_cell} | {outcome} |")
    for set_name in ("real", "packages", "synthetic", None):
        chosen = [c for c in cases if set_name is None or c.set_name == set_name]
        if not chosen:
            continue
        label = "**all**" if set_name is None else f"{set_name}, total"
        cells = [_totals([ours[m][c.name] for c in chosen]) for m in ("detect", "ocr")] + [
            _totals([peer.get(c.name) for c in chosen]) if peer else "not run"
        ]
        print(f"| {label} | {len(chosen)} files | {cells[0]} | {cells[1]} | {cells[2]} | |")
    print()
    print("Missed PHI words (box not filled):")
    for tool, runs in (("ours detect", ours["detect"]), ("ours ocr", ours["ocr"]), ("Presidio", peer)):
        missed = [f"{name}: {', '.join(r.score.missed)}" for name, r in runs.items() if r.score and r.score.missed]
        failed = [f"{name}: {r.outcome}" for name, r in runs.items() if r.score is None]
        print(
            f"- {tool}: "
            + ("; ".join(missed) if missed else "none")
            + (f" (no output: {'; '.join(failed)})" if failed else "")
        )
    print()
    print(f"tesseract: {tesseract_version}")
    if peer_info:
        versions = ", ".join(f"{k} {v}" for k, v in peer_info["versions"].items())
        print(
            f"Presidio: {versions}; spaCy pipeline spacy.blank('en') (en_core_web_lg is not installable here): "
            "pattern recognizers and the DICOM metadata deny-list (use_metadata=True) only, no NER PERSON/ORG/LOC; "
            "fill='contrast'"
        )
    if peer_note:
        print(peer_note)
    print(
        "Ours: deidentify_instance (read, profile, redaction, encode, leak check) per instance; "
        "Presidio: redact_and_return_bbox on a loaded dataset."
    )


if __name__ == "__main__":
    main()
