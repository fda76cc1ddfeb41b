"""One marker per test tier, given by the folder a test lives in (tests/<tier>/)."""

from __future__ import annotations

from pathlib import Path

import pytest

TIERS = ("unit", "dofn", "composite", "e2e", "deploy")


def mark_items_under(folder: Path, tier: str, items: list[pytest.Item]) -> None:
    """Add the `tier` marker to the items collected below `folder`.

    pytest calls every conftest's pytest_collection_modifyitems with all the session's items, so each
    tier folder's conftest marks only its own.
    """
    assert tier in TIERS, tier
    for item in items:
        if item.path.is_relative_to(folder):
            item.add_marker(getattr(pytest.mark, tier))


def tier_problems(items: list[pytest.Item]) -> list[str]:
    """Items without exactly one tier marker (a test file outside the tier folders, or a stray decorator)."""
    problems = []
    for item in items:
        tiers = sorted({mark.name for mark in item.iter_markers() if mark.name in TIERS})
        if len(tiers) != 1:
            problems.append(f"{item.nodeid}: tier markers {tiers or 'none'}")
    return problems
