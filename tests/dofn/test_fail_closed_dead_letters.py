"""A full disk never becomes a dead letter (issue 11, part 6): the dead-letter DoFn and the record
writer raise OutOfSpaceError instead, so the run fails (exit 1) rather than completing with inputs
wrongly refused; other failures still become records."""

from __future__ import annotations

import pytest

from deid.classify import InputRef
from deid.errors import OutOfSpaceError
from deid.records import DeadLetterRecord
from transforms.common import _ToDeadLetter
from transforms.records import _json_line

REF = InputRef(path="/in/a.dcm", size=10, sha256="ab" * 32, kind="dicom")


@pytest.mark.parametrize(
    ("exc_type", "exc_repr"),
    [
        (OSError, "OSError(28, 'No space left on device')"),
        (OSError, "[Errno 28] No space left on device: '/out/.tmp/1.part'"),
        (OutOfSpaceError, "no space left on OUTPUT (or on the scratch disk)"),
    ],
)
def test_a_full_disk_fails_the_dead_letter_step(exc_type: type[BaseException], exc_repr: str) -> None:
    fn = _ToDeadLetter()
    fn.setup()
    with pytest.raises(OutOfSpaceError):
        list(fn.process((REF, (exc_type, exc_repr, []))))


def test_other_failures_still_become_dead_letters() -> None:
    fn = _ToDeadLetter()
    fn.setup()
    (record,) = fn.process((REF, (PermissionError, "PermissionError(13, 'Permission denied')", [])))
    assert (record.input_sha256, record.error_kind) == (REF.sha256, "unexpected_error")


def test_the_record_writer_refuses_a_no_space_record() -> None:
    with pytest.raises(OutOfSpaceError):
        _json_line(DeadLetterRecord("ab" * 32, "no_space", "no space left"), "dead_letter")
    assert _json_line(DeadLetterRecord("ab" * 32, "invalid_input", "truncated"), "dead_letter")[0] == "dead_letter"
