"""The project's exceptions: the one error type a user sees (a single line saying what is wrong and where),
and the stop a signal requests."""

from __future__ import annotations

import reprlib
from typing import Any

SHOWN_MAX = 120  # characters of a user's value echoed in an error (a 10 MB study name is not printed whole)
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, SHOWN_MAX, SHOWN_MAX, SHOWN_MAX
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 8


class UserError(Exception):
    """Bad input the user can fix (config, data, storage); printed as one line, exit status 2."""


class ResultsWriteError(UserError):
    """The results folder refused a write (a full or read-only disk): the trial stops as interrupted and resumes."""


class StopRequested(KeyboardInterrupt):
    """Raised at a safe point after a stop was requested; its message is the signal's name."""


def clip(text: str, limit: int = SHOWN_MAX) -> str:
    """`text` cut to `limit` characters, ending in `...` when cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown(value: Any, limit: int = SHOWN_MAX) -> str:
    """`repr(value)` for an error message, cut to about `limit` characters with `...` (never built whole)."""
    return clip(_REPR.repr(value), limit)  # reprlib stops at a depth and a length: a huge value costs nothing
