"""The one rule for every folder the tool writes into or deletes from inside a results folder: it stays inside.

Files are already written through new temporary names and renamed (a link at a file's own name is replaced,
never followed). A link on the way to the file is another matter: `retrain/00003 -> /elsewhere` or
`checkpoints -> /elsewhere` would make `retrain --fresh` delete, and every write land, outside the results
folder. So each such folder is resolved (every link on the way followed) and refused unless it is the results
folder or lies inside it, before anything is created, written or deleted in it. A results folder that is itself
a link (to another disk) is fine: containment is judged against where it leads.
"""

from __future__ import annotations

from pathlib import Path

from .errors import UserError


def inside(results: Path, folder: Path) -> Path:
    """`folder` (under `results`), once checked to lead nowhere outside `results`; a UserError else, before any write."""
    root, real = Path(results).resolve(), Path(folder).resolve()  # strict=False: folders not made yet are fine
    if real != root and root not in real.parents:
        raise UserError(f"{folder} leads out of the results folder {results} (to {real}) through a link: "
                        f"nothing is written or deleted there; remove the link and rerun")
    return Path(folder)
