"""Short text for the command lines of blocks and search: counts (`1.23M`), bytes (`48 KiB`), one-line errors."""

from __future__ import annotations

import os
import sys
from importlib import metadata

TRACEBACK = "Traceback (most recent call last)"


def short_count(n: float | int | None, unit: str = "") -> str:
    """11689512 -> '11.69M'; 1.82e9 with unit ' FLOPs' -> '1.82 GFLOPs'; None -> '-'."""
    if n is None:
        return "-"
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{' ' if unit else ''}{prefix}{unit.strip()}"
    return f"{n:g}{unit}"


def short_bytes(n: float | int | None) -> str:
    """49152 -> '48 KiB'; 1.5 * 2**20 -> '1.5 MiB'; 100 -> '100 B'; None -> '-' (binary units, as SRAM sizes)."""
    if n is None:
        return "-"
    for scale, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(n) >= scale:
            return f"{n / scale:.4g} {unit}"
    return f"{n:g} B"


def version() -> str:
    """The installed distribution's version (or `unknown` in a bare checkout), for every `--version`."""
    try:
        return metadata.version("resnet-budget-search")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def one_line(error: BaseException | str) -> str:
    """An error message as one line: its first non-blank line, or the type name when it has none.

    A message that carries a traceback (a DataLoader worker wraps the worker's error that way) gives
    its last line, the error itself, without the exception's dotted class name.
    """
    text = str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(error).__name__ if isinstance(error, BaseException) else "unknown error"
    if TRACEBACK not in text:
        return lines[0]
    name, sep, message = lines[-1].partition(": ")
    return message if sep and "." in name and " " not in name else lines[-1]


def drop_stdout() -> None:
    """Point stdout at devnull once its reader has gone (BrokenPipeError): later lines are dropped, not raised.

    Python's signal docs: without this the interpreter's final flush at exit raises BrokenPipeError again.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
