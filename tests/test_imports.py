"""The package import graphs have no circle (an import inside a function counts: hiding one there is still a circle)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def dotted(path: Path, root: Path) -> str:
    """`search/study/stop.py` under `root` -> `search.study.stop` (a package's `__init__.py` -> the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path) -> set[str]:
    """Modules of its own top-level package that `path` imports anywhere (functions included), except under
    `if TYPE_CHECKING:`; relative imports of any depth resolved, packages' `__init__` left out."""
    name = dotted(path, root)
    top = name.split(".")[0]
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    modules = {dotted(p, root) for p in (root / top).rglob("*.py") if p.stem != "__init__"}
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # annotations only: never executed
            if isinstance(child, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - (child.level - 1)] if child.level else []
                target = ".".join(base + ([child.module] if child.module else []))
                found.update([target] + [f"{target}.{a.name}" for a in child.names])  # a module, or modules from it
            elif isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m in modules and m != name}


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
    files = [p for p in (ROOT / package).rglob("*.py") if p.stem != "__init__"]
    graph = {dotted(p, ROOT): imports(p, ROOT) for p in files}
    assert graph and circles(graph) == []
    if package == "search":  # the subpackages are in the graph, and seen importing the core and each other
        assert "search.objective" in graph["search.study.trial_loop"]
        assert "search.study.storage" in graph["search.study.trial_loop"]
        assert "search.review.report_figures" in graph["search.review.report"]  # `from . import report_figures`


def test_the_check_sees_a_circle_hidden_in_a_function(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub.b import f\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import g\n    return g\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import g\n")
    (pkg / "d.py").write_text("from pkg.sub import b\nimport pkg.c\n")
    graph = {dotted(p, tmp_path): imports(p, tmp_path) for p in pkg.rglob("*.py") if p.stem != "__init__"}
    assert graph == {"pkg.a": {"pkg.sub.b"}, "pkg.sub.b": {"pkg.a"}, "pkg.c": set(), "pkg.d": {"pkg.sub.b", "pkg.c"}}
    assert circles(graph) == [["pkg.a", "pkg.sub.b"]]
