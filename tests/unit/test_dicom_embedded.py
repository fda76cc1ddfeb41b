"""Encapsulated DICOM frames and ICC profiles carry no hidden value out of `deidentify_instance`.

Each instance's patient is ZQXWARBLE^QUINTESSA, and the same name hides in every frame's JPEG COM,
APP1, APP13, APP0 and APP14 payloads, between scan data and EOI and after EOI (or in J2K COM
segments), and in the text tags of its ICC profiles. The output must not hold it in any spelling,
must decode to the same pixels, and must be published: the leak check, which knows the name from
PatientName, finds nothing.
"""

from __future__ import annotations

import hashlib
import io

import imagecodecs
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.sequence import Sequence
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, JPEGLSLossless

from deid.dicom.embedded import sanitize_embedded
from deid.dicom.instance import InstanceResult, InstanceSource, deidentify_instance
from deid.keys import DeidKey
from deid.settings import RedactionSettings, RunSettings
from tests.support import dicom_factory, wsi_factory
from tests.support import hidden_values as hv

KEY = DeidKey(b"k" * 32)
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
FRAMES = [wsi_factory.tissue(80, 64, seed=seed) for seed in (1, 2, 3)]


def _jpeg_baseline(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, "JPEG", quality=90, subsampling=1)
    return buffer.getvalue()


ENCODERS = {
    "jpeg-baseline": (JPEGBaseline8Bit, "YBR_FULL_422", lambda f: hv.hide_in_jpeg(_jpeg_baseline(f))),
    "jpeg-ls": (JPEGLSLossless, "RGB", lambda f: hv.hide_in_jpeg(bytes(imagecodecs.jpegls_encode(f)))),
    "jpeg-2000": (JPEG2000Lossless, "RGB", lambda f: hv.hide_in_j2k(hv.j2k_codestream(f))),
}
DECODERS = {
    "jpeg-baseline": lambda data: np.asarray(Image.open(io.BytesIO(data)).convert("RGB")),
    "jpeg-ls": lambda data: np.asarray(imagecodecs.jpegls_decode(data)),
    "jpeg-2000": lambda data: np.asarray(imagecodecs.jpeg2k_decode(data)),
}


def hostile_instance(kind: str, icc: bool = False) -> Dataset:
    syntax, photometric, encode = ENCODERS[kind]
    ds = dicom_factory.instance(rows=64, columns=80)
    for keyword in ("RescaleIntercept", "RescaleSlope"):
        delattr(ds, keyword)
    for tag in [element.tag for element in ds if element.tag.group == 0x6000]:
        del ds[tag]
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = US_MULTIFRAME
    ds.Modality = "US"
    ds.PatientName = hv.MARKER_PN
    ds.BurnedInAnnotation = "NO"
    ds.NumberOfFrames = len(FRAMES)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = photometric
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    if kind == "jpeg-baseline":
        ds.LossyImageCompression = "01"
    ds.PixelData = encapsulate([encode(frame) for frame in FRAMES])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = syntax
    if icc:
        ds.ICCProfile = hv.icc_with_values()
        path = Dataset()
        path.OpticalPathIdentifier = "1"
        path.ICCProfile = hv.icc_with_values()
        ds.OpticalPathSequence = Sequence([path])
    return ds


def run(ds: Dataset, text: str = "off") -> tuple[bytes, InstanceResult]:
    data = dicom_factory.to_bytes(ds)
    hv.assert_present(data)
    settings = RunSettings(output="/unused", key_token=KEY.to_token(), redaction=RedactionSettings(text=text))
    result = deidentify_instance(data, settings, KEY, InstanceSource(hashlib.sha256(data).hexdigest()))
    return data, result


def frames_of(payload: bytes) -> list[bytes]:
    ds = pydicom.dcmread(io.BytesIO(payload))
    return list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))


@pytest.mark.parametrize("kind", sorted(ENCODERS))
def test_every_frame_loses_comments_app_payloads_and_trailing_bytes(kind: str) -> None:
    data, result = run(hostile_instance(kind))
    assert not result.leaked, result.leak_summary()  # published, not quarantined
    hv.assert_absent(result.payload)
    decode = DECODERS[kind]
    before = frames_of(data)
    after = frames_of(result.payload)
    assert len(after) == len(FRAMES)
    for old, new, frame in zip(before, after, FRAMES, strict=True):
        # Lossless codecs: the original pixels (CharLS refuses the hostile input's COM before EOI).
        expected = decode(old) if kind == "jpeg-baseline" else frame
        assert np.array_equal(decode(new), expected)
    assert result.actions["frames_sanitized"] == len(FRAMES)
    out = pydicom.dcmread(io.BytesIO(result.payload))
    assert out.file_meta.TransferSyntaxUID == ENCODERS[kind][0]


def test_redact_text_on_clean_frames_are_kept_but_still_sanitized() -> None:
    """--redact_text detect finds nothing in the tissue: frames keep their bytes except the segments."""
    data, result = run(hostile_instance("jpeg-baseline"), text="detect")
    assert not result.leaked, result.leak_summary()
    hv.assert_absent(result.payload)
    assert result.actions.get("pixels_frames_redacted", 0) == 0
    out = pydicom.dcmread(io.BytesIO(result.payload))
    original = pydicom.dcmread(io.BytesIO(data))
    assert np.array_equal(out.pixel_array, original.pixel_array)
    assert out.BurnedInAnnotation == "NO"


def test_icc_profiles_at_any_depth_keep_colours_and_lose_their_text() -> None:
    data, result = run(hostile_instance("jpeg-baseline", icc=True))
    assert not result.leaked, result.leak_summary()
    hv.assert_absent(result.payload)
    out = pydicom.dcmread(io.BytesIO(result.payload))
    profiles = [out.ICCProfile] + [item.ICCProfile for item in out.get("OpticalPathSequence", [])]
    assert len(profiles) == 2, "the profile engine removed an ICC profile this test expects to see"
    for profile in profiles:
        assert np.array_equal(hv.colour_through(profile, FRAMES[0]), hv.colour_through(hv.icc_with_values(), FRAMES[0]))
    assert result.actions["icc_profiles_rewritten"] == 2
    del data


def test_clean_frames_are_left_byte_for_byte_and_broken_profiles_replaced() -> None:
    ds = hostile_instance("jpeg-baseline")
    clean = [_jpeg_baseline(frame) for frame in FRAMES]
    ds.PixelData = encapsulate(clean)
    ds.ICCProfile = b"not an ICC profile " + hv.PAYLOAD
    counts = sanitize_embedded(ds)
    assert counts == {"frames_sanitized": 0, "icc_profiles_rewritten": 1}
    assert list(generate_frames(ds.PixelData, number_of_frames=len(FRAMES))) == [
        f + b"\0" * (len(f) % 2) for f in clean
    ]
    hv.assert_absent(ds.ICCProfile)
    assert ds.ICCProfile.startswith(ds.ICCProfile[:4]) and ds.ICCProfile[36:40] == b"acsp"


def test_a_frame_that_is_not_a_stream_of_its_syntax_is_a_pixel_error() -> None:
    from deid.errors import PixelDecodeError

    ds = hostile_instance("jpeg-baseline")
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xe1\xff\xff" + hv.PAYLOAD] * len(FRAMES))
    with pytest.raises(PixelDecodeError) as info:
        sanitize_embedded(ds)
    hv.assert_absent(str(info.value).encode())
