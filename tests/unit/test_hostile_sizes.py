"""Issue 11 parts 2, 3 and 8: sizes declared inside compressed units are checked before decoding, pixel
data must match its header, and dead-letter messages never spell input bytes.

The bomb cases measure peak memory in a fresh interpreter (resource.getrusage(RUSAGE_CHILDREN)), so
the figure is that of the one operation and not of this test process.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pydicom
import pytest
from pydicom.encaps import encapsulate

from deid.codestream import Geometry, check_unit, read_header
from deid.dicom.elements import tag_text
from deid.dicom.instance import InstanceSource, deidentify_instance
from deid.dicom.reader import read_dicom, read_for_profile
from deid.errors import DeidError, InputTooLargeError, InvalidInputError
from deid.keys import DeidKey
from deid.settings import Limits, ProfileSettings, RunSettings
from deid.wsi.probe import probe_isolated
from deid.wsi.units import check_tiff_units
from tests.support import dicom_factory, hostile_inputs, wsi_factory
from tests.support.env import REPO_ROOT

MB = 1024 * 1024
PEAK_RSS_BOUND_MB = 600
KEY = DeidKey(b"h" * 32)


def _measured(code: str, *args: str) -> tuple[dict[str, str], int]:
    """Run `code` in a fresh interpreter; (the JSON it prints, peak RSS in MiB of it and its children)."""
    wrapper = (
        "import json, resource, sys\n"
        f"{code}\n"
        # VmHWM, not RUSAGE_SELF: Linux keeps ru_maxrss across exec, so a child forked from a large
        # pytest process would report the parent's size (VmHWM belongs to the new address space).
        "hwm = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
        "usage = max(hwm, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "print(json.dumps({**result, 'peak_kib': usage}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", wrapper, *args], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    report = json.loads(lines[-1])
    if len(lines) > 1:
        report["child"] = json.loads(lines[0])
    return report, int(report["peak_kib"]) // 1024


def _kind_of(call: object) -> str:
    assert callable(call)
    with pytest.raises(DeidError) as caught:
        call()
    return str(caught.value.error_kind)


# -- the one header rule -------------------------------------------------------------------------


def test_jpeg_sof_larger_than_declared_is_too_large_and_different_is_invalid() -> None:
    frame = hostile_inputs.jpeg_frame(16, 16)
    assert read_header(frame, "jpeg") is not None
    check_unit(frame, "jpeg", Geometry(16, 16, 1), "a test frame")
    with pytest.raises(InputTooLargeError, match="declares a larger image"):
        check_unit(hostile_inputs.with_sof(frame, 65500, 65500), "jpeg", Geometry(16, 16, 1), "a test frame")
    with pytest.raises(InvalidInputError, match="different size"):
        check_unit(hostile_inputs.with_sof(frame, 8, 16), "jpeg", Geometry(16, 16, 1), "a test frame")
    with pytest.raises(InvalidInputError, match="zero width or height"):
        check_unit(hostile_inputs.with_sof(frame, 16, 0), "jpeg", Geometry(16, 16, 1), "a test frame")
    with pytest.raises(InvalidInputError, match="does not start with a JPEG start-of-image"):
        check_unit(b"not a jpeg", "jpeg", Geometry(16, 16, 1), "a test frame")
    with pytest.raises(InvalidInputError, match="ends before"):
        check_unit(frame[:20], "jpeg", Geometry(16, 16, 1), "a test frame")


def test_j2k_siz_is_checked_raw_and_inside_a_jp2_box() -> None:
    ok = hostile_inputs.j2k_codestream(64, 32)
    check_unit(ok, "jpeg2000", Geometry(64, 32, 1), "a test frame")
    boxed = b"\x00\x00\x00\x0cjP  \r\n\x87\n" + struct.pack(">I4s", 8 + len(ok), b"jp2c") + ok
    check_unit(boxed, "jpeg2000", Geometry(64, 32, 1), "a test frame")
    with pytest.raises(InputTooLargeError):
        check_unit(hostile_inputs.j2k_codestream(65500, 65500), "jpeg2000", Geometry(64, 32, 1), "a test frame")
    with pytest.raises(InputTooLargeError):  # right size, 16384 components
        check_unit(hostile_inputs.j2k_codestream(64, 32, components=300), "jpeg2000", Geometry(64, 32, 1), "x")
    with pytest.raises(InputTooLargeError):  # right size, one JPEG 2000 tile per pixel of a large image
        check_unit(hostile_inputs.j2k_codestream(4096, 4096, tile=1), "jpeg2000", Geometry(4096, 4096, 1), "x")


# -- (2) decompression bombs: WSI ------------------------------------------------------------------


@pytest.fixture
def svs_bomb(tmp_path: Path) -> Path:
    return hostile_inputs.svs_with_sof(tmp_path / "bomb.svs", 65500, 65500)


def test_the_tile_scan_refuses_a_sof_bomb_and_passes_sound_slides(svs_bomb: Path, tmp_path: Path) -> None:
    with pytest.raises(InputTooLargeError, match="JPEG tile of TIFF page 0 declares a larger image"):
        check_tiff_units(str(svs_bomb))
    sound = tmp_path / "sound.svs"
    wsi_factory.write_aperio_svs(sound)
    check_tiff_units(str(sound))
    generic = tmp_path / "generic.tiff"
    wsi_factory.write_generic_tiff(generic)
    check_tiff_units(str(generic))


def test_the_probe_refuses_a_sof_bomb_in_bounded_memory(svs_bomb: Path) -> None:
    # Before: the probe child grew to 19.9-23 GB until the kernel killed it.
    code = (
        "from deid.wsi.probe import probe_isolated\n"
        "from deid.errors import DeidError\n"
        "try:\n    probe_isolated(sys.argv[1], 512)\n    result = {'kind': 'ok'}\n"
        "except DeidError as exc:\n    result = {'kind': exc.error_kind}\n"
    )
    report, peak_mb = _measured(code, str(svs_bomb))
    assert report["kind"] == "too_large"
    assert peak_mb < PEAK_RSS_BOUND_MB


def test_the_probe_memory_cap_stops_a_decoder_even_without_the_header_check(svs_bomb: Path) -> None:
    """The cap is the backstop: with both header checks switched off, libjpeg's allocation fails in the
    capped child (MemoryError -> too_large) instead of growing."""
    code = (
        "import deid.wsi.probe as probe, deid.wsi.source as source\n"
        "probe.check_tiff_units = lambda path: None\n"
        "source.check_unit = lambda *args: None\n"
        "status = probe._main([sys.argv[1], '512', str(1024**3)])\n"
        "sys.stdout.write('\\n')\n"
        "result = {'status': str(status)}\n"
    )
    report, peak_mb = _measured(code, str(svs_bomb))
    assert report["status"] == "3"  # a DeidError reported by the child, not a crash
    assert report["child"]["error_kind"] == "too_large" and "ran out of memory" in report["child"]["message"]
    assert peak_mb < PEAK_RSS_BOUND_MB


def test_probe_passes_a_sound_slide_under_its_cap(tmp_path: Path) -> None:
    sound = tmp_path / "sound.svs"
    wsi_factory.write_aperio_svs(sound)
    probe_isolated(str(sound), 512)


# -- (2) decompression bombs: deflated DICOM -------------------------------------------------------


def test_a_deflated_bomb_is_refused_after_inflating_a_bounded_amount() -> None:
    # Before: the 1 GiB dataset inflated whole (twice) and the instance was published (2.3 GB peak).
    code = (
        "from tests.support.hostile_inputs import deflated_bomb\n"
        "from deid.dicom.reader import read_for_profile\n"
        "from deid.settings import Limits, ProfileSettings\n"
        "from deid.errors import DeidError\n"
        "data = deflated_bomb(1 << 30)\n"
        "try:\n    read_for_profile(data, Limits(), ProfileSettings())\n    result = {'kind': 'ok'}\n"
        "except DeidError as exc:\n    result = {'kind': exc.error_kind, 'size': str(len(data))}\n"
    )
    report, peak_mb = _measured(code)
    assert report["kind"] == "too_large"
    assert int(report["size"]) < 2 * MB
    assert peak_mb < PEAK_RSS_BOUND_MB


def test_a_deflated_bomb_is_refused_with_bounded_allocations_in_process() -> None:
    data = hostile_inputs.deflated_bomb(256 * MB)
    tracemalloc.start()
    try:
        with pytest.raises(InputTooLargeError, match="deflated dataset inflates to more than"):
            read_dicom(data, Limits())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200 * MB


def test_deflate_cap_follows_max_file_bytes_and_declared_pixels() -> None:
    sound = hostile_inputs.deflated_instance()
    read_dicom(sound, Limits())
    with pytest.raises(InputTooLargeError):
        read_dicom(hostile_inputs.deflated_bomb(8 * MB), Limits(max_file_bytes=4 * MB))
    # A header that declares too many pixels is refused as soon as it is inflated.
    ds = dicom_factory.instance(rows=4096, columns=4096)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    big = dicom_factory.to_bytes(ds)
    with pytest.raises(InputTooLargeError, match="over --max_pixels"):
        read_dicom(big, Limits(max_pixels=1000))
    read_dicom(big, Limits())


def test_a_truncated_deflate_stream_is_invalid() -> None:
    sound = hostile_inputs.deflated_instance(rows=64, columns=64)
    assert _kind_of(lambda: read_dicom(sound[: len(sound) - 40], Limits())) == "invalid_input"


# -- (3) pixel data that does not match its header -------------------------------------------------


@pytest.mark.parametrize("length", [63, 65, 0, 62, 66, 128])
def test_native_pixel_data_of_the_wrong_length_is_invalid(length: int) -> None:
    data = hostile_inputs.native_with_pixel_length(length)
    assert len(pydicom.dcmread(pydicom.filebase.DicomBytesIO(data)).PixelData or b"") == length
    with pytest.raises(InvalidInputError, match="PixelData holds"):
        read_for_profile(data, Limits(), ProfileSettings())


def test_native_pixel_data_of_the_right_length_reads() -> None:
    read_dicom(hostile_inputs.native_with_pixel_length(64), Limits())


@pytest.mark.parametrize("keyword", ["Rows", "Columns", "NumberOfFrames", "SamplesPerPixel", "BitsAllocated"])
def test_zero_sizes_with_pixel_data_are_invalid(keyword: str) -> None:
    ds = dicom_factory.instance()
    setattr(ds, keyword, 0)
    assert _kind_of(lambda: read_dicom(dicom_factory.to_bytes(ds), Limits())) == "invalid_input"


def _encapsulated(fragments: list[bytes], frames: int, has_bot: bool = False) -> bytes:
    return dicom_factory.to_bytes(hostile_inputs.jpeg_instance(fragments, frames, has_bot))


def test_frames_declared_without_their_fragments_are_invalid() -> None:
    frame = hostile_inputs.jpeg_frame()
    with pytest.raises(InvalidInputError, match="holds 2 fragments but NumberOfFrames declares 3"):
        read_dicom(_encapsulated([frame, frame], 3), Limits())
    with pytest.raises(InvalidInputError, match="holds 0 fragments"):
        read_dicom(_encapsulated([], 2), Limits())
    read_dicom(_encapsulated([frame, frame, frame], 3), Limits())
    read_dicom(_encapsulated([frame, frame, frame], 3, has_bot=True), Limits())


def test_an_offset_table_that_does_not_match_the_frames_is_invalid() -> None:
    frame = hostile_inputs.jpeg_frame()
    ds = hostile_inputs.jpeg_instance([frame, frame], 2, has_bot=True)
    ds.NumberOfFrames = 1
    # One frame declared, two table entries (and fragments): not one fragment start per frame.
    assert _kind_of(lambda: read_dicom(dicom_factory.to_bytes(ds), Limits())) == "invalid_input"


def test_broken_and_oversized_jpeg_frames_are_refused_before_decoding() -> None:
    frame = hostile_inputs.jpeg_frame()
    bomb = hostile_inputs.with_sof(frame, 65500, 65500)
    assert _kind_of(lambda: read_dicom(_encapsulated([frame, bomb], 2), Limits())) == "too_large"
    assert _kind_of(lambda: read_dicom(_encapsulated([b"NOTJPEG!"], 1), Limits())) == "invalid_input"
    assert _kind_of(lambda: read_dicom(_encapsulated([frame[:12]], 1), Limits())) == "invalid_input"
    assert _kind_of(lambda: read_dicom(_encapsulated([hostile_inputs.with_sof(frame, 8, 16)], 1), Limits())) == (
        "invalid_input"
    )


def test_a_j2k_siz_bomb_in_a_dicom_frame_is_too_large() -> None:
    ds = hostile_inputs.jpeg_instance([hostile_inputs.j2k_codestream(65500, 65500)], 1)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEG2000Lossless
    assert _kind_of(lambda: read_dicom(dicom_factory.to_bytes(ds), Limits())) == "too_large"
    ds.PixelData = encapsulate([hostile_inputs.j2k_codestream(16, 16)])
    read_dicom(dicom_factory.to_bytes(ds), Limits())


def _settings(tmp_path: Path) -> RunSettings:
    return RunSettings(output=str(tmp_path), key_token=KEY.to_token())


def test_pixels_not_decoded_are_said_so_in_the_audit(tmp_path: Path) -> None:
    """A sound header with damaged entropy-coded data passes when no pixel redaction runs (the frames are
    copied, never decoded); the audit's `pixel_data` detail says "checked", not "decoded"."""
    frame = hostile_inputs.jpeg_frame()
    damaged = frame[:-40] + b"\x00" * 38 + frame[-2:]
    data = _encapsulated([damaged], 1)
    result = deidentify_instance(data, _settings(tmp_path), KEY, InstanceSource("0" * 64))
    assert result.details["pixel_data"] == "checked"
    native = deidentify_instance(dicom_factory.to_bytes(dicom_factory.instance()), _settings(tmp_path), KEY,
                                 InstanceSource("1" * 64))
    assert native.details["pixel_data"] == "checked"


