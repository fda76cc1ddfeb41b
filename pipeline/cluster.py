"""The launcher's side of an on-premises Dask cluster (`--runner=DaskRunner`, README "On-premises cluster").

`--runner=DaskRunner` (or Beam's full name, apache_beam.runners.dask.dask_runner.DaskRunner) runs
the pipeline on the `dask.distributed` cluster whose scheduler `--dask_client_address` names, with
`pipeline.dask_runner.DeidDaskRunner`. Before any work, `DaskCluster.connect` checks that:

- the `dask` extra is installed here (`pip install -e '.[dask]'`) and the scheduler answers with at
  least one worker;
- every worker runs the same code: the same Beam version and the same source of this package
  (`code_fingerprint`), so that no worker de-identifies by older rules;
- every local location the workers use is one they all see (`check_shared`): OUTPUT, the linkage
  prefix and the scratch directory are written to by the workers, so the launcher writes a probe
  file there and every worker must find it; one input file and the key file must be readable with
  the same size. A worker-local directory (the default scratch, this machine's temp directory)
  fails this as soon as the cluster spans more than one machine (machines are told apart by the
  workers' host names). gs:// locations are not probed.

The launcher stays the job's client: it waits for the job (a Dask job dies with its client),
reports its state and removes the run's staging and scratch as for a local run.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineRunner

from deid.errors import ConfigError
from deid.settings import RunSettings
from pipeline.options import DeidOptions
from transforms.files import TMP_DIR
from transforms.listing import input_pattern

DASK_RUNNER = "DaskRunner"
_DASK_NAMES = frozenset({DASK_RUNNER, "apache_beam.runners.dask.dask_runner.DaskRunner"})
_DASK_PREFIX = "--dask_"
# How long the launcher waits for the scheduler and for its first worker.
CONNECT_TIMEOUT_S = 30
_PROBE_ATTEMPTS = 3
_PACKAGES = ("deid", "transforms", "pipeline")
_LOG = logging.getLogger("deid")


def is_dask_runner(name: str | None) -> bool:
    return (name or "") in _DASK_NAMES


def _runner_in(argv: Sequence[str]) -> str | None:
    runner: str | None = PipelineOptions(list(argv)).view_as(StandardOptions).runner
    return runner


def check_dask_request(argv: Sequence[str]) -> None:
    """Before the options are checked: --runner=DaskRunner needs the dask extra (its import also
    declares Beam's --dask_* options), and a --dask_* option needs --runner=DaskRunner."""
    asked = is_dask_runner(_runner_in(argv))
    dask_args = any(arg.startswith(_DASK_PREFIX) for arg in argv)
    if not asked and not dask_args:
        return
    if not asked:
        raise ConfigError("--dask_* options need --runner=DaskRunner")
    try:
        importlib.import_module("pipeline.dask_runner")
    except ImportError:
        raise ConfigError("--runner=DaskRunner needs the dask extra: pip install -e '.[dask]'") from None


def code_fingerprint() -> str:
    """sha256 over the Beam version and every source file of this package (deid, transforms, pipeline)."""
    digest = hashlib.sha256(beam.__version__.encode())
    for package in _PACKAGES:
        root = Path(importlib.import_module(package).__file__ or "").parent
        for path in sorted(root.rglob("*.py")):
            digest.update(str(path.relative_to(root.parent)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class WorkerFacts:
    host: str
    code: str


def worker_facts() -> WorkerFacts:
    """Run on every worker by `DaskCluster.connect`."""
    return WorkerFacts(host=socket.gethostname(), code=code_fingerprint())


def file_size(path: str) -> int | None:
    """Run on every worker by `check_shared`: the size of a file, None when it cannot be seen."""
    try:
        return os.stat(path).st_size
    except OSError:
        return None


@dataclass(frozen=True)
class SharedPath:
    """A local location the workers use: `option` names it in messages, `written` says whether the
    workers write there (probed with a file the launcher writes) or only read a file there."""

    option: str
    path: str
    written: bool


class DaskCluster:
    """A connected client, its workers' host names and thread count, and the runner to use."""

    def __init__(self, client: Any, hosts: dict[str, str], threads: int) -> None:
        self.client = client
        self.hosts = hosts
        self.threads = threads

    @property
    def machines(self) -> int:
        return len(set(self.hosts.values()))

    @classmethod
    def connect(cls, options: PipelineOptions) -> DaskCluster:
        from distributed import Client  # the dask extra, checked by check_dask_request

        from pipeline.dask_runner import DaskOptions

        dask_options = options.view_as(DaskOptions)
        if not (dask_options.address or dask_options.scheduler_file):
            raise ConfigError(
                "--runner=DaskRunner needs --dask_client_address tcp://SCHEDULER:8786 (or --dask_scheduler_file)"
            )
        timeout = dask_options.timeout if isinstance(dask_options.timeout, int) else CONNECT_TIMEOUT_S
        try:
            client = Client(
                address=dask_options.address,
                scheduler_file=dask_options.scheduler_file,
                timeout=timeout,
                name=dask_options.name,
                connection_limit=dask_options.connection_limit,
                set_as_default=False,
            )
        except (OSError, TimeoutError, ValueError) as exc:
            raise ConfigError(
                f"cannot reach the Dask scheduler ({type(exc).__name__}); check --dask_client_address "
                "and that `dask scheduler` is running"
            ) from None
        try:
            return cls._checked(client, timeout)
        except BaseException:
            client.close()
            raise

    @classmethod
    def _checked(cls, client: Any, timeout: int) -> DaskCluster:
        try:
            client.wait_for_workers(1, timeout=timeout)
        except (OSError, TimeoutError):
            raise ConfigError("the Dask scheduler has no workers; start `dask worker SCHEDULER` on each machine") from None
        try:
            facts: dict[str, WorkerFacts] = client.run(worker_facts)
        except Exception as exc:  # noqa: BLE001 - a worker that cannot import this package says so here
            raise ConfigError(
                f"the Dask workers cannot run this pipeline's code ({type(exc).__name__}); install this "
                "package with its dask extra on every worker: pip install -e '.[dask]'"
            ) from None
        mine = code_fingerprint()
        different = sum(1 for fact in facts.values() if fact.code != mine)
        if different:
            raise ConfigError(
                f"{different} of {len(facts)} Dask workers run another version of this pipeline or of Beam; "
                "install the same version on every worker and restart them"
            )
        threads = sum(client.nthreads().values())
        return cls(client, {address: fact.host for address, fact in facts.items()}, threads)

    def check_shared(self, locations: Sequence[SharedPath]) -> None:
        """ConfigError naming the option when a worker cannot see a local location (see module doc)."""
        for location in locations:
            if "://" in location.path:
                continue
            blind = self._blind_workers(location)
            if blind:
                raise ConfigError(
                    f"--{location.option} is not on storage every Dask worker sees ({blind} of {len(self.hosts)} "
                    f"workers, on {self.machines} machine(s), cannot see it): use a directory that every worker "
                    "and this launcher mount at the same path (NFS, a cluster file system) or a gs:// location"
                )

    def _blind_workers(self, location: SharedPath) -> int:
        if not location.written:
            return self._count_blind(location.path, file_size(location.path))
        made = not os.path.isdir(location.path)
        os.makedirs(location.path, exist_ok=True)
        probe = os.path.join(location.path, f".deid-cluster-probe-{uuid.uuid4().hex}")
        try:
            with open(probe, "wb") as handle:
                handle.write(b"probe")
            return self._count_blind(probe, len(b"probe"))
        finally:
            with contextlib.suppress(OSError):
                os.remove(probe)
                if made:  # a refused run leaves no directory behind; the workers make it again
                    os.rmdir(location.path)

    def _count_blind(self, path: str, size: int | None) -> int:
        blind = len(self.hosts)
        for attempt in range(_PROBE_ATTEMPTS):  # a shared file system may show a new file late
            seen: dict[str, int | None] = self.client.run(file_size, path)
            blind = sum(1 for value in seen.values() if value is None or value != size)
            if not blind:
                return 0
            time.sleep(0.5 * (attempt + 1))
        return blind

    def runner(self, options: PipelineOptions) -> PipelineRunner:
        from pipeline.dask_runner import DeidDaskRunner, partitions_for

        return DeidDaskRunner(self.client, partitions_for(options, self.threads), self.describe())

    def describe(self) -> str:
        return f"{len(self.hosts)} Dask worker(s), {self.threads} thread(s), on {self.machines} machine(s)"

    def close(self) -> None:
        with contextlib.suppress(Exception):  # the run's own outcome is what counts
            self.client.close()


def shared_locations(options: DeidOptions, settings: RunSettings) -> list[SharedPath]:
    """The local locations the workers of this run use (gs:// ones are skipped by check_shared)."""
    locations = [
        SharedPath("output", FileSystems.join(settings.output, TMP_DIR), written=True),
        SharedPath("scratch_location", settings.scratch_location or tempfile.gettempdir(), written=True),
    ]
    if options.linkage_output:
        locations.append(SharedPath("linkage_output", options.linkage_output, written=True))
    if options.deid_key_file:
        locations.append(SharedPath("deid_key_file", options.deid_key_file, written=False))
    if options.input:
        found = FileSystems.match([input_pattern(options.input)], limits=[1])[0].metadata_list
        locations += [SharedPath("input", found[0].path, written=False)] if found else []
    return locations


def dask_runner_if_asked(options: PipelineOptions, settings: RunSettings) -> PipelineRunner | None:
    """For --runner=DaskRunner: connect, check the workers and the shared locations (ConfigError
    before any work), and return the runner, which closes the client when the job ends; else None."""
    if not is_dask_runner(options.view_as(StandardOptions).runner):
        return None
    cluster = DaskCluster.connect(options)
    try:
        cluster.check_shared(shared_locations(options.view_as(DeidOptions), settings))
        runner = cluster.runner(options)
    except BaseException:
        cluster.close()
        raise
    _LOG.info("running on %s", cluster.describe())
    return runner
