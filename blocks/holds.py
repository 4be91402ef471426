"""What a file read back must hold, said as a small shape and checked in one call: a file that loads is not trusted.

`torch.load(weights_only=True)` and `json.loads` stop code, not content: an optimiser state of `{}`, a history of
20 epochs in a 6-epoch study or a JSON list where a record was expected all load. Every reader states the shape of
what it reads (types, keys, lengths, the design it belongs to) and calls `problem` or `require` before using it.
A shape is one of:
  - a type or a tuple of types: isinstance (a bool is not a number here, though Python says it is an int);
  - a dict {key: shape}: a dict holding every key (more are allowed), each value of its shape; `Maybe(shape)`
    marks a key that may be absent;
  - a list [shape]: a list whose every item holds the shape;
  - `Check(shape, ok, what)`: the shape, then a rule no type says (`ok(value)` true), `what` naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

Number = (int, float)  # JSON and torch.save write both; bool is refused separately


@dataclass(frozen=True)
class Maybe:
    """A dict key that may be absent; when present, its value holds `shape`."""

    shape: Any


@dataclass(frozen=True)
class Check:
    """`shape`, then `ok(value)`: a rule beyond types (a length, a range, the design it belongs to)."""

    shape: Any
    ok: Callable[[Any], bool]
    what: str  # what the value must be, completing "X is not ...": "at most 6 epochs numbered from 1"


class Malformed(ValueError):
    """A value read back that does not hold its shape: one line naming where in it and what was expected."""


def problem(value: Any, shape: Any, at: str = "") -> str | None:
    """Why `value` does not hold `shape` (one line naming the place inside it, `at` its name so far), or None."""
    where = at or "it"
    if isinstance(shape, Check):
        return problem(value, shape.shape, at) or (None if _ok(shape, value) else f"{where} is not {shape.what}")
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return f"{where} is {_a(value)}, not a dict"
        for key, sub in shape.items():
            if key not in value:
                if isinstance(sub, Maybe):
                    continue
                return f"{where} has no {key!r}"
            why = problem(value[key], sub.shape if isinstance(sub, Maybe) else sub, f"{at}.{key}" if at else key)
            if why:
                return why
        return None
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f"{where} is {_a(value)}, not a list"
        return next((w for i, v in enumerate(value) if (w := problem(v, shape[0], f"{at}[{i}]"))), None)
    types = shape if isinstance(shape, tuple) else (shape,)
    if shape is object or (isinstance(value, types) and not (isinstance(value, bool) and bool not in types)):
        return None
    return f"{where} is {_a(value)}, not {' or '.join(_name(t) for t in types)}"


def require(value: Any, shape: Any, at: str = "") -> Any:
    """`value` when it holds `shape`; Malformed (its one-line reason) else."""
    why = problem(value, shape, at)
    if why:
        raise Malformed(why)
    return value


def like(example: Any, need: tuple[str, ...] | None = None) -> Any:
    """The shape of a value made like `example` (a fresh optimiser's or schedule's state): keys and kinds, not values.

    `need`: the keys of a dict `example` that must be there; the others may be absent (another PyTorch's state).
    """
    if isinstance(example, dict):
        return {k: like(v) if need is None or k in need else Maybe(like(v)) for k, v in example.items()}
    if isinstance(example, (list, tuple)):
        return (list, tuple)  # lengths and items vary (a schedule's milestones, an optimiser's betas)
    if isinstance(example, bool):
        return bool
    if isinstance(example, Number):
        return Number
    if isinstance(example, torch.Tensor):
        return torch.Tensor
    if isinstance(example, str):
        return str
    return object  # None, or a callable a schedule keeps: anything may stand there


def tensor(shape: tuple[int, ...] | torch.Size, dtype: torch.dtype | None = None) -> Check:
    """A tensor of this shape (and dtype, when given)."""
    size = "x".join(map(str, shape)) or "scalar"
    return Check(torch.Tensor, lambda t: tuple(t.shape) == tuple(shape) and dtype in (None, t.dtype),
                 f"a {size} {str(dtype).removeprefix('torch.') + ' ' if dtype else ''}tensor")


def _ok(check: Check, value: Any) -> bool:
    """The rule's verdict; a rule that trips over the value (a wrong type deep inside) says no."""
    try:
        return bool(check.ok(value))
    except (TypeError, KeyError, AttributeError, ValueError, IndexError):
        return False


def _a(value: Any) -> str:
    """`a str`, `a list of 3`, `None`: what a value is, for a message."""
    if value is None:
        return "None"
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    size = f" of {len(value)}" if isinstance(value, (list, dict, str)) else ""
    return f"a {type(value).__name__}{size}"


def _name(t: type) -> str:
    """A type's name in a message (Tensor, dict, int)."""
    return t.__name__
