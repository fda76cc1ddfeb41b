"""Constants every tier shares: the repository root, the shared real-file corpus, fast Beam options."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # tests/support/env.py -> the checkout
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

# In-process runner (never the Prism download) and no credential lookup.
BEAM_TEST_ARGS = ["--runner=FnApiRunner", "--no_auth"]
