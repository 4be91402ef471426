"""One retrain run per trial folder at a time: an advisory lock file in the folder, held while the run uses it."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from ..errors import UserError
from ..locks import LockHeld, hold_lock, sign_lock

LOCK = ".retrain.lock"  # in each trial's retrain folder, held (flock) by the one retrain run using it


def lock_folder(folder: Path, locks: contextlib.ExitStack) -> None:
    """Hold `folder`'s retrain lock until `locks` closes; a UserError when another retrain run holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    try:  # a link planted at the lock's name, or a FIFO, is refused, never opened or waited on
        f = locks.enter_context(hold_lock(path, "the retrain lock", wait=False))  # closing it releases the lock
    except LockHeld as e:
        raise UserError(f"{folder} is being retrained by {e.holder or 'another process'}: one retrain of a trial "
                        f"at a time; wait for that run to end, or stop it") from None
    sign_lock(f)


def clear_folder(folder: Path) -> None:
    """--fresh: remove a trial's earlier retrain output, all but the lock this run holds in it."""
    for entry in folder.iterdir():
        if entry.name == LOCK:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
