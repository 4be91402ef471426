"""Text files written whole (atomically, through blocks.atomic's temporary file) and outputs a user names."""

from __future__ import annotations

import errno
import io
import os
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from blocks.atomic import atomic_write, kind_name


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
                                    f"(a {kind_name(kind)})", str(path))
