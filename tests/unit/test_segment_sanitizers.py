"""The one JPEG segment rule (deid.jpegsafe), its JPEG 2000 counterpart (deid.j2ksafe) and the one ICC
rule (deid.iccsafe): a value hidden in a comment, an APPn payload, after the end marker, in a box or in
a profile's text is gone, and the pixels (or colours) are the same."""

from __future__ import annotations

import io
import struct

import imagecodecs
import numpy as np
import pytest
from PIL import Image, ImageCms

from deid.iccsafe import IccStructureError, profile_id, sanitize_icc, srgb_profile
from deid.j2ksafe import J2kStructureError, sanitize_j2k
from deid.jpegsafe import JpegStructureError, adobe_segment, jfif_segment, sanitize_jpeg
from deid.wsi import jpeg
from deid.wsi.metadata import SlideMetadata
from tests.support import hidden_values as hv
from tests.support import wsi_factory

PIXELS = wsi_factory.tissue(96, 64)


def _pillow(pixels: np.ndarray, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90, **options)
    return buffer.getvalue()


STREAMS = {
    "jfif-ycbcr": lambda: jpeg.encode(PIXELS, 85),
    "adobe-rgb": lambda: bytes(imagecodecs.jpeg8_encode(PIXELS, level=85, colorspace="RGB", outcolorspace="RGB")),
    "progressive": lambda: _pillow(PIXELS, progressive=True),
    "restart-intervals": lambda: _pillow(PIXELS, restart_marker_blocks=2),
    "lossless-p14": lambda: bytes(imagecodecs.ljpeg_encode(PIXELS[..., 0])),
}


def _decode(stream: bytes) -> np.ndarray:
    if b"\xff\xc3" in stream[:400]:  # SOF3: lossless process 14
        return np.asarray(imagecodecs.ljpeg_decode(stream))
    return np.asarray(imagecodecs.jpeg8_decode(stream))


@pytest.mark.parametrize("kind", sorted(STREAMS))
def test_jpeg_comments_app_payloads_and_trailing_bytes_go_pixels_stay(kind: str) -> None:
    clean = STREAMS[kind]()
    dirty = hv.hide_in_jpeg(clean)
    hv.assert_present(dirty)
    out = sanitize_jpeg(dirty)
    hv.assert_absent(out)
    assert np.array_equal(_decode(out), _decode(clean))
    assert out == sanitize_jpeg(clean) == sanitize_jpeg(out)  # rebuilt segments are the fixed ones
    assert out.endswith(hv.EOI) and out.count(b"\xff\xfe") == 0


def test_app0_and_app14_are_rebuilt_with_only_the_decoding_numbers() -> None:
    clean = jpeg.encode(PIXELS, 85)
    segments, _ = hv.header_segments(sanitize_jpeg(hv.hide_in_jpeg(clean)))
    app0 = [body for marker, body in segments if marker == 0xE0]
    assert app0 == [jfif_segment(0, 1, 1)[4:]]  # JFIF 1.01, density kept, thumbnail gone
    rgb = bytes(imagecodecs.jpeg8_encode(PIXELS, level=85, colorspace="RGB", outcolorspace="RGB"))
    segments, _ = hv.header_segments(sanitize_jpeg(hv.hide_in_jpeg(rgb)))
    assert [body for marker, body in segments if marker == 0xEE] == [adobe_segment(0)[4:]]
    assert jpeg.has_adobe_rgb_transform(sanitize_jpeg(hv.hide_in_jpeg(rgb)))
    # A density in dots per inch survives as numbers; an impossible unit or zero density is normalised.
    assert jfif_segment(1, 300, 300)[11:16] == b"\x01\x01\x2c\x01\x2c"
    assert jfif_segment(9, 0, 0)[11:16] == b"\x00\x00\x01\x00\x01"


def test_jpeg_ls_segments_go_and_pixels_stay() -> None:
    clean = bytes(imagecodecs.jpegls_encode(PIXELS))
    dirty = hv.hide_in_jpeg(clean)
    out = sanitize_jpeg(dirty)
    hv.assert_absent(out)
    assert b"SPIFF" not in out  # CharLS's SPIFF header (APP8) is not needed to decode
    assert np.array_equal(imagecodecs.jpegls_decode(out), PIXELS)


def test_tiff_jpegtables_and_abbreviated_tiles_are_sanitized_the_same_way() -> None:
    tables, tile = hv.split_tables(
        bytes(imagecodecs.jpeg8_encode(PIXELS, level=85, colorspace="RGB", outcolorspace="RGB"))
    )
    dirty_tables, dirty_tile = hv.hide_in_tables(tables), hv.hide_in_jpeg(tile)
    clean_tables, clean_tile = jpeg.strip_metadata(dirty_tables), jpeg.strip_metadata(dirty_tile)
    hv.assert_absent(clean_tables + clean_tile)
    assert clean_tables == tables
    expected = jpeg.decode(tile, tables, photometric_rgb_data=True)
    assert np.array_equal(jpeg.decode(clean_tile, clean_tables, photometric_rgb_data=True), expected)


