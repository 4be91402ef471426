"""The search side: config, sampling, budgets and rules, data, training, Optuna glue and CLIs.

The Python API (search.api) is reachable from here: `search.run_search(...)`, `search.retrain(...)`, ...
"""

import importlib
import os
from typing import Any

# albumentations asks PyPI for a newer version when imported; searches often run offline.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from pathlib import Path as _Path

# The example spaces: inside the package once installed (pyproject maps spaces/ to search/spaces), else the checkout's.
SPACES_DIR = next((d for d in (_Path(__file__).parent / "spaces", _Path(__file__).parent.parent / "spaces")
                   if d.is_dir()), _Path("spaces"))


def shipped_spaces() -> list[_Path]:
    """The example spaces shipped with the package, sorted by name."""
    return sorted(SPACES_DIR.glob("*.yaml"))


def shipped_space(path: str) -> str:
    """`path` when it exists, else the shipped example space it names (`smoke`, `spaces/smoke.yaml`)."""
    if _Path(path).exists():
        return path
    name = _Path(path).name
    for candidate in (SPACES_DIR / name, SPACES_DIR / f"{name}.yaml"):
        if candidate.is_file():
            return str(candidate)
    return path


# search.api's names, looked up on first use: `import search` stays light (no torch, no Optuna) for the CLI's
# --help, and this module imports nothing of the project, so it stays below every layer.
API = ("DatasetSplits", "Exported", "Predictions", "Retrained", "SearchConfig", "UserError", "dry_run", "export",
       "load_config", "predict", "report", "retrain", "run_search")


def __getattr__(name: str) -> Any:
    """search.run_search and the rest of search.api's names (PEP 562)."""
    if name in API:
        return getattr(importlib.import_module(f"{__name__}.api"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names with the API's."""
    return sorted([*globals(), *API])
