"""--deid_key_secret: the job reads the pseudonym key from Secret Manager (the local stand-in), uses
it, and the key shows nowhere: not in a log (at DEBUG, where Beam logs element reprs), a stream, a
record, an output, the settings' repr or the pickled job graph. A refused secret stops the run at
start with one line (exit 2)."""

from __future__ import annotations

import base64
import bz2
import contextlib
import json
import logging
import re
import zlib
from collections.abc import Iterator
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.internal import pickler

from deid.keys import DeidKey
from pipeline.main import build_pipeline, main, pipeline_options_from_argv, settings_from_options
from pipeline.options import DeidOptions
from tests.support import dicom_factory
from tests.support.env import BEAM_TEST_ARGS
from tests.support.secret_manager import FakeSecretManager, environment, fake_secret_manager

SECRET = "projects/local-test/secrets/deid-key/versions/1"
# Printable, so that it can be searched for in text as well as in bytes.
KEY = b"e2e-secret-key-7f3a9c1d5b2e8f4a6c0d9e1b3a5f7c2d"


def key_forms(key: bytes) -> list[bytes]:
    """Every spelling of the key a leak could take: raw, base64 (both alphabets), hex."""
    return [key, base64.b64encode(key), base64.urlsafe_b64encode(key), key.hex().encode()]


def unpacked(blob: bytes, depth: int = 3) -> list[bytes]:
    """`blob` and every base64 run inside it decoded, and inflated when compressed, recursively:
    Beam's pickler writes DoFns into the graph as base64 of bz2- (or zlib-) compressed pickles."""
    found = [blob]
    if depth == 0:
        return found
    for run in re.findall(rb"[A-Za-z0-9+/]{40,}={0,2}", blob):
        for start in range(4):  # a run may begin with a protobuf length byte that looks like base64
            try:
                decoded = base64.b64decode(run[start:] + b"=" * (-len(run[start:]) % 4))
            except ValueError:
                continue
            found.append(decoded)
            for magic, inflate in ((b"BZh", bz2.decompress), (b"\x78", zlib.decompress)):
                if decoded.startswith(magic):
                    with contextlib.suppress(OSError, ValueError, zlib.error):
                        found += unpacked(inflate(decoded), depth - 1)
    return found


def holds_key(blob: bytes, key: bytes = KEY) -> bool:
    return any(form in part for part in unpacked(blob) for form in key_forms(key))


@pytest.fixture(scope="module")
def sm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeSecretManager]:
    with fake_secret_manager(tmp_path_factory.mktemp("sm"), {SECRET: KEY}) as server:
        yield server


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for index, ds in enumerate(dicom_factory.study()):
        (folder / f"{index}.dcm").write_bytes(dicom_factory.to_bytes(ds))
    return folder


