"""Pure domain code (deid/, pipeline helpers, test doubles): no Beam pipeline, no DoFn lifecycle.

Every test collected under this folder carries the `unit` marker (`pytest -m unit`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.tiers import mark_items_under


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_items_under(Path(__file__).parent, "unit", items)
