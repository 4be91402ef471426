"""Searched values: `{int: [lo, hi]}`, `{float: [lo, hi]}` (optional step or log) or `{choice: [...]}`, and their checks.

The one place that knows how a YAML distribution is written and checked, and how it asks an Optuna
trial for a value; config, space, rules and baselines import it, and it imports none of them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import UserError, shown

if TYPE_CHECKING:  # (optuna itself is imported only by what runs trials)
    from optuna.trial import BaseTrial


@dataclass(frozen=True)
class Dist:
    """A searched value: `{int: [lo, hi]}`, `{float: [lo, hi]}` (optional step/log) or `{choice: [...]}`."""

    kind: str  # int | float | choice
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple = ()

    def suggest(self, trial: BaseTrial, name: str) -> Any:
        """Ask the Optuna trial for a value under the stable parameter name `name`."""
        if self.kind == "choice":
            return trial.suggest_categorical(name, list(self.choices))
        low, high = self.bounds()
        if self.kind == "int":
            return trial.suggest_int(name, int(low), int(high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(name, float(low), float(high), step=self.step, log=self.log)

    def bounds(self) -> tuple[float, float]:
        """(low, high) of an int or float distribution; a choice has none (ValueError)."""
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.kind} distribution has no low and high")
        return self.low, self.high

    def values(self) -> list | None:
        """Every value this distribution can give, when it is a finite choice."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int" and not self.log:
            low, high = self.bounds()
            return list(range(int(low), int(high) + 1, int(self.step or 1)))
        return None


def parse_value(v: Any, where: str) -> Any:
    """A fixed value, or a Dist when `v` is a one-distribution mapping."""
    if not isinstance(v, Mapping):
        return v
    kinds = [k for k in ("int", "float", "choice") if k in v]
    extra = sorted(set(v) - {"int", "float", "choice", "step", "log"})
    if len(kinds) != 1 or extra:
        raise UserError(f"{where}: expected a fixed value or one of {{int: [lo, hi]}}, {{float: [lo, hi]}}, "
                        f"{{choice: [...]}} (optional step, log), got {shown(dict(v))}")
    kind = kinds[0]
    arg = v[kind]
    if kind == "choice":
        if not isinstance(arg, list) or not arg:
            raise UserError(f"{where}.choice: expected a non-empty list, got {shown(arg)}")
        return Dist("choice", choices=tuple(tuple(a) if isinstance(a, list) else a for a in arg))
    ok_num = (int,) if kind == "int" else (int, float)
    if (not isinstance(arg, list) or len(arg) != 2
            or not all(isinstance(a, ok_num) and not isinstance(a, bool) and math.isfinite(a) for a in arg)
            or arg[0] > arg[1]):
        raise UserError(f"{where}.{kind}: expected [low, high] finite {kind}s with low <= high, got {shown(arg)}")
    log = v.get("log", False)
    if not isinstance(log, bool) or (log and arg[0] <= 0):
        raise UserError(f"{where}.log: expected true/false, and a positive low for log, got {shown(log)}")
    step = v.get("step")
    if step is not None:
        if (kind == "choice" or not isinstance(step, ok_num) or isinstance(step, bool) or not math.isfinite(step)
                or step <= 0):
            raise UserError(f"{where}.step: expected a positive {kind} step of an int or float range, got {shown(step)}")
        if log:  # Optuna: "The parameter `step` is not supported when `log` is true."
            raise UserError(f"{where}: step and log cannot be combined (Optuna samples a log range without steps)")
        if arg[0] < arg[1] and step > (arg[1] - arg[0]) * (1 + 1e-9):  # Optuna only warns, and searches the low end
            raise UserError(f"{where}.step: {step} is larger than the range [{arg[0]}, {arg[1]}], which it would "
                            f"collapse to its low end; use a step of at most {arg[1] - arg[0]:g}")
    return Dist(kind, low=arg[0], high=arg[1], step=step, log=log)


def candidates(value: Any) -> list:
    """The values a space or train entry can take that bound it: a choice's entries, a range's ends, a fixed value."""
    if not isinstance(value, Dist):
        return [value]
    return list(value.choices) if value.kind == "choice" else [value.low, value.high]
