"""The environment of a child process a test starts (`python -m search ...` as a user runs it)."""

import os
from pathlib import Path

from tests.helpers.spaces import ROOT


def child_env(root: Path = ROOT, **extra: str) -> dict[str, str]:
    """os.environ with `root` first on PYTHONPATH, so the child imports this tree's packages, and the inherited
    entries kept after it: where the dependencies themselves come from PYTHONPATH (the GPU machine's wheels are
    unpacked into a folder, not a venv), replacing PYTHONPATH left the child without optuna or fvcore."""
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, **extra, "PYTHONPATH": os.pathsep.join([str(root), *inherited])}
