"""Shared test set-up: fast local Beam runs and paths to the shared real-file corpus.

Constants and helpers live in tests.support (`from tests.support.env import BEAM_TEST_ARGS`); this
file holds the fixtures every tier uses and checks that each test carries exactly one tier marker.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.env import BEAM_TEST_ARGS, SHARED_DATA
from tests.support.tiers import tier_problems

# google-auth probes the GCE metadata server when looking for credentials; offline that probe
# retries for ~26 s per process. Tests never need ambient credentials.
os.environ.setdefault("NO_GCE_CHECK", "True")
os.environ.setdefault("GCE_METADATA_HOST", "127.0.0.1:1")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """After the tier folders' conftests: a test outside tests/<tier>/ is a collection error."""
    problems = tier_problems(items)
    if problems:
        raise pytest.UsageError(
            "every test belongs in one tier folder (tests/unit, dofn, composite, e2e, deploy):\n  "
            + "\n  ".join(problems)
        )


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
    """The GCS emulator and the fake Healthcare API (tests/support/gcs_emulator.py), one per test module."""
    from tests.support.gcs_emulator import cloud_env

    with cloud_env(tmp_path_factory.mktemp("cloud")) as env:
        yield env


@pytest.fixture
def no_faults(cloud: Any) -> Iterator[None]:
    """Fault injection cleared before and after a test (modules opt in with usefixtures)."""
    cloud.healthcare.faults()
    yield
    cloud.healthcare.faults()
