"""The project's locks: a lock file (opened safely: never through a link, never a FIFO; then flock'ed), and
PostgreSQL's advisory lock where the study lives on a server.

Every lock goes through here: the study lock (beside an SQLite study, or advisory on PostgreSQL), the schema
lock that serialises table creation (likewise), and each trial's retrain lock. Both kinds are freed when their
holder dies (flock by the OS, an advisory lock with its session), so a killed run never leaves a stale lock.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
from typing import BinaryIO

import sqlalchemy

from blocks.atomic import regular_fd

from .errors import UserError

NOTE_BYTES = 200  # the most of a holder's note read back from a lock file


class LockHeld(Exception):
    """Another process holds the lock (only when not waiting); `holder` is the note it signed, or ''."""

    def __init__(self, holder: str):
        super().__init__(holder)
        self.holder = holder


def open_lock_file(path: str | os.PathLike) -> BinaryIO:
    """Open (creating) a lock file for fcntl.flock without following a link planted at its name, nor using a FIFO."""
    try:
        return os.fdopen(regular_fd(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)), "r+b")
    except OSError as e:
        if e.errno == errno.ELOOP and os.path.islink(path):  # O_NOFOLLOW's refusal reads "Too many levels of links"
            raise OSError(errno.ELOOP, "a symbolic link, which a lock is never opened through (it could lead "
                                       "anywhere); remove the link and rerun", str(path)) from None
        raise


def hold_lock(path: str | os.PathLike, what: str, *, wait: bool = True) -> BinaryIO:
    """Hold the lock file `path` exclusively until the returned file is closed (or release_lock).

    A UserError naming `what` ("the study lock") when it cannot be opened: a link planted at its name, a
    FIFO or another special file, no permission. With `wait` false, LockHeld when another process holds it.
    """
    try:
        f = open_lock_file(path)
    except OSError as e:
        raise UserError(f"cannot open {what} {path}: {e.strerror or e}") from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = " ".join(os.pread(f.fileno(), NOTE_BYTES, 0).decode(errors="replace").split())
        f.close()
        raise LockHeld(holder) from None
    except BaseException:
        f.close()
        raise
    return f


def sign_lock(f: BinaryIO) -> None:
    """Write who holds the lock into its file (`process PID on HOST`), for the message of a run refused by it."""
    fd = f.fileno()
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"process {os.getpid()} on {os.uname().nodename}".encode(), 0)


def release_lock(f: BinaryIO) -> None:
    """Release a lock taken by hold_lock and close its file (a child that inherited the file no longer holds it)."""
    fcntl.flock(f, fcntl.LOCK_UN)
    f.close()


def advisory_key(name: str) -> int:
    """pg_advisory_lock's key (one signed bigint) for a lock's name: the first 8 bytes of sha256(name)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def hold_advisory_lock(engine: sqlalchemy.engine.Engine, key: int) -> sqlalchemy.engine.Connection:
    """Block until this process holds PostgreSQL's advisory lock `key`, on a connection of its own (the lock lives
    as long as that session: the server frees it when the holder dies); release with release_advisory_lock."""
    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
    except BaseException:
        conn.close()
        raise
    return conn


def release_advisory_lock(conn: sqlalchemy.engine.Connection, key: int) -> None:
    """Release an advisory lock taken by hold_advisory_lock and close its connection."""
    try:
        conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    finally:
        conn.close()