@pytest.mark.parametrize(
    "bad",
    [b"", b"\x89PNG\r\n", hv.SOI + b"\xff\xe1\xff\xff", hv.SOI + b"\x00\x00", hv.SOI + b"\xff\xf0\x00\x04ab"],
    ids=["empty", "png", "overlong-segment", "junk", "reserved-marker"],
)
def test_malformed_jpeg_is_refused_without_quoting_it(bad: bytes) -> None:
    with pytest.raises(JpegStructureError) as info:
        sanitize_jpeg(bad)
    assert "ab" not in str(info.value)


def test_j2k_comments_in_main_and_tile_part_headers_and_bytes_after_eoc_go() -> None:
    clean = hv.j2k_codestream(PIXELS, tile=32)
    dirty = hv.hide_in_j2k(clean)
    hv.assert_present(dirty)
    assert np.array_equal(imagecodecs.jpeg2k_decode(dirty), PIXELS)  # the hostile input is valid
    out = sanitize_j2k(dirty)
    hv.assert_absent(out)
    assert b"\xff\x64" not in out[: out.index(b"\xff\x93")]  # no COM in any header (Pillow's own too)
    assert np.array_equal(imagecodecs.jpeg2k_decode(out), PIXELS)
    assert sanitize_j2k(out) == out


def test_jp2_boxes_other_than_header_and_codestream_go() -> None:
    clean = bytes(imagecodecs.jpeg2k_encode(PIXELS, level=0, codecformat="JP2"))
    dirty = hv.hide_in_jp2(clean)
    out = sanitize_j2k(dirty)
    hv.assert_absent(out)
    assert b"xml " not in out and b"uuid" not in out
    assert np.array_equal(imagecodecs.jpeg2k_decode(out), PIXELS)
    with pytest.raises(J2kStructureError):
        sanitize_j2k(b"\xff\x4f\xff\x51\x00")


def _tag_types(profile: bytes) -> dict[bytes, bytes]:
    (count,) = struct.unpack_from(">I", profile, 128)
    out = {}
    for index in range(count):
        signature, offset, _ = struct.unpack_from(">4sII", profile, 132 + 12 * index)
        out[signature] = profile[offset : offset + 4]
    return out


def test_icc_text_tags_header_and_slack_are_rewritten_colours_stay() -> None:
    dirty = hv.icc_with_values()
    hv.assert_present(dirty)
    out = sanitize_icc(dirty)
    hv.assert_absent(out)
    for spelling in (b"ZQXW", b"ARBL", b"QUIN"):
        assert spelling not in out
    profile = ImageCms.ImageCmsProfile(io.BytesIO(out))
    assert ImageCms.getProfileDescription(profile).strip() == "De-identified colour profile"
    assert ImageCms.getProfileCopyright(profile).strip() == "No copyright information"
    types = _tag_types(out)
    assert types[b"dmnd"] == b"desc" and types[b"dmdd"] == b"text" and b"ZQXW" not in types
    assert struct.unpack_from(">I", out, 0)[0] == len(out) and len(out) % 4 == 0
    assert np.array_equal(hv.colour_through(out, PIXELS), hv.colour_through(dirty, PIXELS))
    assert sanitize_icc(out) == out


def test_icc_profile_id_is_recomputed_and_a_real_v4_profile_keeps_its_colours() -> None:
    data = pytest.importorskip("pydicom.data")
    path = data.get_testdata_file("crayons.icc")
    if path is None:
        pytest.skip("pydicom test data absent")
    with open(str(path), "rb") as handle:
        real = handle.read()
    assert profile_id(real) == real[84:100] != b"\0" * 16  # the MD5 rule matches a real profile's ID
    dirty = hv.icc_with_values(real)
    dirty = dirty[:84] + profile_id(dirty) + dirty[100:]
    out = sanitize_icc(dirty)
    hv.assert_absent(out)
    assert out[84:100] == profile_id(out)
    assert _tag_types(out)[b"desc"] == b"mluc"  # v4 keeps its text type
    assert np.array_equal(hv.colour_through(out, PIXELS), hv.colour_through(real, PIXELS))


@pytest.mark.parametrize("bad", [b"", b"\0" * 200, hv.srgb_icc()[:100]], ids=["empty", "zeros", "truncated"])
def test_unparseable_icc_is_refused_and_slides_drop_it(bad: bytes) -> None:
    with pytest.raises(IccStructureError):
        sanitize_icc(bad)
    assert SlideMetadata(10, 10, icc_profile=bad).icc_profile is None


def test_slide_metadata_only_ever_holds_a_sanitized_profile() -> None:
    meta = SlideMetadata(10, 10, icc_profile=hv.icc_with_values())
    assert meta.icc_profile is not None
    hv.assert_absent(meta.icc_profile)
    assert ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(srgb_profile())))
