"""Shared test set-up: fast local Beam runs and paths to the shared real-file corpus."""

from __future__ import annotations

import os
from pathlib import Path

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
