"""The local Secret Manager stand-in (`python -m devtools.fake_secretmanager`) for tests.

    with fake_secret_manager(tmp_path, {"projects/p/secrets/k/versions/1": key_bytes}) as sm:
        sm.api        # --secret_manager_endpoint
        sm.env        # GOOGLE_APPLICATION_CREDENTIALS etc., throwaway credentials whose tokens come from sm

It listens on 127.0.0.1 on an ephemeral port and is stopped by its PID. Payloads go to the server
through files under `tmp_path`, never on its command line.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.support.env import REPO_ROOT
from tests.support.gcs_emulator import stop, throwaway_credentials


@dataclass
class FakeSecretManager:
    url: str
    process: subprocess.Popen[bytes]
    env: dict[str, str]

    @property
    def api(self) -> str:
        return self.url + "/v1"

    def faults(self, **faults: object) -> None:
        requests.post(self.url + "/_fake/faults", json=faults, timeout=10).raise_for_status()

    def requests_seen(self) -> list[dict[str, object]]:
        seen: list[dict[str, object]] = requests.get(self.url + "/_fake/requests", timeout=10).json()
        return seen

    def accesses(self) -> list[dict[str, object]]:
        """The versions.access calls that were answered 200."""
        return [r for r in self.requests_seen() if str(r["path"]).endswith(":access") and r["status"] == 200]


@contextlib.contextmanager
def fake_secret_manager(
    tmp_path: Path, versions: dict[str, bytes], disabled: tuple[str, ...] = ()
) -> Iterator[FakeSecretManager]:
    """Start the stand-in with these versions; yields it with an environment for google-auth."""
    payloads = tmp_path / "sm-payloads"
    payloads.mkdir(exist_ok=True)
    args = [sys.executable, "-m", "devtools.fake_secretmanager", "--port", "0"]
    for index, (name, data) in enumerate(versions.items()):
        path = payloads / f"{index}.bin"
        path.write_bytes(data)
        args += ["--version", f"{name}={path}"]
    for name in disabled:
        args += ["--disabled", name]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, cwd=REPO_ROOT)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode().strip()
        if not line.startswith("listening on "):
            raise RuntimeError("the fake Secret Manager did not start")
        url = line.removeprefix("listening on ")
        credentials = throwaway_credentials(tmp_path / "sm-throwaway-sa.json", url + "/token")
        env = {
            "GOOGLE_APPLICATION_CREDENTIALS": str(credentials),
            "GOOGLE_CLOUD_PROJECT": "local-test",
            "NO_GCE_CHECK": "True",
        }
        yield FakeSecretManager(url, process, env)
    finally:
        stop(process)


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """os.environ updated with `env` inside the block, restored after."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
