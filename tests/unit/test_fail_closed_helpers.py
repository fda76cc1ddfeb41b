"""Helpers behind issue 11, parts 6 and 7: a full disk is recognised however Beam wrapped it, a
failed scratch write leaves no file, and an unreadable input is named by a keyed path hash."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from apache_beam.io.filesystem import BeamIOError

from deid.errors import OutOfSpaceError
from deid.keys import DeidKey
from transforms.files import is_out_of_space, no_space_is_fatal
from transforms.slide_files import LocalScratch


def _chained() -> RuntimeError:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/out/.tmp/x.part")
        except OSError as inner:
            raise RuntimeError("step failed") from inner
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        OutOfSpaceError("no space left on OUTPUT [while running 'Dicom/Deidentify']"),
        BeamIOError("Rename operation failed", {("a", "b"): OSError(errno.ENOSPC, "No space left on device")}),
        RuntimeError("OSError: [Errno 28] No space left on device [while running 'WriteRecords/WriteFiles']"),
        _chained(),
    ],
)
def test_a_full_disk_is_recognised_however_it_is_wrapped(exc: BaseException) -> None:
    assert is_out_of_space(exc)


@pytest.mark.parametrize(
    "exc", [OSError(errno.EACCES, "Permission denied"), ValueError("no space left on device"), RuntimeError("boom")]
)
def test_other_failures_are_not_a_full_disk(exc: BaseException) -> None:
    assert not is_out_of_space(exc)


def test_no_space_is_fatal_turns_enospc_into_out_of_space_error() -> None:
    with pytest.raises(OutOfSpaceError), no_space_is_fatal():
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(PermissionError), no_space_is_fatal():
        raise PermissionError(errno.EACCES, "Permission denied")


def test_a_scratch_write_that_fails_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = LocalScratch(str(tmp_path))

    class FullDisk:
        """open() whose writes fail as on a full disk, after creating the file as a real one does."""

        def __init__(self, path: str, mode: str) -> None:
            self.handle = open(path, mode)  # noqa: SIM115 - closed in __exit__

        def __enter__(self) -> FullDisk:
            return self

        def __exit__(self, *_exc: object) -> None:
            self.handle.close()

        def write(self, _data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("transforms.slide_files.open", FullDisk, raising=False)  # only the module's open()
    with pytest.raises(OutOfSpaceError):
        scratch.put("slide/0/1_2", b"tile")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_the_path_id_is_keyed_stable_and_hides_the_path() -> None:
    key = DeidKey(b"k" * 32)
    assert key.path_id("ward7/JANE_DOE.dcm") == key.path_id("ward7/JANE_DOE.dcm")
    assert key.path_id("ward7/JANE_DOE.dcm") != DeidKey(b"j" * 32).path_id("ward7/JANE_DOE.dcm")
    assert len(key.path_id("a")) == 64 and "JANE" not in key.path_id("ward7/JANE_DOE.dcm")
