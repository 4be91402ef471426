"""The import graphs: no circle, and layers that only point down (an import inside a function counts: hiding
one there is still one; so does an import under TYPE_CHECKING when it points up)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def dotted(path: Path, root: Path) -> str:
    """`search/study/stop.py` under `root` -> `search.study.stop` (a package's `__init__.py` -> the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path, tops: tuple[str, ...] = (), type_checking: bool = False) -> set[str]:
    """Modules of its own top-level package (and of `tops`) that `path` imports anywhere (functions included),
    except under `if TYPE_CHECKING:` unless `type_checking`; relative imports of any depth resolved, packages'
    `__init__` left out unless imported by name (`from blocks import ArchSpec`) from one of `tops`."""
    name = dotted(path, root)
    top = name.split(".")[0]
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    modules = {dotted(p, root) for p in (root / top).rglob("*.py") if p.stem != "__init__"}
    modules |= {dotted(p, root) for t in tops for p in (root / t).rglob("*.py")}
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test) and not type_checking:
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
        assert "search.storage" in graph["search.study.trial_loop"]
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


# The layers, lowest first: a module may import its own layer and those below it, never one above. A module is
# in the layer of the longest name here that is it or a package above it. A lower layer that needs something
# from above takes it as an argument (a callable, a value), as the trainer takes `on_batch`.
LAYERS: list[tuple[str, ...]] = [
    ("blocks",),  # the ResNet builder and its analytic counts: knows nothing of the search
    ("search", "search.errors", "search.yaml_load", "search.trials", "search.describe", "search.progress",
     "search.cli", "search.distributions", "search.contained", "search.names"),  # foundations: exceptions, YAML,
    # trial attribute names, progress, the results folder's containment rule, names bounded in bytes
    ("search.config",),  # the schema: every key with its default, parsing and value checks only
    ("search.data", "search.space", "search.rules", "search.baselines", "search.trainer", "search.threads",
     "search.checkpoint", "search.device", "search.optim", "search.ema", "search.probe", "search.dryrun",
     "search.storage", "search.dashboard", "search.checks"),  # the core: data, sampling, rules, training, Optuna's storage and artifacts
    ("search.objective",),  # one trial: sample, check, build, train, report
    ("search.study",),  # the study: its lock and identity, workers, signals, the trial loop
    ("search.review",),  # what a finished study is used for: report, retrain, predict
    ("search.run", "search.__main__"),  # the command line
]
# Upward imports not yet removed (issue 15): each is a (module, import) pair, and the list only shrinks.
KNOWN_UPWARD: set[tuple[str, str]] = set()


def layer(module: str) -> int:
    """The index in LAYERS of `module`'s layer (by the longest name that is it or a package above it)."""
    best = max((n for names in LAYERS for n in names if module == n or module.startswith(n + ".")), key=len)
    return next(i for i, names in enumerate(LAYERS) if best in names)


def upward(root: Path) -> set[tuple[str, str]]:
    """Every (module, imported module) pair under `root`'s blocks/ and search/ that points to a higher layer."""
    found = set()
    for top in ("blocks", "search"):
        for path in (root / top).rglob("*.py"):
            name = dotted(path, root)
            found |= {(name, m) for m in imports(path, root, ("blocks", "search"), type_checking=True)
                      if layer(m) > layer(name)}
    return found


def test_layers_only_point_down() -> None:
    assert upward(ROOT) == KNOWN_UPWARD


def test_every_module_has_a_declared_layer() -> None:
    named = {n for names in LAYERS for n in names}
    for top in ("blocks", "search"):
        for path in (ROOT / top).rglob("*.py"):
            name = dotted(path, ROOT)
            parents = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
            assert parents & named, f"{name} is in no layer of LAYERS: add it where it belongs"
    assert len(named) == sum(map(len, LAYERS))  # no name in two layers


@pytest.mark.parametrize("planted", ["def f():\n    from .study.stop import Stop\n",
                                     "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from search.run import main\n",
                                     "import search.review.report\n"])
def test_the_layer_check_sees_a_planted_upward_import(tmp_path: Path, planted: str) -> None:
    for top in ("blocks", "search"):
        for path in (ROOT / top).rglob("*.py"):
            copy = tmp_path / path.relative_to(ROOT)
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_text(path.read_text())
    trainer = tmp_path / "search" / "trainer.py"
    trainer.write_text(trainer.read_text() + "\n" + planted)
    found = upward(tmp_path) - upward(ROOT)
    assert len(found) == 1 and next(iter(found))[0] == "search.trainer", found
