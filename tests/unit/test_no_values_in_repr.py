"""No repr shows bytes or a value read from an input: Beam prints elements at DEBUG.

Objects are built from PHI-bearing inputs (a slide whose name, tags, JPEG segments and ICC profile
hold ZQXWARBLE QUINTESSA; a DICOM instance of patient ZQXWARBLE^QUINTESSA full of identifying values)
and their reprs searched for every value and for any bytes literal.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from deid.classify import InputRef
from deid.dicom.instance import InstanceSource, deidentify_instance
from deid.dicom.profile import deidentify
from deid.dicom.reader import read_for_profile
from deid.keys import DeidKey
from deid.redaction.engine import RedactionConfig
from deid.redaction.ocr import Word
from deid.settings import Limits, ProfileSettings, RunSettings, WsiSettings
from deid.wsi.job import SlideUnit, band_tasks, plan_job, tile_tasks
from deid.wsi.source import SlideReader
from deid.wsi.tiles import level_codecs
from tests.support import dicom_factory
from tests.support import hidden_values as hv

KEY = DeidKey(b"k" * 32)


def assert_clean_repr(obj: object, values: list[str]) -> None:
    text = repr(obj)
    # A bytes literal starts a token ("b'..."); a hex digest may end in 'b' before its closing quote.
    assert not re.search(r"(?<!\w)b['\"]", text), f"bytes in {type(obj).__name__} repr"
    folded = text.lower()
    for value in values:
        assert value.lower() not in folded, f"{type(obj).__name__} repr shows an input value"


def test_slide_objects_show_no_path_icc_tables_or_terms(tmp_path: Path) -> None:
    folder = tmp_path / hv.MARKER_PN
    folder.mkdir()
    path = folder / f"{hv.MARKER}.tiff"
    hv.write_hostile_slide(path, rgb=True)
    data = path.read_bytes()
    ref = InputRef(str(path), len(data), hashlib.sha256(data).hexdigest(), "wsi", "tiff", companions=(str(path),))
    values = [hv.MARKER, hv.MARKER_PN, "ZQXWARBLE", "QUINTESSA", str(tmp_path)]
    reader = SlideReader(str(path))
    try:
        info = reader.info
        assert info.metadata.icc_profile and info.raw_levels[0].jpegtables  # the values are there ...
        redaction = RedactionConfig(text_mode="detect", ocr_terms=(hv.MARKER, hv.MARKER_PN))
        job = plan_job(ref, "pseudo", "slide-1", (str(path),), info, WsiSettings(), redaction)
        objects: list[object] = [ref, info, info.metadata, *info.raw_levels, job, job.context, redaction]
        objects += [*job.context.codecs, next(tile_tasks(job)), next(band_tasks(job)), SlideUnit.single(ref)]
        objects += list(level_codecs(job.levels, job.context.tile, info.raw_levels))
        for obj in objects:
            assert_clean_repr(obj, values)  # ... but never in a repr
    finally:
        reader.close()


def test_dicom_objects_show_no_element_value_uid_or_path(tmp_path: Path) -> None:
    ds = dicom_factory.instance(series=2)
    ds.PatientName = hv.MARKER_PN
    data = dicom_factory.to_bytes(ds)
    source = InstanceSource(hashlib.sha256(data).hexdigest(), path=str(tmp_path / hv.MARKER / "a.dcm"))
    values = [hv.MARKER, hv.MARKER_PN, "ZQXWARBLE", str(tmp_path)]
    values += [v for k, v in dicom_factory.PHI.items() if k not in ("PatientName",)]
    values += [dicom_factory.STUDY_UID, dicom_factory.instance_uid(2, 1), dicom_factory.series_uid(2)]
    settings = RunSettings(output=str(tmp_path / "out"), key_token=KEY.to_token())
    result = deidentify_instance(data, settings, KEY, source)
    assert result.uid_map and result.patient_id_map  # the originals are held ...
    parsed, stripped = read_for_profile(data, Limits(), ProfileSettings())
    profile_result = deidentify(parsed, ProfileSettings(), KEY, stripped)
    for obj in (result, source, profile_result, stripped, Word(0, hv.MARKER, 0.9), *result.leak_hits):
        assert_clean_repr(obj, values)  # ... and never shown
