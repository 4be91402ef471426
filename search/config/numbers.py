"""Whole numbers where a key takes an integer: `budget.params: 5e6` is 5,000,000 parameters.

YAML reads `5e6` (and `5000000.0`) as a float, and e-notation is how counts are written (5M parameters, 1e5
images). Where a key takes an integer, a float that is exactly a whole number becomes that int before any
check, as Python's int(5e6) and pydantic's lax mode read it: nothing is guessed, the value is exact. A
fraction (`2.5e0`) stays a float and is refused in one line naming the key; so is a float past 2**53, which
may not be the integer written. Keys that take floats keep their floats, so study fingerprints are as before.
"""

from __future__ import annotations

import typing
from typing import Any

from blocks import ArchSpec

from .schema import BudgetConfig, DataConfig, RetrainConfig, RulesConfig, SearchSection, TrainSpec

EXACT_MAX = 2**53  # every whole number up to this is exactly a float, so the float is the integer written
SECTIONS = {"data": DataConfig, "budget": BudgetConfig, "rules": RulesConfig, "search": SearchSection,
            "retrain": RetrainConfig, "train": TrainSpec, "space": ArchSpec}


def whole_numbers(raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` (the YAML's sections) with each integer key's whole floats made ints, baselines' keys included."""
    out = dict(raw)
    for name, cls in SECTIONS.items():
        if isinstance(raw.get(name), dict):
            out[name] = _section(raw[name], cls)
    if isinstance(raw.get("baselines"), list):  # ArchSpec keys, and fixed train values under `train`
        out["baselines"] = [{**_section(b, ArchSpec), **({"train": _section(b["train"], TrainSpec)}
                                                         if isinstance(b.get("train"), dict) else {})}
                            if isinstance(b, dict) else b for b in raw["baselines"]]
    return out


def _section(values: dict[str, Any], cls: type) -> dict[str, Any]:
    """`values` with the whole floats of `cls`'s integer fields (`int`, `int | None`, `tuple[int, ...]`) made ints."""
    hints = typing.get_type_hints(cls)
    ints = {k for k, hint in hints.items() if _holds(hint, int) and not _holds(hint, float)}
    return {k: _whole(v) if k in ints else v for k, v in values.items()}


def _holds(hint: Any, kind: type) -> bool:
    """Whether type `hint` is `kind` or has it among its arguments (`int | None`, `tuple[int, ...]`)."""
    return hint is kind or any(_holds(a, kind) for a in typing.get_args(hint))


def _whole(value: Any) -> Any:
    """`value` with each float that is exactly a whole number an int, through lists and distributions."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= EXACT_MAX:
        return int(value)
    if isinstance(value, list):
        return [_whole(v) for v in value]
    if isinstance(value, dict):  # {int: [1e1, 1e2], step: 1e0} or {choice: [...]}
        return {k: _whole(v) for k, v in value.items()}
    return value
