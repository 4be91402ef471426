"""Write a file whole or not at all, through a temporary file that nobody else can have prepared; open only
regular files (a FIFO or a device is refused at once, never waited on)."""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

# O_CREAT | O_EXCL fails on any existing name, a symbolic link included (POSIX: it is never followed), so
# the temporary file is always a new one of ours; its mode is 0o666 less the umask, as open() makes it.
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
_TRIES = 100  # random names to try before giving up (a clash takes 2**48 names in one folder)
_TOKEN = 6  # random bytes in a temporary name, written as 12 hex digits
TEMP_EXTRA = len(f"..{'0' * 2 * _TOKEN}.tmp")  # bytes a temporary name adds to its file's: '.' + name + '.<hex>.tmp'


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object], fsync: bool = False) -> Path:
    """Write `path` through `write(file)`: into a new randomly named file beside it, then renamed over it.

    A kill mid-write leaves the previous file; a failed write (a full disk) removes the temporary file
    and raises. The rename replaces a link at `path` itself rather than writing through it.
    With `fsync`, the data is on disk before the rename.
    """
    path = Path(path)
    tmp, fd = _create(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _create(path: Path) -> tuple[Path, int]:
    """A new temporary file beside `path` (`.<name>.<random>.tmp`), created exclusively: its path and fd."""
    for _ in range(_TRIES):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(_TOKEN)}.tmp")
        try:
            return tmp, os.open(tmp, _FLAGS, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no free temporary name for {path.name}", str(path.parent))


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """Open a file to read, refusing at once (OSError) anything but a regular file: a FIFO would block the read."""
    return os.fdopen(regular_fd(path, os.O_RDONLY), "rb")


def regular_fd(path: str | os.PathLike, flags: int) -> int:
    """os.open without blocking (O_NONBLOCK: a FIFO without a writer opens at once), then fstat: regular files only."""
    fd = os.open(path, flags | getattr(os, "O_NONBLOCK", 0), 0o666)
    kind = os.fstat(fd).st_mode
    if not stat.S_ISREG(kind):
        os.close(fd)
        raise OSError(errno.EINVAL, f"not a regular file (a {kind_name(kind)})", str(path))
    os.set_blocking(fd, True)  # reads and writes of a regular file never block anyway; keep the usual semantics
    return fd


_KINDS = {stat.S_IFIFO: "FIFO", stat.S_IFCHR: "character device", stat.S_IFBLK: "block device",
          stat.S_IFDIR: "folder", stat.S_IFSOCK: "socket"}


def kind_name(mode: int) -> str:
    """What a file that is not a regular one is, from its st_mode: 'FIFO', 'folder', ... or 'special file'."""
    return _KINDS.get(stat.S_IFMT(mode), "special file")
