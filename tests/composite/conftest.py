"""Composite transforms on a TestPipeline / beam.Pipeline with the in-process runner.

Every test collected under this folder carries the `composite` marker (`pytest -m composite`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.tiers import mark_items_under


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_items_under(Path(__file__).parent, "composite", items)
