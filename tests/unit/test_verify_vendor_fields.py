"""Places values hide in slides: vendor fields (Leica, Ventana, Philips, NDPI, MIRAX) and name spellings.

Each test writes a synthetic input with the value in that place, asserts the harvest finds it, and
that scan_output finds it when it is planted in an output.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pydicom
import pytest

from deid.verify.harvest import harvest_dicom, harvest_slidedat, harvest_tiff_metadata
from deid.verify.scan import looks_like_text, scan_output, scan_text_output
from deid.verify.values import LeakHit, PhiValue, is_meaningful, name_variants
from deid.verify.vendors import field_sort, xml_fields
from deid.wsi.leakcheck import harvest_slide
from tests.support.phi_fixtures import PATIENT_NAME, phi_dataset
from tests.support.vendor_fixtures import (
    PHILIPS_NAME,
    SLIDEDAT_INI,
    TECHNICAL_VALUES,
    VENDOR_VALUES,
    VENDOR_WRITERS,
    icc_profile,
    write_output_tiff,
    write_philips_tiff,
)


def _kinds(hits: list[LeakHit]) -> set[str]:
    return {kind for h in hits for kind in h.value_kind.split("/")}


def _found(values: frozenset[PhiValue], suffix: str, text: str) -> bool:
    return any(v.kind.endswith(suffix) and v.text == text for v in values)


@pytest.mark.parametrize("vendor", sorted(VENDOR_VALUES))
def test_vendor_fields_are_harvested_and_found_when_planted(vendor: str, tmp_path: Path) -> None:
    values = harvest_tiff_metadata(VENDOR_WRITERS[vendor](tmp_path / f"{vendor}.tif"))
    texts = {v.text for v in values}
    for suffix, text in VENDOR_VALUES[vendor]:
        assert _found(values, suffix, text), (vendor, suffix)
    assert not texts & set(TECHNICAL_VALUES), "technical values are not identifying"
    for suffix, text in VENDOR_VALUES[vendor]:
        # The value, planted in an output's description (case changed), is found there.
        out = write_output_tiff(tmp_path / "out.tiff", f"Aperio Image Library|AppMag = 20|Note = {text.lower()}")
        hits = scan_output(out, "wsi/KQ7ZP2M4XW9HTRVA.tiff", values)
        assert any(h.value_kind.endswith(suffix) or suffix in h.value_kind for h in hits), (vendor, suffix)
        assert any(h.location.startswith("tiff:ifd0:ImageDescription") for h in hits)
    # A clean output carries none of them.
    assert scan_output(write_output_tiff(tmp_path / "clean.tiff"), "wsi/KQ7ZP2M4XW9HTRVA.tiff", values) == []


def test_slidedat_ini_fields_are_harvested_from_text_and_bytes() -> None:
    expected = {
        ("GENERAL.SLIDE_ID", "9f3c2a1b7e6d5c4b3a291807f6e5d4c3"),
        ("GENERAL.SLIDE_NAME", "ZQXMIRAX-SLIDE-12"),
        ("GENERAL.SLIDE_BARCODE", "ZQXMRXBC-404"),
        ("GENERAL.PROJECT_NAME", "ZQXPROJECT-Lung"),
        ("GENERAL.SLIDE_CREATIONDATETIME", "2013-12-16"),  # day-first 16/12/2013 read as a date
    }
    for source in (SLIDEDAT_INI, SLIDEDAT_INI.encode("utf-8"), SLIDEDAT_INI.encode("utf-16")):
        values = harvest_slidedat(source)
        for key, text in expected:
            assert _found(values, f"mirax:Slidedat:{key}", text), key
        assert not {v.text for v in values} & {"01.02", "Slide zoom level"}
    out = pydicom.dcmread(io.BytesIO(_dicom_with_comment("see ZQXMRXBC-404")))
    buffer = io.BytesIO()
    out.save_as(buffer, enforce_file_format=True)
    hits = scan_output(buffer.getvalue(), "dicom/a/b/c.dcm", harvest_slidedat(SLIDEDAT_INI))
    assert "mirax:Slidedat:GENERAL.SLIDE_BARCODE" in _kinds(hits)


def _dicom_with_comment(comment: str) -> bytes:
    ds = phi_dataset()
    for keyword in ("PatientName", "PatientID", "OtherPatientIDsSequence"):
        delattr(ds, keyword)
    ds.ImageComments = comment
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_mirax_unit_harvest_reads_its_slidedat(tmp_path: Path) -> None:
    folder = tmp_path / "in" / "slide"
    folder.mkdir(parents=True)
    (folder / "Slidedat.ini").write_text(SLIDEDAT_INI, encoding="utf-8")
    (folder / "Data0000.dat").write_bytes(b"\xff\xd8" + bytes(64))
    index = tmp_path / "in" / "slide.mrxs"
    index.write_bytes(b"\xff\xd8" + bytes(64))
    paths = [str(index), str(folder / "Slidedat.ini"), str(folder / "Data0000.dat")]
    values = harvest_slide(paths, "mrxs", str(tmp_path / "in"))
    assert _found(values, "GENERAL.SLIDE_NAME", "ZQXMIRAX-SLIDE-12")


@pytest.mark.parametrize(
    ("name", "spellings"),
    [
        ("ZQXWARBLE^QUINTESSA", ["QUINTESSA ZQXWARBLE", "ZQXWARBLE QUINTESSA", "ZQXWARBLE, QUINTESSA",
                                 "ZQXWARBLE_QUINTESSA", "ZQXWARBLE,QUINTESSA", "ZQXWARBLE", "QUINTESSA"]),
        ("ZQXWARBLE, QUINTESSA", ["QUINTESSA ZQXWARBLE", "ZQXWARBLE^QUINTESSA", "ZQXWARBLE_QUINTESSA"]),
        ("Quintessa Zqxwarble", ["Zqxwarble, Quintessa", "Zqxwarble^Quintessa", "Zqxwarble Quintessa"]),
        ("ZQXWARBLE^QUINTESSA^MAEVE", ["QUINTESSA MAEVE ZQXWARBLE", "ZQXWARBLE, QUINTESSA MAEVE",
                                       "ZQXWARBLE_QUINTESSA_MAEVE", "QUINTESSA ZQXWARBLE"]),
    ],
)
def test_name_variants(name: str, spellings: list[str]) -> None:
    variants = name_variants(name)
    assert set(spellings) <= set(variants)
    assert name_variants("zqx.tech.user") == ["zqx.tech.user"]  # no parts, no variants


def test_dicom_pn_and_other_name_sources_share_the_variants(tmp_path: Path) -> None:
    dicom = {v.text for v in harvest_dicom(phi_dataset())}
    assert set(name_variants(PATIENT_NAME)) <= dicom | {t for t in name_variants(PATIENT_NAME) if not is_meaningful(t)}
    philips = {v.text for v in harvest_tiff_metadata(write_philips_tiff(tmp_path / "p.tiff"))}
    assert {t for t in name_variants(PHILIPS_NAME) if is_meaningful(t)} <= philips


@pytest.mark.parametrize("spelling", ["Quintessa Zqxwarble", "zqxwarble quintessa", "ZQXWARBLE, Quintessa",
                                      "zqxwarble_quintessa"])
def test_name_in_an_icc_profile_is_found_in_any_spelling_and_case(spelling: str, tmp_path: Path) -> None:
    ds = phi_dataset()
    ds.PatientName = "ZQXWARBLE^QUINTESSA"
    sources = {
        "PatientName": harvest_dicom(ds),
        "tiff:ImageDescription:DICOM_PATIENT_NAME": harvest_tiff_metadata(write_philips_tiff(tmp_path / "p.tiff")),
    }
    out = write_output_tiff(tmp_path / "out.tiff", icc=icc_profile(f"sRGB {spelling} v2"))
    for kind, values in sources.items():
        hits = scan_output(out, "wsi/KQ7ZP2M4XW9HTRVA.tiff", values)
        assert kind in _kinds(hits), kind
        assert any("ICCProfile" in h.location or h.location.startswith("bytes@") for h in hits)


def test_keys_are_classified_and_technical_keys_are_left_alone() -> None:
    assert field_sort("UserName") == "name" and field_sort("DICOM_PATIENT_NAME") == "name"
    assert field_sort("BarCode1D") == "id" and field_sort("PIM_DP_UFS_BARCODE") == "id"
    assert field_sort("creationDate") == "date" and field_sort("SLIDE_CREATIONDATETIME") == "date"
    assert field_sort("SLIDE_NAME") == "text" and field_sort("Name") == "text"
    for technical in ("BuildDate", "BuildVersion", "Magnification", "ScannerModel", "DICOM_SOFTWARE_VERSIONS",
                      "BarcodeFormats", "roi.barcode.macro", "ShowLabel", "xmlns"):
        assert field_sort(technical) is None, technical


def test_xml_fields_unescape_and_skip_structure() -> None:
    fields = list(xml_fields('<a UserName="O&apos;Zqx &amp; Co" xmlns:user="urn:x"><Barcode>Z&lt;1</Barcode></a>'))
    assert {(f.key, f.value) for f in fields} == {("UserName", "O'Zqx & Co"), ("Barcode", "Z<1")}
    assert "O'Zqx" not in repr(fields)  # a Field never shows its value


def test_base64_barcodes_and_short_values() -> None:
    encoded = base64.b64encode(b"ZQXBC-77").decode()
    values = {v.text for v in harvest_tiff_metadata(_tiff_bytes(f'<x><barcode>{encoded}</barcode><case>AB</case></x>'))}
    assert {"ZQXBC-77", encoded} <= values
    assert "AB" not in values  # the false-positive rule still drops short values


def _tiff_bytes(description: str) -> bytes:
    import numpy as np
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((8, 8), np.uint8), description=description)
    return buffer.getvalue()


def test_a_key_holding_a_value_is_not_shown_in_kinds() -> None:
    description = "Aperio|Patient ZQXHIDDEN = ZQXHIDDEN Smith|PatientZQXHIDDEN = ZQXHIDDEN|User = ZQXHIDDEN"
    values = harvest_tiff_metadata(_tiff_bytes(description))
    assert {v.text for v in values} >= {"ZQXHIDDEN", "ZQXHIDDEN Smith"}
    assert all("ZQXHIDDEN" not in v.kind.upper() for v in values)


def test_text_outputs_are_searched_whole_with_short_values_as_tokens() -> None:
    values = [PhiValue("QX7Z1", "PatientID"), PhiValue("20230911", "StudyDate")]
    text = b'{"run_id": "20230911T101500Z-1a2b3c4d"}\n{"message": "bad QX7Z1 value"}\n'
    assert looks_like_text(text) and not looks_like_text(b"\x89PNG\r\n\x1a\n\x00")
    hits = scan_text_output(text, "runs/20230911T101500Z-1a2b3c4d.json", values)
    assert {(h.value_kind, h.location) for h in hits} >= {("PatientID", "text:line2"), ("StudyDate", "text:line1")}
    import re

    run_id = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{8}")
    hits = scan_text_output(text, "runs/20230911T101500Z-1a2b3c4d.json", values, run_id)
    assert {(h.value_kind, h.location) for h in hits} == {("PatientID", "text:line2")}
    # A value split across the chunk boundary of a long line is still found.
    from deid.verify import scan

    long_line = b"x " * (scan.TEXT_CHUNK // 2 - 2) + b"QX7Z1 tail"  # 'QX7Z' | '1 tail'
    assert long_line[scan.TEXT_CHUNK - 4 : scan.TEXT_CHUNK] == b"QX7Z"
    assert "PatientID" in _kinds(scan_text_output(long_line, "extra/long.txt", values))
