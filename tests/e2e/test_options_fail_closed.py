"""Options that would make the run wrong stop it before any work: exit 2, one line naming the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.main import main
from tests.support import dicom_factory
from tests.support.env import BEAM_TEST_ARGS


@pytest.fixture
def one_input(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.dcm").write_bytes(dicom_factory.to_bytes(dicom_factory.instance(1, 1)))
    return folder


@pytest.mark.parametrize(
    ("bad", "named", "hint"),
    [
        (["--redact-text", "detect"], "--redact-text", "--redact_text"),
        (["--deid_keyfile", "K"], "--deid_keyfile", "--deid_key_file"),
        (["--retain_uid"], "--retain_uid", "--retain_uids"),
        (["--retain_uid=true"], "--retain_uid", "--retain_uids"),
        (["--zzqx=1"], "--zzqx", "--help"),
    ],
)
def test_a_misspelt_option_stops_the_run(
    one_input: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str], bad: list[str], named: str, hint: str
) -> None:
    out = tmp_path / "out"
    assert main(["--input", str(one_input), "--output", str(out), *bad, *BEAM_TEST_ARGS]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: unknown option {named}") and hint in err[0]
    assert not out.exists()  # no work was done


def test_beam_options_stay_accepted(one_input: Path, tmp_path: Path) -> None:
    beam_own = ["--project=p", "--region=europe-west4", "--temp_location", str(tmp_path / "t"), "--experiments=x"]
    assert main(["--input", str(one_input), "--output", str(tmp_path / "out"), *beam_own, *BEAM_TEST_ARGS]) == 0
    assert list((tmp_path / "out" / "dicom").rglob("*.dcm"))


def test_an_input_that_matches_nothing_stops_the_run(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    for missing in (tmp_path / "does" / "not" / "exist", tmp_path / "nothing*.dcm"):
        assert main(["--input", str(missing), "--output", str(out), *BEAM_TEST_ARGS]) == 2
        err = capfd.readouterr().err.strip().splitlines()
        assert err == ["error: --input matches no file; check the path or pattern"]
    assert not (out / "audit").exists()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (["--keep", "NotAKeyword"], "error: --keep names 'NotAKeyword', which is neither a tag nor a DICOM keyword"),
        (["--remove", "SOPInstanceUID"], "error: --remove names SOPInstanceUID (0008,0018), which every instance"),
    ],
)
def test_a_profile_list_that_cannot_apply_stops_the_run(
    one_input: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str], bad: list[str], message: str
) -> None:
    out = tmp_path / "out"
    assert main(["--input", str(one_input), "--output", str(out), *bad, *BEAM_TEST_ARGS]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message)
    assert not out.exists()
