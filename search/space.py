"""The one place that calls trial.suggest_*: an Optuna trial in, an ArchSpec and a TrainSpec out."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable

from blocks import ArchSpec, complexity

from .config import Dist
from .trainer import TrainSpec

if TYPE_CHECKING:
    from .config import SearchConfig

MIN_WIDTH = 8  # solved widths are multiples of this many channels
MAX_WIDTH = 4096


def suggest(trial: Any, name: str, value: Any) -> Any:
    """A fixed value as is, or the trial's pick for a Dist (list-valued choices go through JSON)."""
    if not isinstance(value, Dist):
        return list(value) if isinstance(value, tuple) else value
    if value.kind == "choice" and any(isinstance(c, (tuple, list, dict)) for c in value.choices):
        picked = trial.suggest_categorical(name, [json.dumps(c) for c in value.choices])
        return json.loads(picked)
    return value.suggest(trial, name)


def corner_dict(cfg: "SearchConfig", pick: Callable[[Any], Any]) -> dict[str, Any]:
    """An ArchSpec dict with every space entry resolved by `pick` (used for the smallest-network check)."""
    from .data import dataset_info

    info = dataset_info(cfg.data)
    space = cfg.space
    d: dict[str, Any] = {k: pick(v) for k, v in space.items() if k not in ("blocks", "width", "fill")}
    d["stages"] = stages = int(pick(space.get("stages", 4)))
    blocks = space.get("blocks", 2)
    if isinstance(blocks, Dist) and blocks.kind == "int":
        d["blocks"] = [int(pick(blocks))] * stages
    else:
        b = pick(blocks)
        d["blocks"] = list(b) if isinstance(b, (list, tuple)) else [int(b)] * stages
    width = space.get("width", "solve")
    d["width"] = MIN_WIDTH if width == "solve" else int(pick(width))
    d.setdefault("head", cfg.rules.head or "linear")
    d["num_classes"], d["input_size"] = info.num_classes, info.image_size
    return d


def solve_width(d: dict[str, Any], max_params: float, max_flops: float | None) -> int | None:
    """The largest multiple of MIN_WIDTH whose network fits the limits, or None if even MIN_WIDTH does not."""

    def fits(width: int) -> bool:
        cx = complexity(ArchSpec.from_dict({**d, "width": width}))
        return cx.params <= max_params and (max_flops is None or cx.flops <= max_flops)

    lo, hi = 1, MAX_WIDTH // MIN_WIDTH  # in units of MIN_WIDTH; params grow monotonically with width
    if not fits(lo * MIN_WIDTH):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid * MIN_WIDTH):
            lo = mid
        else:
            hi = mid - 1
    return lo * MIN_WIDTH


def sample_arch(trial: Any, cfg: "SearchConfig", num_classes: int, input_size: int) -> tuple[dict, str | None]:
    """Sample the architecture keys; returns the ArchSpec dict and a rejection reason (or None)."""
    space = cfg.space
    d: dict[str, Any] = {}
    d["stages"] = stages = int(suggest(trial, "stages", space.get("stages", 4)))
    blocks = space.get("blocks", 2)
    if isinstance(blocks, Dist) and blocks.kind == "int":  # depth of each stage searched on its own
        d["blocks"] = [int(suggest(trial, f"blocks_s{i + 1}", blocks)) for i in range(stages)]
    else:
        d["blocks"] = suggest(trial, "blocks", blocks)
    for key, value in space.items():
        if key not in ("stages", "blocks", "width", "fill"):
            d[key] = suggest(trial, key, value)
    d.setdefault("head", cfg.rules.head or "linear")
    d["num_classes"], d["input_size"] = num_classes, input_size
    width = space.get("width", "solve")
    if width != "solve":
        d["width"] = int(suggest(trial, "width", width))
        return d, None
    if d.get("widths") is not None:
        return d, None  # explicit per-stage widths: nothing to solve
    fill = float(suggest(trial, "fill", space.get("fill", 1.0)))
    try:
        ArchSpec.from_dict({**d, "width": MIN_WIDTH})
    except ValueError as e:
        return d, str(e)
    solved = solve_width(d, fill * cfg.budget.params, cfg.budget.flops)
    if solved is None:
        return d, f"even width {MIN_WIDTH} is over {fill:.0%} of the budget for this shape"
    d["width"] = solved
    return d, None


def sample_train(trial: Any, cfg: "SearchConfig") -> dict[str, Any]:
    """Sample the training keys; the augmentation policy becomes a choice when the YAML has several."""
    from .augment import policy_names

    d = {key: suggest(trial, key, value) for key, value in cfg.train.items()}
    names = policy_names(cfg.augment)
    if isinstance(cfg.augment, dict) and "augment_policy" not in d:
        d["augment_policy"] = suggest(trial, "augment_policy", Dist("choice", choices=tuple(names)))
    return d


def sample(trial: Any, cfg: "SearchConfig", num_classes: int, input_size: int) -> tuple[dict, dict, str | None]:
    """Architecture dict, training dict and a rejection reason (None = buildable) for one trial."""
    arch, reason = sample_arch(trial, cfg, num_classes, input_size)
    return arch, sample_train(trial, cfg), reason


def resolve_train(d: dict[str, Any]) -> TrainSpec:
    """A TrainSpec from sampled values."""
    return TrainSpec.from_dict(d)
