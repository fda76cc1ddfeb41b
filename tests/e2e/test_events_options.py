"""The event mode's options fail closed: one line on stderr and exit status 2, before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.main import main


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--input_subscription=projects/p/subscriptions/s", "--input=gs://b/in/"], "--input_subscription: expected"),
        (["--input_subscription=projects/my-project/subscriptions/uploads"], "--input is required"),
        (["--watch", "--input={input}", "--settle_seconds=5", "--watch_interval=5"], "must exceed --watch_interval"),
        (["--watch", "--input={input}", "--linkage_output={tmp}/linkage"], "--linkage_output cannot be used"),
        (["--watch", "--input={input}", "--runner=SparkRunner"], "runs locally (no --runner) or on Dataflow"),
    ],
)
def test_bad_event_options_are_one_line_errors(
    extra: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "in").mkdir()
    args = [a.format(input=tmp_path / "in", tmp=tmp_path) for a in extra]
    assert main([*args, f"--output={tmp_path / 'out'}", "--no_auth"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "out" / "audit").exists()
