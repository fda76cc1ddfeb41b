"""The whole pipeline on a Dask cluster (`--runner=DaskRunner`) gives what the in-process runner gives.

A `dask.distributed` LocalCluster with two worker processes on 127.0.0.1 runs the demo inputs
(DICOM studies, a slide, bad files) plus one instance whose kept ProtocolName repeats its file name
(so the leak check quarantines it); the FnApiRunner runs the same inputs with the same key. Both
must publish the same files byte for byte under the same names and write the same records. A
second cluster, whose second worker runs in its own UTS and mount namespace (another host name, a
scratch directory it does not share), must be refused before any work.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from distributed import Client, LocalCluster

from pipeline.cluster import DaskCluster, SharedPath
from pipeline.main import main
from tests.support import dicom_factory
from tests.support.env import BEAM_TEST_ARGS, REPO_ROOT

PUBLISHED = ("dicom", "wsi", "quarantine")
RECORDS = ("audit", "dead_letter")
# Two partitions per stage: every exchange still crosses both workers, with fewer tasks to schedule.
DASK_PARTITIONS = "--dask_npartitions=2"


def _demo_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_demo_data", REPO_ROOT / "scripts" / "make_demo_data.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dask-demo")
    _demo_module().main(str(root))
    leaking = dicom_factory.instance(series=7, number=1)
    leaking.ProtocolName = "Review for QUINTESSA ZQXWARBLE"  # kept by --keep, and the file's own name
    (root / "input" / "misc" / "QUINTESSA_ZQXWARBLE.dcm").write_bytes(dicom_factory.to_bytes(leaking))
    return root


def _cluster(workers: int) -> LocalCluster:
    return LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        scheduler_port=0,
        dashboard_address=None,
    )


def _args(demo: Path, output: Path, *extra: str) -> list[str]:
    return [
        "--input",
        str(demo / "input"),
        "--output",
        str(output),
        "--deid_key_file",
        str(demo / "demo.key"),
        "--keep",
        "ProtocolName",
        "--qa_report",
        *extra,
    ]


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def runs(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("dask-runs")
    local = _args(demo, root / "local", "--linkage_output", str(root / "local-linkage"), *BEAM_TEST_ARGS)
    assert main(local) == 0
    log = _Lines()
    logging.getLogger("deid").addHandler(log)
    cluster = _cluster(2)
    try:
        dask = _args(
            demo,
            root / "dask",
            "--linkage_output",
            str(root / "dask-linkage"),
            "--scratch_location",
            str(root / "scratch"),
            "--runner=DaskRunner",
            f"--dask_client_address={cluster.scheduler_address}",
            DASK_PARTITIONS,
        )
        status = main(dask)
    finally:
        logging.getLogger("deid").removeHandler(log)
        cluster.close()
    yield {"root": root, "status": status, "log": log.lines}


def _files(root: Path, folders: tuple[str, ...]) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for folder in folders
        for path in sorted((root / folder).rglob("*"))
        if path.is_file()
    }


def _records(output: Path, folder: str) -> bytes:
    (path,) = (output / folder).glob("*.jsonl")
    return path.read_bytes()


def test_dask_run_publishes_the_same_files_as_the_local_run(runs: dict[str, Any]) -> None:
    root = runs["root"]
    assert runs["status"] == 0
    local, dask = _files(root / "local", PUBLISHED), _files(root / "dask", PUBLISHED)
    assert sorted(dask) == sorted(local)
    assert any(name.startswith("dicom/") for name in local) and any(name.startswith("wsi/") for name in local)
    assert any(name.startswith("quarantine/") for name in local)
    different = [name for name in local if dask[name] != local[name]]
    assert different == []


def test_dask_run_writes_the_same_records(runs: dict[str, Any]) -> None:
    root = runs["root"]
    for folder in RECORDS:
        assert _records(root / "dask", folder) == _records(root / "local", folder), folder
    dead = [json.loads(line) for line in _records(root / "dask", "dead_letter").splitlines()]
    kinds = sorted(record["error_kind"] for record in dead)
    assert kinds == ["burned_in_annotation", "invalid_input", "invalid_input", "leak", "unsupported_format"]
    for table in ("uid_mapping.csv", "patient_id_mapping.csv"):
        local_rows = (root / "local-linkage" / table).read_bytes()
        assert (root / "dask-linkage" / table).read_bytes() == local_rows
        assert local_rows.count(b"\n") > 1
    manifests = {name: json.loads(next((root / name / "runs").glob("*.json")).read_text()) for name in ("local", "dask")}
    assert manifests["dask"]["outcome"] == "completed"
    assert manifests["dask"]["counts"] == manifests["local"]["counts"]


def test_dask_qa_page_shows_the_same_images(runs: dict[str, Any]) -> None:
    """The page's timings differ from run to run; its thumbnails and the inputs it lists do not."""
    pages = {name: (runs["root"] / name / "qa" / "index.html").read_text() for name in ("local", "dask")}
    images = {name: re.findall(r"data:image/png;base64,[A-Za-z0-9+/=]+", page) for name, page in pages.items()}
    hashes = {name: sorted(set(re.findall(r"\b[0-9a-f]{64}\b", page))) for name, page in pages.items()}
    assert images["dask"] == images["local"] and images["local"]
    assert hashes["dask"] == hashes["local"] and hashes["local"]


