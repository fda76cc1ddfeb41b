"""The domain layer (deid/) must never import Beam: it is what makes it testable without a runner.

Test doubles (devtools/) stay outside the shipped package: no product module imports them and the
wheel does not include them.
"""

from __future__ import annotations

import ast
import runpy
from pathlib import Path
from unittest import mock

import pytest

from tests.support.env import REPO_ROOT

ROOT = REPO_ROOT
DEID = ROOT / "deid"
PRODUCT = ("deid", "transforms", "pipeline")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _product_modules() -> list[Path]:
    return sorted(path for package in PRODUCT for path in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", sorted(DEID.rglob("*.py")), ids=lambda p: str(p.relative_to(DEID)))
def test_domain_module_does_not_import_beam_or_launcher(path: Path) -> None:
    bad = {n for n in _imports(path) if n.split(".")[0] in {"apache_beam", "pipeline", "transforms"}}
    assert not bad, f"{path.name} imports {sorted(bad)}: domain code must stay free of Beam"


@pytest.mark.parametrize("path", _product_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_product_module_does_not_import_devtools(path: Path) -> None:
    bad = {n for n in _imports(path) if n.split(".")[0] in {"devtools", "tests"}}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}: test doubles are not shipped"


def test_layering_check_sees_a_beam_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from apache_beam import io\nimport os\nfrom devtools import discovery\n")
    assert {"apache_beam", "devtools"} <= _imports(module)


def test_wheel_packages_leave_devtools_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # find_packages() looks in the working directory
    with mock.patch("setuptools.setup") as fake_setup:
        runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    packages = set(fake_setup.call_args.kwargs["packages"])
    assert {"deid", "deid.cloud", "pipeline", "transforms"} <= packages
    assert not {p for p in packages if p.split(".")[0] in {"devtools", "tests", "scripts"}}, sorted(packages)
    assert (ROOT / "devtools" / "__init__.py").is_file()
