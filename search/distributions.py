"""Searched values: `{int: [lo, hi]}`, `{float: [lo, hi]}` (optional step or log) or `{choice: [...]}`, and their checks.

The one place that knows how a YAML distribution is written and checked, and how a value is picked from
it (a Pick: an Optuna trial's suggestion, the lowest value, the middle one); config, space, rules and
baselines import it, and it imports none of them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import UserError, shown

if TYPE_CHECKING:  # (optuna itself is imported only by what runs trials)
    import optuna


@dataclass(frozen=True)
class Dist:
    """A searched value: `{int: [lo, hi]}`, `{float: [lo, hi]}` (optional step/log) or `{choice: [...]}`."""

    kind: str  # int | float | choice
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple = ()

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        """Ask the Optuna trial for a value under the stable parameter name `name`."""
        if self.kind == "choice":
            if self.nested():  # Optuna's categorical values are scalars: a choice of lists is stored as JSON
                return json.loads(trial.suggest_categorical(name, [json.dumps(c) for c in self.choices]))
            return trial.suggest_categorical(name, list(self.choices))
        low, high = self.bounds()
        if self.kind == "int":
            return trial.suggest_int(name, int(low), int(high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(name, float(low), float(high), step=self.step, log=self.log)

    def nested(self) -> bool:
        """Whether this is a choice with a list or mapping among its values."""
        return self.kind == "choice" and any(isinstance(c, (tuple, list, dict)) for c in self.choices)

    def stored(self, value: Any) -> Any:
        """`value` as Optuna stores it for this parameter (and takes it in enqueue_trial)."""
        return json.dumps(value) if self.nested() else value

    def bounds(self) -> tuple[float, float]:
        """(low, high) of an int or float distribution; a choice has none (ValueError)."""
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.kind} distribution has no low and high")
        return self.low, self.high


Pick = Callable[[str, Dist], Any]  # a way to choose a searched value: (its stable parameter name, its Dist) -> value


def from_trial(trial: optuna.Trial) -> Pick:
    """Each value as the Optuna trial suggests it (the parameter is recorded on the trial)."""
    return lambda name, dist: dist.suggest(trial, name)


def lowest(name: str, dist: Dist) -> Any:
    """The smallest value (a choice's first for non-numbers): the space's smallest network, for the preflight."""
    if dist.kind == "choice":
        nums = [c for c in dist.choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
        return min(nums) if len(nums) == len(dist.choices) else dist.choices[0]
    low = dist.bounds()[0]
    return int(low) if dist.kind == "int" else low


def middle(name: str, dist: Dist) -> Any:
    """The middle of a range (geometric for log, on its step), a choice's first: what a baseline trains with."""
    if dist.kind == "choice":
        return dist.choices[0]
    low, high = dist.bounds()
    mid = math.sqrt(low * high) if dist.log else (low + high) / 2
    if dist.step:
        mid = low + round((mid - low) / dist.step) * dist.step
    return int(round(mid)) if dist.kind == "int" else float(mid)


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
