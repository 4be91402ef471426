"""Write a file whole or not at all, through a temporary file that nobody else can have prepared."""

from __future__ import annotations

import errno
import io
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, TextIO

# O_CREAT | O_EXCL fails on any existing name, a symbolic link included (POSIX: it is never followed), so
# the temporary file is always a new one of ours; its mode is 0o666 less the umask, as open() makes it.
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
_TRIES = 100  # random names to try before giving up (a clash takes 2**48 names in one folder)


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


def atomic_write_text(path: str | os.PathLike, text: str, fsync: bool = False) -> Path:
    """Write `text` (UTF-8) to `path` atomically, as atomic_write does."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")), fsync)


@contextmanager
def atomic_text(path: str | os.PathLike) -> Iterator[TextIO]:
    """A text file to fill (e.g. with csv.writer, newlines untranslated) that replaces `path` once the block ends."""
    buffer = io.StringIO(newline="")
    yield buffer
    atomic_write_text(path, buffer.getvalue())


def _create(path: Path) -> tuple[Path, int]:
    """A new temporary file beside `path` (`.<name>.<random>.tmp`), created exclusively: its path and fd."""
    for _ in range(_TRIES):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return tmp, os.open(tmp, _FLAGS, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no free temporary name for {path.name}", str(path.parent))


def open_lock_file(path: str | os.PathLike) -> BinaryIO:
    """Open (creating) a lock file for fcntl.flock without following a link planted at its name."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    return os.fdopen(fd, "r+b")
