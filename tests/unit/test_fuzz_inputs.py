"""Hostile and broken inputs: mutated DICOM and TIFF end as output or a DeidError, in bounded time and memory.

DICOM runs in-process (pydicom is pure Python): classify_head -> read_dicom -> deidentify ->
write_dicom. TIFF slides go through the native readers (OpenSlide, tifffile, libjpeg), so each batch
runs in a subprocess with RLIMIT_AS and a timeout: a crash or hang is observed, not fatal.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from deid.classify import HEAD_BYTES, classify_head
from deid.errors import DeidError, InputTooLargeError
from deid.keys import DeidKey
from deid.settings import Limits, ProfileSettings
from tests.support.env import REPO_ROOT
from tests.support.phi_fixtures import phi_dataset, phi_dicom_bytes, write_phi_svs

LIMITS = Limits(max_pixels=50_000_000, max_file_bytes=64 * 1024 * 1024)
KEY = DeidKey(b"fuzz-key-0123456789abcdef")
BASE = phi_dicom_bytes(1)
CASE_SECONDS = 10.0
PIXEL_TAG = b"\xe0\x7f\x10\x00"


def _deep_sequence(depth: int) -> bytes:
    """ContentSequence items nested `depth` deep, undefined lengths (explicit VR little endian)."""
    open_one = b"\x40\x00\x30\xa7SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    close_one = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    return open_one * depth + close_one * depth


def _with_dims(rows: int, columns: int, frames: str | None) -> bytes:
    ds = phi_dataset(2)
    ds.Rows, ds.Columns = rows, columns
    if frames is not None:
        ds.NumberOfFrames = frames
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


_n = len(BASE)
DICOM_MUTATIONS = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, _n - 1)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.integers(0, _n - 1), st.integers(0, 7)), min_size=1, max_size=8)),
    st.tuples(
        st.just("length"),
        st.integers(132, _n - 4),
        st.sampled_from([0xFFFFFFFF, 0x7FFFFFFF, 0xFFFFFFFE, 0x10000000, 0x0000FFFF]),
    ),
    st.tuples(
        st.just("dims"),
        st.sampled_from([(0, 0), (65535, 65535), (1, 0), (46341, 46341)]),
        st.sampled_from([None, "2147483647", "0", "1"]),
    ),
    st.tuples(st.just("deep"), st.integers(1, 3000)),
    st.tuples(st.just("garbage"), st.binary(min_size=0, max_size=600)),
)


def _mutate(mutation: tuple) -> bytes:  # type: ignore[type-arg]
    kind = mutation[0]
    if kind == "truncate":
        return BASE[: mutation[1]]
    if kind == "flip":
        data = bytearray(BASE)
        for offset, bit in mutation[1]:
            data[offset] ^= 1 << bit
        return bytes(data)
    if kind == "length":
        offset, value = mutation[1], mutation[2]
        return BASE[:offset] + struct.pack("<I", value) + BASE[offset + 4 :]
    if kind == "dims":
        (rows, columns), frames = mutation[1], mutation[2]
        return _with_dims(rows, columns, frames)
    if kind == "deep":
        at = BASE.rindex(PIXEL_TAG)
        return BASE[:at] + _deep_sequence(mutation[1]) + BASE[at:]
    return BASE[:132] + mutation[1]


def _process_dicom(data: bytes) -> str:
    """The DICOM branch's entry points in order, with each reader: 'classified-<kind>', or
    '<strict>/<pipeline>' where each is 'ok' or the DeidError kind."""
    from deid.dicom.profile import deidentify
    from deid.dicom.reader import read_dicom, read_for_profile
    from deid.dicom.writer import output_relpath, write_dicom

    kind, _subtype = classify_head(data[:HEAD_BYTES])
    if kind != "dicom":
        return f"classified-{kind}"
    outcomes = []
    # The strict reader, and the pipeline's (private elements dropped unparsed).
    for read in (lambda: (read_dicom(data, LIMITS), None), lambda: read_for_profile(data, LIMITS, ProfileSettings())):
        try:
            ds, stripped = read()
            result = deidentify(ds, ProfileSettings(), KEY, stripped)
            write_dicom(result.dataset)
            output_relpath(result.dataset)
        except DeidError as exc:
            outcomes.append(exc.error_kind)
        else:
            outcomes.append("ok")
    return "/".join(outcomes)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(DICOM_MUTATIONS)
def test_mutated_dicom_ends_as_output_or_deid_error(mutation: tuple) -> None:  # type: ignore[type-arg]
    data = _mutate(mutation)
    start = time.monotonic()
    try:
        outcome = _process_dicom(data)
    except Exception as exc:  # noqa: BLE001 - the assertion below is the point
        pytest.fail(f"{mutation[0]} mutation raised {type(exc).__name__}, not a DeidError")
    assert outcome
    assert time.monotonic() - start < CASE_SECONDS, f"{mutation[0]} mutation took too long"


@pytest.mark.parametrize("frames", ["2147483647", "1"])
def test_huge_declared_dicom_dimensions_refused_before_allocation(frames: str) -> None:
    from deid.dicom.reader import read_dicom

    data = _with_dims(65535, 65535, frames)  # 4.3e9 (or 9e18) pixels claimed, 512 bytes present
    tracemalloc.start()
    try:
        with pytest.raises(InputTooLargeError):
            read_dicom(data, Limits(max_pixels=100_000_000))
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 1024 * 1024, f"peak {peak} bytes before refusing"


def test_zero_by_zero_and_max_file_bytes() -> None:
    from deid.dicom.reader import read_dicom

    outcomes = _process_dicom(_with_dims(0, 0, None)).split("/")
    assert len(outcomes) == 2 and set(outcomes) <= {"ok", "invalid_input", "profile_error", "too_large"}
    with pytest.raises(InputTooLargeError):
        read_dicom(BASE, Limits(max_file_bytes=len(BASE) - 1))


# ---------------------------------------------------------------------------------------------
# TIFF slides, in a subprocess
# ---------------------------------------------------------------------------------------------

_WORKER = r"""
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 * 1024**3, 3 * 1024**3))
from deid.errors import DeidError
from deid.settings import Limits
from deid.classify import classify_head, HEAD_BYTES
from deid.wsi.source import SlideReader, check_limits, probe
limits = Limits(max_pixels=100_000_000, max_file_bytes=64 * 1024**2)
for path in sys.argv[1:]:
    print(json.dumps({"start": path}), flush=True)
    try:
        with open(path, "rb") as handle:
            head = handle.read(HEAD_BYTES)
        classify_head(head)
        reader = SlideReader(path)
        import os
        check_limits(reader.info, os.path.getsize(path), limits)
        probe(reader, 256)
        outcome = "ok"
    except DeidError as exc:
        outcome = exc.error_kind
    except MemoryError:
        outcome = "other:MemoryError"
    except Exception as exc:
        outcome = "other:" + type(exc).__name__
    print(json.dumps({"done": path, "outcome": outcome}), flush=True)
