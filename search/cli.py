"""What every CLI shares: bad input becomes one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import optuna
import sqlalchemy

from blocks.text import drop_stdout, one_line

from .errors import UserError
from .names import too_long

STORAGE_ERRORS = (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError)  # the database failed
LINE_MAX = 1000  # characters of an error line: the values it echoes are cut already; this bounds the rest


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with its usage errors as one line and exit status 2, as every other bad input: argparse
    printed its whole usage block (up to ten lines) before the line that says what was wrong."""

    def error(self, message: str) -> NoReturn:
        """`error: MESSAGE (see 'PROG --help')` on stderr, then exit 2."""
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def bounded(line: str) -> str:
    """`line` with its middle elided past LINE_MAX (the start says where, the end what was expected)."""
    return line if len(line) <= LINE_MAX else f"{line[: LINE_MAX * 2 // 3]} ... {line[-LINE_MAX // 3:]}"


def python_command() -> str:
    """The interpreter running now, as a shell word for a printed next step: `.venv/bin/python` when it lies
    under the current folder, else its absolute path. A bare `python` fails for a user who never activated
    the venv the README installs into (ModuleNotFoundError: torch)."""
    exe = os.path.abspath(sys.executable)
    here = os.getcwd()
    inside = os.path.commonpath([exe, here]) == here
    return shlex.quote(os.path.relpath(exe, here) if inside else exe)


def say(line: str) -> None:
    """Print a line of a command's output; once its reader is gone (`| head` left), drop it instead of raising.

    The write that meets the closed pipe also brings a SIGPIPE, which a running search or retrain takes as a
    stop request (search.study.stop): it stops as for Ctrl-C, resumable, instead of failing where it printed.
    Flushed at once, so the closed pipe is met at the line written after it closed, not a buffer later.
    """
    try:
        print(line, flush=True)
    except BrokenPipeError:
        drop_stdout()


def main_guard(fn: Callable[[], Any]) -> int:
    """Run `fn`; UserError -> `error: ...` and exit 2; Ctrl-C -> a resume hint and exit 130.

    A database that fails mid-run (a server gone, a lock never released) -> one line and exit 1:
    the study keeps what was committed, and a rerun resumes it. A name too long for the file system, a full
    or read-only disk, a permission refused -> one line and exit 2.
    """
    if getattr(sys.stdout, "errors", None) == "strict":
        # An ASCII stdout (PYTHONIOENCODING=ascii, an old C locale) would raise UnicodeEncodeError at the first
        # file name it cannot encode; such a name is printed as `\udcff` instead. (Under a C locale Python
        # itself uses surrogateescape and writes the name's own bytes back.)
        sys.stdout.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    try:
        fn()
    except UserError as e:
        print(f"error: {bounded(one_line(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    except STORAGE_ERRORS as e:
        cause = e.__cause__ or e  # Optuna wraps the database's own error in a generic message
        print(f"error: study storage failed: {one_line(cause)}; rerun the same command to resume",
              file=sys.stderr)
        return 1
    except OSError as e:
        if (line := too_long(e)) is not None:  # a name a user gave, which no check above measured
            print(f"error: {line}", file=sys.stderr)
            return 2
        if e.errno in (28, 30, 13):  # no space left, read-only file system, permission denied
            print(f"error: {e.strerror}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
            return 2
        raise
    return 0
