"""Leak check of a slide's outputs: harvest the input's identifying values, search every output.

Runs in the write stage, after the outputs are complete in local staging and before they are
published: `harvest_slide` re-reads the input's tags and headers (no pixels) so the values never
travel between stages; `scan_outputs` searches each staged file (every text tag of every IFD, every
associated image, XMP, DICOM elements at every depth, the raw bytes, the output's relative path).

Values that the writers themselves put into every output (the fixed words of the Aperio
description and of the DICOM header) are not expected gone: an input named after its scanner,
'Aperio-0001.svs', would otherwise quarantine every output of that scanner.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import BinaryIO

import pydicom

from deid.settings import ProfileSettings
from deid.verify.harvest import (
    MAX_SLIDEDAT_BYTES,
    harvest_dicom,
    harvest_path,
    harvest_slidedat,
    harvest_tiff_metadata,
    is_slidedat,
)
from deid.verify.scan import scan_output, scan_text
from deid.verify.values import LeakHit, PhiValue
from deid.wsi.metadata import APERIO_LIBRARY

Opener = Callable[[str], AbstractContextManager[BinaryIO]]
# DICOM-WSI units: headers of at most this many instances are harvested (they repeat each other).
MAX_DICOM_HEADERS = 32
# Fixed text the writers put into every output, whatever the input.
WRITER_VOCABULARY = " | ".join(
    (
        APERIO_LIBRARY,
        "JPEG/RGB AppMag MPP label macro thumbnail",
        "deid-pipeline WSI de-identification: WSI tiles redacted, metadata allow-list",
        "DERIVED PRIMARY VOLUME RESAMPLED NONE SLIDE_CORNER TILED_FULL ISO_10918_1 YBR_FULL_422 RGB",
        "Microscope slide Row Position Column Position Brightfield illumination Full Spectrum",
    )
)


def _local_open(path: str) -> AbstractContextManager[BinaryIO]:
    return open(path, "rb")


def harvest_slide(
    paths: Iterable[str],
    subtype: str,
    input_root: str | None,
    profile: ProfileSettings | None = None,
    opener: Opener = _local_open,
) -> frozenset[PhiValue]:
    """Identifying values of one slide unit: path components of each file, then its metadata.

    TIFF-based slides: description fields, vendor fields and text tags of every IFD of the first
    file. MIRAX: the identifying keys of the unit's Slidedat.ini (the index file is not TIFF and
    adds nothing). DICOM-WSI: every instance header (no pixels).
    `opener`: opens an input path for binary reading (the Beam layer passes FileSystems.open).
    """
    files = list(paths)
    values: set[PhiValue] = set()
    for path in files:
        values |= harvest_path(path, input_root)
    if not files:
        return frozenset(values)
    for path in files:
        if is_slidedat(path):
            with opener(path) as handle:
                values |= harvest_slidedat(handle.read(MAX_SLIDEDAT_BYTES))
    if subtype == "dicom-wsi":
        for path in files[:MAX_DICOM_HEADERS]:
            with opener(path) as handle:
                ds = pydicom.dcmread(handle, stop_before_pixels=True, force=True)
            values |= harvest_dicom(ds, profile)
    elif subtype == "mrxs":
        pass  # the .mrxs file and the data files hold no text fields; Slidedat.ini was read above
    elif "://" not in files[0] and os.path.exists(files[0]):
        values |= harvest_tiff_metadata(files[0])
    else:
        with opener(files[0]) as handle:
            values |= harvest_tiff_metadata(handle)
    return _not_writer_words(values)


def _not_writer_words(values: Iterable[PhiValue]) -> frozenset[PhiValue]:
    return frozenset(value for value in values if not scan_text(WRITER_VOCABULARY, [value], "", "writer"))


def scan_outputs(local_root: str, relpaths: Iterable[str], values: Iterable[PhiValue]) -> list[LeakHit]:
    """Search each staged output `local_root/relpath` (named by its final relative path)."""
    needles = list(values)
    hits: list[LeakHit] = []
    for relpath in relpaths:
        hits += scan_output(os.path.join(local_root, relpath), relpath, needles)
    return hits
