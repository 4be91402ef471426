"""One retrain run per trial folder at a time: an advisory lock file in the folder, held while the run uses it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from pathlib import Path

from blocks.atomic import open_lock_file

from ..errors import UserError

LOCK = ".retrain.lock"  # in each trial's retrain folder, held (flock) by the one retrain run using it


def lock_folder(folder: Path, locks: contextlib.ExitStack) -> None:
    """Hold `folder`'s retrain lock until `locks` closes; a UserError when another retrain run holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    try:  # a link planted at the lock's name, or a FIFO, is refused, never opened or waited on
        fd = locks.enter_context(open_lock_file(path)).fileno()  # closing it releases the lock, as an exit does
    except OSError as e:
        raise UserError(f"cannot open the retrain lock {path}: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = " ".join(os.pread(fd, 200, 0).decode(errors="replace").split()) or "another process"
        raise UserError(f"{folder} is being retrained by {holder}: one retrain of a trial at a time; "
                        f"wait for that run to end, or stop it") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"process {os.getpid()} on {os.uname().nodename}".encode(), 0)


def clear_folder(folder: Path) -> None:
    """--fresh: remove a trial's earlier retrain output, all but the lock this run holds in it."""
    for entry in folder.iterdir():
        if entry.name == LOCK:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
