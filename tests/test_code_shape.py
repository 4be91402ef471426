"""How the package's code is shaped: small functions, no private name shared, Optuna's internals in one module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 60  # a function longer than this does more than one job (issue 15)
PACKAGES = ("search", "blocks")
SOURCES = sorted([*(ROOT / "search").rglob("*.py"), *(ROOT / "blocks").rglob("*.py")])


def long_functions(paths: list[Path], root: Path = ROOT, limit: int = MAX_LINES) -> list[str]:
    """`path:name (n lines)` of every function (methods and nested ones included) longer than `limit` lines."""
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    found.append(f"{path.relative_to(root)}:{node.name} ({n} lines)")
    return found


def test_no_function_is_over_sixty_lines() -> None:
    assert long_functions(SOURCES) == []


def test_the_length_check_sees_a_long_nested_function(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("class A:\n    def f(self):\n        def g():\n" + "            x = 1\n" * MAX_LINES)
    assert long_functions([tmp_path / "a.py"], tmp_path) == [f"a.py:f ({MAX_LINES + 2} lines)",
                                                            f"a.py:g ({MAX_LINES + 1} lines)"]


def private_imports(path: Path) -> list[str]:
    """Names starting with `_` that `path` imports from a module of its own packages (`from x import _y`)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] in PACKAGES):
            out += [f"{path.relative_to(ROOT)}: {a.name}" for a in node.names if a.name.startswith("_")]
    return out


def test_no_private_name_is_imported_across_modules() -> None:
    assert [hit for p in SOURCES for hit in private_imports(p)] == []


# Optuna's private storage layer: its attributes and its tables (optuna/storages/_rdb/models.py).
OPTUNA_INTERNALS = re.compile(r"\._storage\b|\._trial_id\b|optuna\.storages\._|\btrial_heartbeats\b|\btrial_values\b")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_only_storage_py_touches_optuna_internals(path: Path) -> None:
    if path == ROOT / "search" / "storage.py":
        assert OPTUNA_INTERNALS.search(path.read_text())  # it is where they went
        return
    code = "\n".join(line.split("#")[0] for line in path.read_text().splitlines())  # comments may name them
    assert not OPTUNA_INTERNALS.search(code), f"{path.relative_to(ROOT)} reaches into Optuna: move it to storage.py"


def test_pyproject_names_the_module_that_holds_optuna_internals() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    named = re.findall(r"(search/[\w/]+\.py) reaches into", pyproject)
    assert named == ["search/storage.py"] and (ROOT / named[0]).is_file()
