"""Write a file whole or not at all, through a temporary file that nobody else can have prepared."""

from __future__ import annotations

import errno
import io
import os
import secrets
import stat
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, TextIO

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


def atomic_write_text(path: str | os.PathLike, text: str, fsync: bool = False) -> Path:
    """Write `text` (UTF-8) to `path` atomically, as atomic_write does.

    A file name that is not valid in the locale reaches Python as lone surrogates (PEP 383: b"\\xff" is
    "\\udcff"), which UTF-8 cannot encode: they are written as `\\udcff`, so the file stays valid UTF-8.
    """
    return atomic_write(path, lambda f: f.write(text.encode("utf-8", "backslashreplace")), fsync)


@contextmanager
def atomic_text(path: str | os.PathLike) -> Iterator[TextIO]:
    """A text file to fill (e.g. with csv.writer, newlines untranslated) that replaces `path` once the block ends."""
    buffer = io.StringIO(newline="")
    yield buffer
    atomic_write_text(path, buffer.getvalue())


def _create(path: Path) -> tuple[Path, int]:
    """A new temporary file beside `path` (`.<name>.<random>.tmp`), created exclusively: its path and fd."""
    for _ in range(_TRIES):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(_TOKEN)}.tmp")
        try:
            return tmp, os.open(tmp, _FLAGS, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no free temporary name for {path.name}", str(path.parent))


def open_lock_file(path: str | os.PathLike) -> BinaryIO:
    """Open (creating) a lock file for fcntl.flock without following a link planted at its name, nor using a FIFO."""
    try:
        return os.fdopen(_regular(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)), "r+b")
    except OSError as e:
        if e.errno == errno.ELOOP and os.path.islink(path):  # O_NOFOLLOW's refusal reads "Too many levels of links"
            raise OSError(errno.ELOOP, "a symbolic link, which a lock is never opened through (it could lead "
                                       "anywhere); remove the link and rerun", str(path)) from None
        raise


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """Open a file to read, refusing at once (OSError) anything but a regular file: a FIFO would block the read."""
    return os.fdopen(_regular(path, os.O_RDONLY), "rb")


def _regular(path: str | os.PathLike, flags: int) -> int:
    """os.open without blocking (O_NONBLOCK: a FIFO without a writer opens at once), then fstat: regular files only."""
    fd = os.open(path, flags | getattr(os, "O_NONBLOCK", 0), 0o666)
    kind = os.fstat(fd).st_mode
    if not stat.S_ISREG(kind):
        os.close(fd)
        raise OSError(errno.EINVAL, f"not a regular file (a {_KINDS.get(stat.S_IFMT(kind), 'special file')})", str(path))
    os.set_blocking(fd, True)  # reads and writes of a regular file never block anyway; keep the usual semantics
    return fd


_KINDS = {stat.S_IFIFO: "FIFO", stat.S_IFCHR: "character device", stat.S_IFBLK: "block device",
          stat.S_IFDIR: "folder", stat.S_IFSOCK: "socket"}


def write_output(path: str | os.PathLike, text: str) -> None:
    """Write `text` where a user pointed an output: `-` is stdout, a FIFO or character device (/dev/null, a
    terminal, /dev/stdout) is written as a stream, a regular file or new name atomically; nothing else.

    An existing FIFO or device is never renamed over (as root, replacing /dev/null with a regular file breaks
    the system); a link at the name is followed, since the user named it.
    """
    if str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        kind = os.stat(path).st_mode
    except FileNotFoundError:  # a new name (or a link to one): created
        kind = stat.S_IFREG
    if stat.S_ISFIFO(kind) or stat.S_ISCHR(kind):
        with open(path, "w", encoding="utf-8", errors="backslashreplace", newline="") as stream:  # a FIFO waits for its reader, as `>` does
            stream.write(text)
    elif stat.S_ISREG(kind):
        atomic_write_text(os.path.realpath(path), text)  # the link's target replaced, the link itself kept
    else:
        raise OSError(errno.EINVAL, f"not a regular file, a FIFO or a character device "
                                    f"(a {_KINDS.get(stat.S_IFMT(kind), 'special file')})", str(path))