def test_the_job_reads_the_key_from_secret_manager_and_never_shows_it(
    sm: FakeSecretManager,
    inputs: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    out, linkage = tmp_path / "out", tmp_path / "linkage"
    sm.faults()
    before = len(sm.accesses())
    caplog.set_level(logging.DEBUG)
    with environment(sm.env):
        status = main(
            [
                f"--input={inputs}",
                f"--output={out}",
                f"--linkage_output={linkage}",
                f"--deid_key_secret={SECRET}",
                f"--secret_manager_endpoint={sm.api}",
                *BEAM_TEST_ARGS,
            ]
        )
    streams = capfd.readouterr()
    assert status == 0, streams.err[-2000:]

    # The outputs are keyed with the secret's key: the study folder is that key's UID of the input's.
    assert (out / "dicom" / DeidKey(KEY).uid(dicom_factory.STUDY_UID)).is_dir()
    assert len(list((out / "dicom").rglob("*.dcm"))) == 4
    # Read by the launcher (before the run) and again by the workers in setup(), with a token.
    accesses = sm.accesses()[before:]
    assert len(accesses) >= 2 and all(a["authorized"] for a in accesses)
    assert "no --deid_key_file given" not in caplog.text  # no random key was made

    # Nowhere to be seen. DEBUG logging was on (Beam logs elements there).
    assert any(r.levelno == logging.DEBUG for r in caplog.records)
    logs = "\n".join(f"{r.name} {r.getMessage()} {r.args!r}" for r in caplog.records).encode()
    places = {"logs": logs, "stdout": streams.out.encode(), "stderr": streams.err.encode()}
    for root in (out, linkage):
        places.update({str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()})
    assert any(name.endswith(".jsonl") for name in places) and any(name.endswith("_mapping.csv") for name in places)
    assert [name for name, blob in places.items() if holds_key(blob)] == []
    manifest = json.loads(next((out / "runs").glob("*.json")).read_text())
    assert manifest["options"]["deid_key_secret"] is True  # recorded as given, not by name


def _graph(argv: list[str], key: DeidKey) -> tuple[bytes, bytes, str]:
    """(serialized job graph, pickled settings, repr of the settings) of a pipeline built, not run."""
    options = pipeline_options_from_argv(argv)
    settings = settings_from_options(options.view_as(DeidOptions), key)
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, options, settings)
    return pipeline.to_runner_api().SerializeToString(), pickler.dumps(settings), repr(settings)


def test_the_key_is_not_in_the_pickled_job_graph(inputs: Path, tmp_path: Path) -> None:
    common = [
        f"--input={inputs}",
        f"--output={tmp_path / 'out'}",
        f"--linkage_output={tmp_path / 'l'}",
        *BEAM_TEST_ARGS,
    ]
    graph, pickled, text = _graph([*common, f"--deid_key_secret={SECRET}"], DeidKey(KEY))
    # The search reaches inside the DoFns' pickles: the settings there name the secret version ...
    assert SECRET.encode() not in graph and SECRET.encode() in b"".join(unpacked(graph))
    assert not holds_key(graph) and not holds_key(pickled) and not holds_key(text.encode())  # ... never the key
    # And it finds a key that is there: a key generated for the run travels in the settings.
    generated = DeidKey.generate()
    options = pipeline_options_from_argv(common)
    with_token = settings_from_options(options.view_as(DeidOptions), generated)
    assert holds_key(pickler.dumps(with_token), generated.secret) and not holds_key(pickled, generated.secret)


@pytest.mark.parametrize(
    ("faults", "secret", "words"),
    [
        ({"forbidden": True}, SECRET, "HTTP 403 PERMISSION_DENIED: permission denied"),
        ({}, "projects/local-test/secrets/deid-key/versions/7", "HTTP 404 NOT_FOUND: not found"),
    ],
)
def test_a_refused_secret_stops_the_run_at_start_with_one_line(
    sm: FakeSecretManager,
    inputs: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    faults: dict[str, object],
    secret: str,
    words: str,
) -> None:
    out = tmp_path / "out"
    sm.faults(**faults)
    with environment(sm.env):
        status = main(
            [
                f"--input={inputs}",
                f"--output={out}",
                f"--deid_key_secret={secret}",
                f"--secret_manager_endpoint={sm.api}",
                *BEAM_TEST_ARGS,
            ]
        )
    sm.faults()
    err = capfd.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) == 1, err
    assert err[0].startswith(f"error: Secret Manager versions.access on {secret}: {words}")
    assert not out.exists()  # stopped before any work


def test_a_key_file_and_a_key_secret_exclude_each_other(inputs: Path, tmp_path: Path, capfd) -> None:
    key = tmp_path / "k"
    key.write_bytes(KEY)
    argv = [
        f"--input={inputs}",
        f"--output={tmp_path / 'out'}",
        f"--deid_key_file={key}",
        f"--deid_key_secret={SECRET}",
    ]
    assert main([*argv, *BEAM_TEST_ARGS]) == 2
    assert capfd.readouterr().err.strip().splitlines() == [
        "error: --deid_key_file and --deid_key_secret exclude each other; give one"
    ]
