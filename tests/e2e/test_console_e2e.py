"""What a console shows, from the real commands in subprocesses: `python -m pipeline` at the default
log level (warnings, the progress line and the summary; none of Beam's INFO lines), and the
`deid-pipeline` console script's help (its own name, defaults) and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import dicom_factory
from tests.support.env import BEAM_TEST_ARGS, REPO_ROOT

CONSOLE_SCRIPT = Path(sys.executable).with_name("deid-pipeline")


def test_default_console_is_warnings_progress_and_summary(tmp_path: Path) -> None:
    inputs, output = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for number in (1, 2):
        (inputs / f"ct{number}.dcm").write_bytes(dicom_factory.to_bytes(dicom_factory.instance(1, number)))
    (inputs / "notes.txt").write_text("not an image\n")
    key = tmp_path / "deid.key"
    key.write_bytes(b"k" * 32)
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", f"--input={inputs}", f"--output={output}", f"--deid_key_file={key}",
         *BEAM_TEST_ARGS],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    err = done.stderr.splitlines()
    # Nothing but the progress (not a terminal: whole lines) and warnings: no INFO line of Beam's.
    assert err and all(line.startswith(("progress: ", "WARNING ")) for line in err), err
    assert err[-1].startswith("progress: 3/3 inputs done (1 dead-lettered), "), err
    assert not [line for line in err if line.startswith("WARNING apache_beam")], err
    out = done.stdout.splitlines()
    assert out[1:4] == [
        "inputs:            3 (dicom 2, unknown 1)",
        "de-identified:     2 inputs, 2 output files (dicom 2)",
        "dead-lettered:     1 (unsupported_format 1)",
    ]
    assert out[0].startswith("run ") and out[0].endswith(" (completed)")
    assert f"  DICOM:        {output}/dicom/" in out
    assert out[-1] == f"done: results under {output} (audit/, dead_letter/, dicom/, wsi/)"


def test_console_script_help_names_itself_and_shows_defaults() -> None:
    shown = subprocess.run([str(CONSOLE_SCRIPT), "--help"], capture_output=True, text=True, timeout=300, check=False)
    assert shown.returncode == 0
    text = " ".join(shown.stdout.split())
    assert text.startswith("usage: deid-pipeline --input INPUT --output OUTPUT [options]")
    assert "python -m pipeline" not in text
    assert "(default: 512)" in text and "(default: drop)" in text and "(default: WARNING)" in text
    # Errors are one line, and name the program as it was called.
    bad = subprocess.run([str(CONSOLE_SCRIPT), "--zzqx=1"], capture_output=True, text=True, timeout=300, check=False)
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == ["error: unknown option --zzqx; deid-pipeline --help lists the options"]
