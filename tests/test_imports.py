"""The package import graphs have no circle (an import inside a function counts: hiding one there is still a circle)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imports(path: Path, package: str) -> set[str]:
    """Sibling modules `path` imports anywhere (functions included), except under `if TYPE_CHECKING:`."""
    found: set[str] = set()
    modules = {p.stem for p in path.parent.glob("*.py")}

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # annotations only: never executed
            if isinstance(child, ast.ImportFrom):
                if child.level == 1 or (child.module or "").split(".")[0] == package:
                    parts = (child.module or "").split(".")
                    name = parts[0] if child.level == 1 else (parts[1] if len(parts) > 1 else "")
                    found.update([name] if name else [a.name for a in child.names])
            elif isinstance(child, ast.Import):
                found.update(a.name.split(".")[1] for a in child.names if a.name.startswith(package + "."))
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m in modules and m not in ("__init__", path.stem)}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


@pytest.mark.parametrize("package", ["search", "blocks"])
def test_no_import_circle(package: str) -> None:
    folder = ROOT / package
    graph = {p.stem: imports(p, package) for p in folder.glob("*.py") if p.stem != "__init__"}
    assert graph and circles(graph) == []


def test_the_check_sees_a_circle_hidden_in_a_function(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("from .b import f\n")
    (pkg / "b.py").write_text("def f():\n    from .a import g\n    return g\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import g\n")
    graph = {p.stem: imports(p, "pkg") for p in pkg.glob("*.py")}
    assert graph == {"a": {"b"}, "b": {"a"}, "c": set()} and circles(graph) == [["a", "b"]]
