"""DoFns called as Beam calls them: setup(), then process() per element, no runner.

Every test collected under this folder carries the `dofn` marker (`pytest -m dofn`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.tiers import mark_items_under


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_items_under(Path(__file__).parent, "dofn", items)