# -- (8) no input bytes in messages ----------------------------------------------------------------


def _printable_windows(data: bytes) -> set[str]:
    return {data[i : i + 4].decode("latin-1") for i in range(len(data) - 3) if data[i : i + 4].isascii()
            and all(32 < b < 127 for b in data[i : i + 4])}


@pytest.mark.parametrize("strip_private", [False, True])
def test_a_garbage_tag_message_spells_no_input_bytes(strip_private: bool) -> None:
    data, garbage = hostile_inputs.garbage_tag_instance()
    group, element, length = struct.unpack("<HHI", garbage)
    with pytest.raises(InvalidInputError) as caught:
        if strip_private:
            read_for_profile(data, Limits(), ProfileSettings())
        else:
            read_dicom(data, Limits())
    message = str(caught.value)
    assert "offset" in message and "unlisted tag" in message
    assert f"{group:04X}" not in message and f"{element:04X}" not in message and str(length) not in message
    name = hostile_inputs.GARBAGE_NAME.encode()
    assert not {w for w in _printable_windows(name) if w in message}, message
    assert not {w for w in _printable_windows(garbage) if w.upper() in message.upper()}


def test_dictionary_and_private_tags_are_still_named() -> None:
    assert tag_text(0x00100010) == "PatientName (0010,0010)"
    assert tag_text(0x00090010) == "(0009,0010)"  # a private creator
    assert tag_text(0x00091010, {0x00090010}) == "(0009,1010)"  # a private element with its creator
    assert tag_text(0x00091010) == "with an unlisted tag"  # no creator: could be any four bytes
    assert tag_text(0x52414C42) == "with an unlisted tag"
    ds = dicom_factory.instance()
    data = dicom_factory.to_bytes(ds)
    name = data.index(ds.PatientName.encode())
    cut = data[: name - 2] + struct.pack("<H", 0xFFF0) + data[name:]
    with pytest.raises(InvalidInputError, match=r"PatientName \(0010,0010\) at offset \d+ declares a value longer"):
        read_dicom(cut, Limits())
