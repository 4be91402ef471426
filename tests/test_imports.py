"""The import contracts (pyproject.toml's [tool.importlinter], checked by `lint-imports`): layers that only point
down, blocks alone, no import circle. An import inside a function counts (hiding one there is still one), and so
does one under TYPE_CHECKING. Here: the tree keeps them, import-linter sees what is planted in a copy of it, and
every module has a declared layer."""

from __future__ import annotations

from pathlib import Path

import grimp
import pytest

from tests.helpers.layers import ROOT, contracts, copy_tree, declared_layers, lint_imports


def modules(top: str, root: Path = ROOT) -> list[str]:
    """Every module of package `top` under `root`, dotted (a package's `__init__.py` is the package)."""
    out = []
    for path in sorted((root / top).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def test_the_tree_keeps_every_contract() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {"layers", "blocks-alone", "no-circles"} <= set(contracts())


def test_every_module_has_a_declared_layer() -> None:
    """import-linter checks only the modules its layers name (and their submodules): a new module must be placed."""
    named = [n for names in declared_layers() for n in names]
    assert len(named) == len(set(named))  # no name in two layers
    for top in ("blocks", "search"):
        for name in modules(top):
            parents = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
            assert parents & set(named) or name == "search", f"{name} is in no layer of pyproject.toml's contract"


def test_the_search_package_root_imports_nothing_of_the_project() -> None:
    """`search/__init__.py` runs before any module of the package: it stays below all of them (no layer names it)."""
    graph = grimp.build_graph("search", "blocks", cache_dir=None)
    assert graph.find_modules_directly_imported_by("search") == set()


UPWARD = {  # id: (what is planted at the end of search/trainer.py, the module it imports from a higher layer)
    "in a function": ("def f():\n    from .study.stop import Stop\n", "search.study.stop"),
    "TYPE_CHECKING": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from search.run import main\n",
                      "search.run"),
    "plain": ("import search.review.report\n", "search.review.report"),
}


@pytest.mark.parametrize(("planted", "imported"), UPWARD.values(), ids=UPWARD.keys())
def test_the_layer_contract_sees_a_planted_upward_import(tmp_path: Path, planted: str, imported: str) -> None:
    root = copy_tree(tmp_path)
    trainer = root / "search" / "trainer.py"
    trainer.write_text(trainer.read_text() + "\n" + planted)
    done = lint_imports(root)
    assert done.returncode == 1 and "Layers point down BROKEN" in done.stdout, done.stdout + done.stderr
    assert f"search.trainer -> {imported}" in done.stdout, done.stdout
    assert "blocks knows nothing of the search KEPT" in done.stdout  # (an upward import closes a circle too)


HIDDEN = {  # id: search/data/planted_b.py's import of planted_a, which imports planted_b
    "in a function": "def f():\n    from . import planted_a\n",
    "TYPE_CHECKING": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .planted_a import X\n",
}


@pytest.mark.parametrize("hidden", HIDDEN.values(), ids=HIDDEN.keys())
def test_the_circle_contract_sees_a_hidden_circle(tmp_path: Path, hidden: str) -> None:
    root = copy_tree(tmp_path)
    (root / "search" / "data" / "planted_a.py").write_text("from .planted_b import Y\n\nX = 1\n")
    (root / "search" / "data" / "planted_b.py").write_text(hidden + "\nY = 2\n")
    done = lint_imports(root)
    assert done.returncode == 1 and "No import circle BROKEN" in done.stdout, done.stdout + done.stderr
    assert "No cycles are allowed in search.data" in done.stdout and ".planted_" in done.stdout, done.stdout
    assert "Layers point down KEPT" in done.stdout


def test_the_blocks_contract_sees_blocks_importing_the_search(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    (root / "blocks" / "text.py").write_text((root / "blocks" / "text.py").read_text() + "\nimport search\n")
    done = lint_imports(root)
    assert done.returncode == 1 and "blocks knows nothing of the search BROKEN" in done.stdout, done.stdout
    assert "blocks.text -> search" in done.stdout, done.stdout
