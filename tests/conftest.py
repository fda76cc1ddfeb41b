"""Shared test set-up: fast local Beam runs and paths to the shared real-file corpus."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# google-auth probes the GCE metadata server when looking for credentials; offline that probe
# retries for ~26 s per process. Tests never need ambient credentials.
os.environ.setdefault("NO_GCE_CHECK", "True")
os.environ.setdefault("GCE_METADATA_HOST", "127.0.0.1:1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

# In-process runner (never the Prism download) and no credential lookup.
BEAM_TEST_ARGS = ["--runner=FnApiRunner", "--no_auth"]


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not beside this checkout")
    return SHARED_DATA


@pytest.fixture
def beam_args() -> list[str]:
    return list(BEAM_TEST_ARGS)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The GCS emulator and the fake Healthcare API (tests/gcs_emulator.py), one per test module."""
    from gcs_emulator import cloud_env

    with cloud_env(tmp_path_factory.mktemp("cloud")) as env:
        yield env


@pytest.fixture
def no_faults(cloud: Any) -> Iterator[None]:
    """Fault injection cleared before and after a test (modules opt in with usefixtures)."""
    cloud.healthcare.faults()
    yield
    cloud.healthcare.faults()
