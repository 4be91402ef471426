"""What every CLI shares: bad input becomes one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import sys
from typing import Any, Callable

import optuna
import sqlalchemy

from blocks.text import one_line

from .errors import UserError

LINE_MAX = 1000  # characters of an error line: the values it echoes are cut already; this bounds the rest


def bounded(line: str) -> str:
    """`line` with its middle elided past LINE_MAX (the start says where, the end what was expected)."""
    return line if len(line) <= LINE_MAX else f"{line[: LINE_MAX * 2 // 3]} ... {line[-LINE_MAX // 3:]}"


def main_guard(fn: Callable[[], Any]) -> int:
    """Run `fn`; UserError -> `error: ...` and exit 2; Ctrl-C -> a resume hint and exit 130.

    A database that fails mid-run (a server gone, a lock never released) -> one line and exit 1:
    the study keeps what was committed, and a rerun resumes it.
    """
    try:
        fn()
    except UserError as e:
        print(f"error: {bounded(one_line(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as e:
        cause = e.__cause__ or e  # Optuna wraps the database's own error in a generic message
        print(f"error: study storage failed: {one_line(cause)}; rerun the same command to resume",
              file=sys.stderr)
        return 1
    except OSError as e:
        if e.errno in (28, 30, 13):  # no space left, read-only file system, permission denied
            print(f"error: {e.strerror}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
            return 2
        raise
    return 0
