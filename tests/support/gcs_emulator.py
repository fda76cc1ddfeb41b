"""Local stand-ins for Google Cloud, reusable by any test: a GCS emulator, the fake Healthcare API
(which also serves the OAuth token endpoint) and throwaway service-account credentials.

Every server listens on 127.0.0.1 on an ephemeral port and is stopped by its PID.

    with cloud_env(tmp_path) as cloud:          # emulator + token endpoint + credentials + env vars
        cloud.create_bucket("in")
        ...                                    # Beam's gs:// filesystem now talks to the emulator

Beam's GCS client (apache_beam/io/gcp/gcsio.py, `create_storage_client`) asks google-auth for default
credentials; offline, without a credentials file that lookup retries for ~26 s and then connects
anonymously. GOOGLE_APPLICATION_CREDENTIALS pointing at a throwaway service-account file whose
`token_uri` is our local token endpoint makes it succeed at once, in this process and in any
subprocess worker (they inherit the environment). google-cloud-storage then sends requests to
STORAGE_EMULATOR_HOST. The emulator (gcp-storage-emulator from PyPI) handles the JSON API, uploads,
listing, rewrite and the batch copy/delete Beam uses to finalise files.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.support.env import REPO_ROOT


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout_s: float = 30.0, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before answering {url}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise TimeoutError(f"nothing answered at {url} within {timeout_s} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate one server we started, by its PID; kill it if it does not exit."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@contextlib.contextmanager
def gcs_emulator(data_dir: Path) -> Iterator[str]:
    """Start gcp-storage-emulator on 127.0.0.1; yields its base URL (the STORAGE_EMULATOR_HOST value)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gcp_storage_emulator", "-d", str(data_dir), "start",
         "--host", "127.0.0.1", "--port", str(port), "--in-memory", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/storage/v1/b", process=process)
        yield url
    finally:
        stop(process)


@dataclass
class FakeHealthcareServer:
    url: str
    process: subprocess.Popen[bytes]

    @property
    def token_uri(self) -> str:
        return self.url + "/token"

    @property
    def api(self) -> str:
        return self.url + "/v1"

    def faults(self, **faults: object) -> None:
        requests.post(self.url + "/_fake/faults", json=faults, timeout=10).raise_for_status()

    def requests_seen(self) -> list[dict[str, str]]:
        seen: list[dict[str, str]] = requests.get(self.url + "/_fake/requests", timeout=10).json()
        return seen

    def info(self) -> dict[str, object]:
        info: dict[str, object] = requests.get(self.url + "/_fake/info", timeout=10).json()
        return info


@contextlib.contextmanager
def fake_healthcare(
    stores: list[str] = (),  # type: ignore[assignment]
    key_file: Path | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[FakeHealthcareServer]:
    """Start `python -m devtools.fake_healthcare` on an ephemeral 127.0.0.1 port."""
    args = [sys.executable, "-m", "devtools.fake_healthcare", "--port", "0"]
    for store in stores:
        args += ["--store", store]
    if key_file:
        args += ["--key_file", str(key_file)]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, cwd=REPO_ROOT, env={**os.environ, **(env or {})})
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode().strip()
        if not line.startswith("listening on "):
            raise RuntimeError("the fake Healthcare server did not start")
        yield FakeHealthcareServer(line.removeprefix("listening on "), process)
    finally:
        stop(process)


def throwaway_credentials(path: Path, token_uri: str, project: str = "local-test") -> Path:
    """A service-account key file (fresh RSA key, no real account) whose tokens come from `token_uri`."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": project,
                "private_key_id": "throwaway",
                "private_key": pem,
                "client_email": f"deid-test@{project}.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": token_uri,
            }
        )
    )
    return path


@dataclass
class CloudEnv:
    """The running stand-ins and the environment that points clients at them."""

    gcs_url: str
    healthcare: FakeHealthcareServer
    credentials: Path
    env: dict[str, str]

    def storage_client(self):  # type: ignore[no-untyped-def]
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(project="local-test", credentials=AnonymousCredentials())

    def create_bucket(self, name: str) -> None:
        self.storage_client().create_bucket(name)

    def upload(self, uri: str, data: bytes) -> None:
        bucket, _, name = uri.removeprefix("gs://").partition("/")
        self.storage_client().bucket(bucket).blob(name).upload_from_string(data)

    def list(self, prefix_uri: str) -> dict[str, bytes]:
        bucket, _, prefix = prefix_uri.removeprefix("gs://").partition("/")
        client = self.storage_client()
        return {
            f"gs://{bucket}/{blob.name}": blob.download_as_bytes() for blob in client.list_blobs(bucket, prefix=prefix)
        }


@contextlib.contextmanager
def cloud_env(
    tmp_path: Path,
    stores: list[str] = (),
    key_file: Path | None = None,  # type: ignore[assignment]
) -> Iterator[CloudEnv]:
    """GCS emulator + fake Healthcare API (+ token endpoint) + credentials, with os.environ set.

    The previous environment is restored on exit. Beam caches the credentials it found in the
    process, so all cloud tests of one process must use this same kind of throwaway file.
    """
    data_dir = tmp_path / "gcs-data"
    data_dir.mkdir(exist_ok=True)
    with gcs_emulator(data_dir) as gcs_url:
        gcs_env = {"STORAGE_EMULATOR_HOST": gcs_url}
        with fake_healthcare(stores, key_file, env=gcs_env) as server:
            credentials = throwaway_credentials(tmp_path / "throwaway-sa.json", server.token_uri)
            env = {
                **gcs_env,
                "GOOGLE_APPLICATION_CREDENTIALS": str(credentials),
                "GOOGLE_CLOUD_PROJECT": "local-test",
                "NO_GCE_CHECK": "True",
            }
            saved = {name: os.environ.get(name) for name in env}
            os.environ.update(env)
            try:
                yield CloudEnv(gcs_url, server, credentials, env)
            finally:
                for name, value in saved.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value

