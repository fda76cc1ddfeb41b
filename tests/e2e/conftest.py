"""The whole pipeline: the CLI (pipeline.main.main, python -m pipeline.verify) or a subprocess run.

Every test collected under this folder carries the `e2e` marker (`pytest -m e2e`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.tiers import mark_items_under


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_items_under(Path(__file__).parent, "e2e", items)
