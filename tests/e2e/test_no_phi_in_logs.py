"""The whole pipeline at DEBUG on inputs full of PHI: no PHI in logs, exceptions, records or streams."""

from __future__ import annotations

import io
import logging
import re
import warnings
from pathlib import Path

import pydicom
import pytest

from pipeline.verify import verify_tree
from tests.support.env import BEAM_TEST_ARGS
from tests.support.phi_fixtures import (
    ALL_PHI,
    BIRTH_DATE,
    phi_dataset,
    phi_dicom_bytes,
    write_phi_dicoms,
    write_phi_svs,
)

# Every PHI string of the fixtures holds 'ZQX'; dates are checked in their common spellings.
FORBIDDEN = re.compile(
    "|".join([re.escape(v) for v in ALL_PHI] + ["19520317", "1952-03-17", "03/17/1952"]), re.IGNORECASE
)


def _hostile_inputs(root: Path) -> None:
    write_phi_dicoms(root / "studies" / "ZQXNAME_ALPHA", 2)
    write_phi_svs(root / "slides" / "ZQXSLIDE_MRN-ZQX-4242.svs")
    misc = root / "misc"
    misc.mkdir()
    good = phi_dicom_bytes(7)
    (misc / "ZQXNAME_truncated.dcm").write_bytes(good[: len(good) // 2])
    (misc / "ZQXNAME_notes.txt").write_text("Patient ZQXNAME^ALPHA MRN-ZQX-4242\n")
    # Invalid values that libraries like to quote in warnings and exception texts.
    ds = phi_dataset(8)
    ds["PatientBirthDate"].value = "ZQXBADDATE-19520317"
    ds.add_new(0x00101010, "AS", "ZQXAGE")
    ds.add_new(0x00100040, "CS", "ZQX-NOT-A-CS-VALUE")
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    (misc / "ZQXNAME_invalid_values.dcm").write_bytes(buffer.getvalue())
    # A DICOM that claims huge dimensions (the limit message must not quote anything else).
    big = phi_dataset(9)
    big.Rows = big.Columns = 60000
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, big, enforce_file_format=True)
    (misc / "ZQXNAME_huge.dcm").write_bytes(buffer.getvalue())


def _log_text(records: list[logging.LogRecord]) -> str:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    parts = []
    for record in records:
        parts.append(formatter.format(record))  # includes exc_info and stack_info when present
        parts.append(repr(record.args))
    return "\n".join(parts)


def _files_text(root: Path, folders: tuple[str, ...]) -> dict[str, str]:
    found = {}
    for folder in folders:
        for path in (root / folder).rglob("*") if (root / folder).exists() else []:
            if path.is_file():
                found[str(path.relative_to(root))] = path.read_bytes().decode("latin-1")
    return found


def test_no_phi_in_logs_records_or_streams(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    from pipeline.main import main

    inp, out = tmp_path / "input", tmp_path / "output"
    _hostile_inputs(inp)
    key = tmp_path / "deid.key"
    key.write_bytes(b"0123456789abcdef0123456789abcdef")
    caplog.set_level(logging.DEBUG)
    logging.getLogger().setLevel(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        status = main(
            [f"--input={inp}", f"--output={out}", f"--deid_key_file={key}", "--log_level=DEBUG", *BEAM_TEST_ARGS]
        )
    streams = capfd.readouterr()
    assert status == 0, streams.err[-2000:]
    assert (out / "audit").exists(), "the run wrote no audit records"
    assert len(caplog.records) > 0  # DEBUG logging really was on

    sources = {
        "logs": _log_text(caplog.records),
        "warnings": "\n".join(f"{w.category.__name__}: {w.message}" for w in caught),
        "stdout": streams.out,
        "stderr": streams.err,
    }
    sources.update(_files_text(out, ("audit", "dead_letter", "qa")))
    leaking = sorted(name for name, text in sources.items() if FORBIDDEN.search(text))
    loggers = sorted({r.name for r in caplog.records if FORBIDDEN.search(_log_text([r]))})
    # Typical cause: a PCollection element whose repr shows an input path (Beam logs every
    # element at DEBUG): give such dataclass fields repr=False.
    assert not leaking, f"PHI found in: {leaking} (loggers: {loggers})"

    # Output names carry no PHI, and the binary outputs pass the leak scanner.
    for path in out.rglob("*"):
        assert not FORBIDDEN.search(str(path.relative_to(out))), "an output name holds PHI"
    assert verify_tree(str(inp), str(out)) == []
    assert BIRTH_DATE not in "".join(sources.values())
