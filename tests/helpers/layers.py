"""The import contracts of pyproject.toml ([tool.importlinter]) and `lint-imports`, run on a tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.helpers.processes import child_env

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")  # import-linter's command, from the test extra


def contracts(root: Path = ROOT) -> dict[str, dict]:
    """The import-linter contracts of `root`'s pyproject.toml, by id."""
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["id"]: c for c in config["contracts"]}


def declared_layers(root: Path = ROOT) -> list[tuple[str, ...]]:
    """The layers contract's module names, one tuple per layer, lowest first (the contract lists highest first)."""
    layers = contracts(root)["layers"]["layers"]
    return [tuple(name.strip() for name in layer.split(":")) for layer in reversed(layers)]


def copy_tree(to: Path) -> Path:
    """blocks/, search/ and pyproject.toml copied under `to` (no caches), for a test to plant imports in."""
    for top in ("blocks", "search"):
        shutil.copytree(ROOT / top, to / top, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", to / "pyproject.toml")
    return to


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` run in `root` on the packages there (not on an installed copy), without a cache."""
    env = child_env(root)
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)
