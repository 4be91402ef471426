"""The tests' own layering: test modules share code through tests/helpers/ and never import one another."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imported_test_modules(source: str) -> set[str]:
    """Test modules (`test_*`, `conftest`, as `tests.x` or bare) that `source` imports anywhere, functions included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            leaf = parts[1] if parts[0] == "tests" and len(parts) > 1 else parts[0]
            if leaf.startswith("test_") or leaf == "conftest":
                found.add(name)
    return found


def test_no_test_module_imports_another() -> None:
    """Every test module, conftest.py and helper imports no test module (shared code lives in tests/helpers/)."""
    offenders = {str(p.relative_to(TESTS)): sorted(imported_test_modules(p.read_text()))
                 for p in sorted(TESTS.rglob("*.py"))}
    assert {path: found for path, found in offenders.items() if found} == {}


def test_a_planted_import_of_a_test_module_is_found() -> None:
    """The check sees every spelling of such an import, inside a function too, and passes the helpers."""
    planted = ("from test_workers import write_space\nimport tests.test_search\nfrom tests import test_faults\n"
               "def f():\n    from conftest import ROOT\n")
    assert imported_test_modules(planted) == {"test_workers", "test_workers.write_space", "tests.test_search",
                                              "tests.test_faults", "conftest", "conftest.ROOT"}
    assert imported_test_modules("from tests.helpers.spaces import SPACE\nimport tests.helpers.studies\n") == set()
