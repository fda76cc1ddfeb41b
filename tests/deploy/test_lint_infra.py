"""scripts/lint_infra.sh on a machine without the lint tools: one line per skipped step, `make test`
goes on; in CI (DEID_CI=1) a skipped step fails.

The script runs with a PATH that holds only the few commands it needs itself (no terraform, no
hadolint, shellcheck or checkov) and with a Python that cannot make the tools' virtualenv, which is
what a machine without the tools or without PyPI looks like to it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.support.env import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "lint_infra.sh"
# What the script itself calls outside bash's builtins.
NEEDED = ("bash", "dirname", "touch")
STEPS = ("hadolint Dockerfile", "checkov terraform/", "shellcheck", "terraform fmt -check")


def _bare_path(tmp_path: Path) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in NEEDED:
        found = shutil.which(name)
        assert found, f"{name} is needed to run the script"
        (bin_dir / name).symlink_to(found)
    return str(bin_dir)


def _lint(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": _bare_path(tmp_path),
        "HOME": str(tmp_path),
        "PYTHON": str(tmp_path / "no-python"),  # the tools' virtualenv cannot be made
        "LINT_VENV": str(tmp_path / "lint-venv"),
    }
    if ci:
        env["DEID_CI"] = "1"
    return subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False,
        executable=shutil.which("bash"),
    )


def test_missing_tools_are_one_line_skips_and_the_lint_passes(tmp_path: Path) -> None:
    done = _lint(tmp_path, ci=False)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    skips = [line for line in lines if ": SKIPPED: " in line]
    assert [line.split(": SKIPPED: ")[0] for line in skips] == [f"==> {step}" for step in STEPS]
    (terraform,) = [line for line in skips if "terraform fmt" in line]
    assert terraform == (
        "==> terraform fmt -check: SKIPPED: terraform is not installed "
        "(not on PyPI or Debian: install it from HashiCorp's releases)"
    )
    # Each skipped step is that one line: no header, no "ok", no "FAILED" for it.
    for step in STEPS:
        (only,) = [line for line in lines if line.startswith(f"==> {step}")]
        assert only.startswith(f"==> {step}: SKIPPED: ")
    # The tools' failed install is one line too, pointing at its log.
    (install,) = [line for line in lines if line.startswith("==> install lint tools")]
    assert "could not install checkov==" in install and "install.log" in install
    assert lines[-1] == f"infrastructure lint passed, with 4 step(s) skipped: {' '.join(STEPS)}"
    assert "FAILED" not in done.stdout + done.stderr


def test_a_skipped_step_fails_in_ci(tmp_path: Path) -> None:
    done = _lint(tmp_path, ci=True)
    assert done.returncode == 1
    assert "terraform fmt -check: SKIPPED: terraform is not installed" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == (
        f"infrastructure lint FAILED: in CI every step must run; skipped: {' '.join(STEPS)}"
    )


def test_ci_sets_the_ci_mode_and_runs_every_make_step() -> None:
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "export DEID_CI=1" in ci
    assert "MAKEFLAGS=-k make test" in ci and "make check-image-env" in ci
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "\ncheck-image-env:\n\tbash scripts/check_image_env.sh\n" in makefile
    # The slow image check is not part of `make test`.
    (test_line,) = [line for line in makefile.splitlines() if line.startswith("test:")]
    assert "check-image-env" not in test_line and "lint-infra" in test_line and "pytest" in test_line
    assert os.access(REPO_ROOT / "scripts" / "check_image_env.sh", os.R_OK)
