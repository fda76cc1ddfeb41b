"""Pure tests: classification reads content, never names."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.filebase import DicomBytesIO

from deid.classify import VL_WHOLE_SLIDE_MICROSCOPY, classify_head, looks_like_raw_dicom


def _dicom_bytes(path: str) -> bytes:
    ds = pydicom.dcmread(path)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_dicom_whose_preamble_holds_a_tiff_header_is_dicom() -> None:
    data = bytearray(_dicom_bytes(get_testdata_file("CT_small.dcm")))
    data[:4] = b"II*\x00"
    assert classify_head(bytes(data[:65536])) == ("dicom", "dicom")


def test_dicom_with_preamble() -> None:
    assert classify_head(_dicom_bytes(get_testdata_file("CT_small.dcm"))[:65536]) == ("dicom", "dicom")


def test_dicom_without_preamble_or_meta() -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    pydicom.filewriter.write_dataset(buffer, ds)
    data = buffer.getvalue()
    assert data[128:132] != b"DICM"
    assert looks_like_raw_dicom(data)
    assert classify_head(data[:65536])[0] == "dicom"


@pytest.mark.parametrize("magic", [b"II*\x00", b"MM\x00*", b"II+\x00"])
def test_tiff_magics_are_slides(magic: bytes) -> None:
    assert classify_head(magic + b"\x00" * 100) == ("wsi", "tiff")


@pytest.mark.parametrize("data", [b"", b"hello world", b"\x89PNG\r\n\x1a\n" + b"\x00" * 200, b"\x00" * 200])
def test_other_content_is_unknown(data: bytes) -> None:
    assert classify_head(data)[0] == "unknown"


def test_dicom_whole_slide_is_a_slide(shared_data) -> None:
    path = shared_data / "wsi" / "openslide-fixture-boxes_0.dcm"
    assert pydicom.dcmread(path, stop_before_pixels=True).SOPClassUID == VL_WHOLE_SLIDE_MICROSCOPY
    assert classify_head(path.read_bytes()[:65536]) == ("wsi", "dicom-wsi")


def test_real_svs_is_a_slide(shared_data) -> None:
    head = (shared_data / "wsi" / "CMU-1-Small-Region.svs").read_bytes()[:65536]
    assert classify_head(head) == ("wsi", "tiff")
