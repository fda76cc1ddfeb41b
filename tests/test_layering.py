"""The domain layer (deid/) must never import Beam: it is what makes it testable without a runner."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

DEID = Path(__file__).resolve().parents[1] / "deid"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(DEID.rglob("*.py")), ids=lambda p: str(p.relative_to(DEID)))
def test_domain_module_does_not_import_beam_or_launcher(path: Path) -> None:
    bad = {n for n in _imports(path) if n.split(".")[0] in {"apache_beam", "pipeline", "transforms"}}
    assert not bad, f"{path.name} imports {sorted(bad)}: domain code must stay free of Beam"


def test_layering_check_sees_a_beam_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from apache_beam import io\nimport os\n")
    assert "apache_beam" in _imports(module)