def test_dask_run_is_waited_for_and_cleans_up(runs: dict[str, Any]) -> None:
    root = runs["root"]
    assert any(line.startswith("running on 2 Dask worker(s), 2 thread(s), on 1 machine(s)") for line in runs["log"])
    assert any(line.startswith("the Dask job ended: DONE") for line in runs["log"])
    assert list((root / "dask" / ".tmp").iterdir()) == []  # staged instances and probes removed
    assert list((root / "scratch").iterdir()) == []  # the run's own scratch directory removed


def test_dask_options_without_the_runner_or_an_address_are_refused(
    demo: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert main(_args(demo, tmp_path / "a", "--dask_client_address=tcp://127.0.0.1:9", *BEAM_TEST_ARGS)) == 2
    assert main(_args(demo, tmp_path / "b", "--runner=DaskRunner")) == 2
    errors = [line for line in capfd.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: --dask_* options need --runner=DaskRunner",
        "error: --runner=DaskRunner needs --dask_client_address tcp://SCHEDULER:8786 (or --dask_scheduler_file)",
    ]


@pytest.fixture
def two_machines(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A scheduler, one worker here and one in its own UTS and mount namespace: host name
    `other-machine`, and an empty tmpfs over `masked` that only it sees."""
    if not shutil.which("unshare"):
        pytest.skip("unshare (util-linux) is not installed")
    masked = tmp_path / "masked"
    masked.mkdir()
    cluster = _cluster(1)
    command = 'hostname other-machine && mount -t tmpfs tmpfs "$1" && exec "$2" -m distributed.cli.dask_worker "$3" '
    command += "--no-nanny --nthreads 1 --host 127.0.0.1 --no-dashboard"
    worker = subprocess.Popen(
        ["unshare", "--uts", "--mount", "sh", "-c", command, "sh", str(masked), sys.executable, cluster.scheduler_address],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        with Client(cluster.scheduler_address, set_as_default=False) as client:
            try:
                client.wait_for_workers(2, timeout=60)
            except TimeoutError:
                reason = worker.stderr.read(300).decode(errors="replace") if worker.poll() is not None else ""
                pytest.skip(f"a worker in its own namespaces could not start here ({reason.strip()[:120]})")
        yield cluster.scheduler_address, masked
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        cluster.close()


def test_worker_local_locations_are_refused_on_two_machines(
    demo: Path, tmp_path: Path, two_machines: tuple[str, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    address, masked = two_machines
    dask = ["--runner=DaskRunner", f"--dask_client_address={address}"]
    assert main(_args(demo, tmp_path / "out1", "--scratch_location", str(masked / "scratch"), *dask)) == 2
    assert main(_args(demo, masked / "out2", *dask)) == 2
    errors = [line for line in capfd.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2
    assert errors[0].startswith("error: --scratch_location is not on storage every Dask worker sees (1 of 2 workers,")
    assert errors[1].startswith("error: --output is not on storage every Dask worker sees (1 of 2 workers,")
    assert all("on 2 machine(s)" in line for line in errors)
    assert not (tmp_path / "out1" / "audit").exists() and not list((masked / "scratch").iterdir())  # no work

    # What both machines see passes the same check.
    options = ["--runner=DaskRunner", f"--dask_client_address={address}", "--no_auth"]
    cluster = DaskCluster.connect(PipelineOptions(options))
    try:
        assert cluster.machines == 2
        cluster.check_shared([SharedPath("output", str(tmp_path / "shared"), written=True)])
        cluster.check_shared([SharedPath("input", str(next((demo / "input").rglob("*.svs"))), written=False)])
    finally:
        cluster.close()

