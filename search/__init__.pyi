# The types of `import search` for mypy and editors: search/__init__.py finds search.api's names on first use
# (PEP 562 __getattr__, so that `import search` stays light), which a type checker cannot follow.
from pathlib import Path

from .api import DatasetSplits as DatasetSplits
from .api import Exported as Exported
from .api import Predictions as Predictions
from .api import Retrained as Retrained
from .api import SearchConfig as SearchConfig
from .api import UserError as UserError
from .api import dry_run as dry_run
from .api import export as export
from .api import load_config as load_config
from .api import predict as predict
from .api import report as report
from .api import retrain as retrain
from .api import run_search as run_search

SPACES_DIR: Path
API: tuple[str, ...]

def shipped_spaces() -> list[Path]: ...
def shipped_space(path: str) -> str: ...
