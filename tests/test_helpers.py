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
        for name in names:  # tests.search.review.test_retrain, tests.conftest, test_workers, ...
            if any(part.startswith("test_") or part == "conftest" for part in name.split(".")):
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
               "def f():\n    from conftest import ROOT\nfrom tests.search.review.test_retrain import seed\n")
    assert imported_test_modules(planted) == {"test_workers", "test_workers.write_space", "tests.test_search",
                                              "tests.test_faults", "conftest", "conftest.ROOT",
                                              "tests.search.review.test_retrain",
                                              "tests.search.review.test_retrain.seed"}
    assert imported_test_modules("from tests.helpers.spaces import SPACE\nimport tests.helpers.studies\n") == set()
