"""The package's layers, kept by a test over every import (module level and inside functions):
workers never import hpo; the spec imports nothing else of hpo's layers; the store imports no
run or read code; the read side imports no run code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

# layer (folder) -> the hpo packages it must not import
RULES = {
    "workers": ("hpo",),
    "hpo/spec": ("hpo.store", "hpo.run", "hpo.read", "hpo.api", "hpo.cli"),
    "hpo/store": ("hpo.run", "hpo.read", "hpo.api", "hpo.cli"),
    "hpo/read": ("hpo.run", "hpo.api", "hpo.cli"),
    "hpo/run": ("hpo.read", "hpo.api", "hpo.cli"),
}


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("layer", sorted(RULES))
def test_layer_imports_stay_inside_their_bounds(layer):
    files = sorted((REPO / layer).rglob("*.py"))
    assert files
    broken = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in files for name in sorted(imports_of(path))
        if any(name == banned or name.startswith(banned + ".") for banned in RULES[layer])
    ]
    assert broken == []


def test_the_top_level_of_hpo_is_small():
    """Modules sit in their layer's package; the top holds only the doors (api, cli) and the
    few things every layer shares."""
    top = sorted(p.name for p in (REPO / "hpo").glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "api.py", "cli.py", "defaults.py", "errors.py", "progress.py"]


def test_the_cli_goes_through_the_api():
    """hpo.api is the one door: the CLI reaches no layer but through it (it only words what the
    API returns: hpo.progress tables, hpo.read.formats for JSON/CSV)."""
    used = {name for name in imports_of(REPO / "hpo" / "cli.py") if name.startswith("hpo.")}
    allowed = ("hpo.__version__", "hpo.api", "hpo.errors", "hpo.defaults", "hpo.progress", "hpo.read.formats")
    assert sorted(n for n in used if not any(n == a or n.startswith(a + ".") for a in allowed)) == []
