"""The layering rules of ARCHITECTURE.md, checked: api/ and workers/ import shared/, never
each other; shared/ imports neither; workers never import Flask."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "shared": ("api", "workers", "flask"),
    "api": ("workers",),
    "workers": ("api", "flask"),
}


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_only_what_it_may(layer: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_roots(path) & set(FORBIDDEN[layer]))
        for path in (ROOT / layer).rglob("*.py")
        if imported_roots(path) & set(FORBIDDEN[layer])
    }
    assert offenders == {}