"""


def _tiff_entries(data: bytes) -> list[tuple[int, int]]:
    """(entry offset, tag) of the first IFD of a classic little-endian TIFF."""
    (first,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, first)
    return [(first + 2 + 12 * i, struct.unpack_from("<H", data, first + 2 + 12 * i)[0]) for i in range(count)]


def _set_entry_value(data: bytearray, entry: int, value: int) -> None:
    typ = struct.unpack_from("<H", data, entry + 2)[0]
    if typ == 3:
        struct.pack_into("<H", data, entry + 8, value & 0xFFFF)
    else:
        struct.pack_into("<I", data, entry + 8, value & 0xFFFFFFFF)


TIFF_MUTATIONS = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 1.0)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 7)), min_size=1, max_size=16)),
    st.tuples(
        st.just("tag"),
        st.sampled_from([256, 257, 322, 323, 324, 325, 258, 277]),
        st.sampled_from([0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 100_000]),
    ),
    st.tuples(st.just("ifd-loop"), st.just(0)),
    st.tuples(st.just("entry-count"), st.sampled_from([0, 0xFFFF])),
)


def _mutate_tiff(base: bytes, mutation: tuple) -> bytes:  # type: ignore[type-arg]
    data = bytearray(base)
    kind = mutation[0]
    if kind == "truncate":
        return bytes(data[: int(len(data) * mutation[1])])
    if kind == "flip":
        for where, bit in mutation[1]:
            data[min(len(data) - 1, int(len(data) * where))] ^= 1 << bit
    elif kind == "tag":
        for entry, tag in _tiff_entries(base):
            if tag == mutation[1]:
                _set_entry_value(data, entry, mutation[2])
    elif kind == "ifd-loop":
        (first,) = struct.unpack_from("<I", base, 4)
        (count,) = struct.unpack_from("<H", base, first)
        struct.pack_into("<I", data, first + 2 + 12 * count, first)
    elif kind == "entry-count":
        (first,) = struct.unpack_from("<I", base, 4)
        struct.pack_into("<H", data, first, mutation[1])
    return bytes(data)


def _run_tiff_batch(paths: list[Path]) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_THREAD_LIMIT="1")
    try:
        done = subprocess.run(
            [sys.executable, "-c", _WORKER, *map(str, paths)],
            capture_output=True, timeout=60 + 10 * len(paths), cwd=REPO_ROOT, env=env, check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("a mutated slide hung the reader (batch timed out)")
    outcomes: dict[str, str] = {}
    started = None
    for line in done.stdout.decode().splitlines():
        event = json.loads(line)
        if "start" in event:
            started = event["start"]
        else:
            outcomes[event["done"]] = event["outcome"]
            started = None
    assert done.returncode == 0, (
        f"the reader process died (status {done.returncode}) on mutation file {Path(started or '?').name}"
    )
    return outcomes


@pytest.fixture(scope="module")
def svs_base(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = write_phi_svs(tmp_path_factory.mktemp("base") / "base.svs", size=512)
    return path.read_bytes()


# No shrinking: each example is a subprocess batch; the failure names the mutation file instead.
@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture], database=None, phases=[Phase.explicit, Phase.generate])
@given(mutations=st.lists(TIFF_MUTATIONS, min_size=16, max_size=16))
def test_mutated_slides_end_as_output_or_deid_error(
    mutations: list[tuple], svs_base: bytes, tmp_path_factory: pytest.TempPathFactory  # type: ignore[type-arg]
) -> None:
    folder = tmp_path_factory.mktemp("tiff-fuzz")
    paths = []
    for index, mutation in enumerate(mutations):
        path = folder / f"{index:02d}-{mutation[0]}.svs"
        path.write_bytes(_mutate_tiff(svs_base, mutation))
        paths.append(path)
    outcomes = _run_tiff_batch(paths)
    assert set(outcomes) == {str(p) for p in paths}
    bad = {Path(p).name: o for p, o in outcomes.items() if o.startswith("other:")}
    assert not bad, f"non-DeidError exceptions: {bad}"


def test_slide_claiming_huge_dimensions_is_refused(svs_base: bytes, tmp_path: Path) -> None:
    data = bytearray(svs_base)
    for entry, tag in _tiff_entries(svs_base):
        if tag in (256, 257):
            _set_entry_value(data, entry, 70_000)  # 4.9e9 pixels claimed
    path = tmp_path / "huge.svs"
    path.write_bytes(bytes(data))
    outcomes = _run_tiff_batch([path])
    assert outcomes[str(path)] in {"too_large", "slide_unreadable", "unsupported_format", "invalid_input"}


@pytest.mark.parametrize(("tag", "value"), [(322, 0x7FFFFFFF), (323, 0x7FFFFFFF), (256, 0x7FFFFFFF)])
def test_slide_with_absurd_tile_or_image_size_does_not_kill_the_worker(
    svs_base: bytes, tmp_path: Path, tag: int, value: int
) -> None:
    """Found by the fuzz test: TileLength 2^31-1 made GLib abort() inside OpenSlide (2 TB g_malloc)."""
    path = tmp_path / f"tag{tag}.svs"
    path.write_bytes(_mutate_tiff(svs_base, ("tag", tag, value)))
    outcome = _run_tiff_batch([path])[str(path)]
    assert not outcome.startswith("other:")
