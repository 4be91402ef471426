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


# The command line: argparse over the typed functions (issue 30); a library module takes typed arguments only.
CLI_MODULES = ("search/run.py", "search/__main__.py", "search/commands.py", "search/cli.py")  # cli.py: the parser


def argparse_imports(paths: list[Path], root: Path = ROOT) -> list[str]:
    """The path of every module that imports argparse (`import argparse`, `from argparse import ...`, in a
    function too)."""
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            if any(name.split(".")[0] == "argparse" for name in names):
                found.append(str(path.relative_to(root)))
                break
    return found


def test_only_the_command_line_imports_argparse() -> None:
    found = argparse_imports([p for p in SOURCES if p.is_relative_to(ROOT / "search")])
    assert [m for m in found if m not in CLI_MODULES] == [], "parse arguments in search/commands.py"


def test_the_argparse_check_sees_an_import_in_a_function(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("def f():\n    from argparse import Namespace\n")
    (tmp_path / "b.py").write_text("import argparse as ap\n")
    (tmp_path / "c.py").write_text("from . import argparse_like\nimport argparsex\n")
    paths = [tmp_path / n for n in ("a.py", "b.py", "c.py")]
    assert argparse_imports(paths, tmp_path) == ["a.py", "b.py"]
