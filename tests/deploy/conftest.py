"""Deployment files: Dockerfile, lock, Flex Template metadata and scripts, Terraform.

Every test collected under this folder carries the `deploy` marker (`pytest -m deploy`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.tiers import mark_items_under


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_items_under(Path(__file__).parent, "deploy", items)
