"""The Secret Manager client (`deid.cloud.secrets`) against the local stand-in, and the stand-in
against the official secretmanager v1 discovery document."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from deid.cloud.retry import Backoff
from deid.cloud.secrets import SecretAccessError, access_secret_version, check_secret_version_name
from deid.errors import ConfigError
from devtools import discovery
from devtools.fake_secretmanager import checked_response
from tests.support.secret_manager import FakeSecretManager, environment, fake_secret_manager

KEY = b"unit-test-pseudonym-key-0123456789abcdef"
V1 = "projects/local-test/secrets/deid-key/versions/1"
V2 = "projects/local-test/secrets/deid-key/versions/2"
DISABLED = "projects/local-test/secrets/retired-key/versions/1"
NO_RETRY = Backoff(attempts=1)


@pytest.fixture(scope="module")
def sm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeSecretManager]:
    versions = {V1: KEY, V2: KEY + b"-v2"}
    with fake_secret_manager(tmp_path_factory.mktemp("sm"), versions, disabled=(DISABLED,)) as server:
        yield server


@pytest.fixture
def env(sm: FakeSecretManager) -> Iterator[FakeSecretManager]:
    sm.faults()  # none
    with environment(sm.env):
        yield sm


def test_the_key_is_read_through_google_auth_and_the_rest_api(env: FakeSecretManager) -> None:
    before = len(env.accesses())
    assert access_secret_version(V1, env.api) == KEY
    seen = env.accesses()[before:]
    assert [r["path"] for r in seen] == [f"/v1/{V1}:access"]
    assert seen[0]["authorized"] is True  # a bearer token from the (local) token endpoint
    # `latest` is the most recent version; a trailing slash and spaces are forgiven.
    assert access_secret_version(" projects/local-test/secrets/deid-key/versions/latest/", env.api) == KEY + b"-v2"


@pytest.mark.parametrize(
    ("faults", "name", "status", "words"),
    [
        ({"forbidden": True}, V1, 403, "roles/secretmanager.secretAccessor"),
        ({}, "projects/local-test/secrets/deid-key/versions/9", 404, "not found"),
        ({}, "projects/local-test/secrets/other/versions/latest", 404, "not found"),
        ({}, DISABLED, 400, "disabled or destroyed"),
        ({"reject_tokens": True}, V1, 401, "credentials were rejected"),
    ],
)
def test_refusals_are_one_line_with_the_status_and_never_the_payload(
    env: FakeSecretManager, faults: dict[str, object], name: str, status: int, words: str
) -> None:
    env.faults(**faults)
    with pytest.raises(SecretAccessError) as caught:
        access_secret_version(name, env.api, retry=NO_RETRY)
    message = str(caught.value)
    assert caught.value.status == status
    assert isinstance(caught.value, ConfigError)  # the launcher turns it into exit status 2
    assert f"HTTP {status}" in message and words in message and name.strip() in message
    assert "\n" not in message and KEY.decode() not in message


def test_server_errors_are_retried_then_succeed(env: FakeSecretManager) -> None:
    env.faults(http_errors=[{"status": 503, "count": 2}])
    waits: list[float] = []
    before = len(env.requests_seen())
    assert access_secret_version(V1, env.api, retry=Backoff(attempts=4, initial_s=0.01), sleep=waits.append) == KEY
    assert [r["status"] for r in env.requests_seen()[before:]] == [503, 503, 200]
    assert len(waits) == 2


def test_a_payload_that_fails_its_checksum_is_refused(env: FakeSecretManager) -> None:
    env.faults(corrupt_checksum=True)
    with pytest.raises(SecretAccessError, match="CRC32C") as caught:
        access_secret_version(V1, env.api, retry=NO_RETRY)
    assert KEY.decode() not in str(caught.value)


def test_no_credentials_is_one_line(tmp_path: Path, env: FakeSecretManager) -> None:
    missing = {"GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "nope.json")}
    with environment(missing), pytest.raises(SecretAccessError, match="GOOGLE_APPLICATION_CREDENTIALS"):
        access_secret_version(V1, env.api, retry=NO_RETRY)


@pytest.mark.parametrize(
    "bad",
    ["", "deid-key", "projects/p/secrets/s", "projects/p/secrets/s/versions/", "https://x/v1/projects/p/secrets/s"],
)
def test_malformed_names_are_refused_without_echoing_them(bad: str) -> None:
    with pytest.raises(ConfigError, match="projects/P/secrets/S/versions/V") as caught:
        check_secret_version_name(bad)
    assert not bad or bad not in str(caught.value)


def test_the_stand_in_checks_requests_against_the_discovery_document(env: FakeSecretManager) -> None:
    headers = {"Authorization": "Bearer whatever"}
    # The verb of versions.access is GET; a POST to the same path is refused like the API does.
    post = requests.post(f"{env.api}/{V1}:access", headers=headers, timeout=10)
    assert post.status_code == 400 and post.json()["error"]["status"] == "INVALID_ARGUMENT"
    # Only the document's standard query parameters exist.
    odd = requests.get(f"{env.api}/{V1}:access", params={"version": "1"}, headers=headers, timeout=10)
    assert odd.status_code == 400 and "unknown query parameter" in odd.json()["error"]["message"]
    # A name that fits no method's pattern.
    wrong = requests.get(f"{env.api}/secrets/deid-key:access", headers=headers, timeout=10)
    assert wrong.status_code in (400, 404)
    # Another method of the document is recognised, just not implemented by the stand-in.
    token = requests.post(env.url + "/token", timeout=10).json()["access_token"]
    listed = requests.get(
        f"{env.api}/projects/local-test/secrets", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert listed.status_code == 501


def test_the_stand_in_answers_only_what_the_response_schema_allows() -> None:
    doc = discovery.document("secretmanager.v1")
    method = discovery.methods_of(doc)["secretmanager.projects.secrets.versions.access"]
    assert method["httpMethod"] == "GET" and method["path"] == "v1/{+name}:access"
    good = {"name": V1, "payload": {"data": base64.b64encode(KEY).decode(), "dataCrc32c": "123"}}
    assert checked_response("secretmanager.projects.secrets.versions.access", good) == good
    for bad in (
        {"name": V1, "payload": {"data": 5}},
        {"name": V1, "payload": {"data": "not base64!"}},
        {"name": V1, "payload": {"data": "", "dataCrc32c": "x"}},
        {"name": V1, "secret": "x"},
    ):
        with pytest.raises(RuntimeError, match="would not send"):
            checked_response("secretmanager.projects.secrets.versions.access", bad)
