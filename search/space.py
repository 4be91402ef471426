"""The one place that calls trial.suggest_*: an Optuna trial in, an ArchSpec and a TrainSpec out."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from blocks import ArchSpec, complexity
from blocks.resnet import arena_bound

from .config import SearchConfig, TrainSpec
from .data.augment import policy_names
from .distributions import Dist

if TYPE_CHECKING:  # (optuna itself is imported only by what runs trials)
    from optuna.trial import BaseTrial

MIN_WIDTH = 8  # solved widths are multiples of this many channels
WIDTH_DEFAULT = "solve"  # space.width left out: fill the budget (spaces/README.md states it)
FILL_DEFAULT = 1.0  # space.fill left out: the share of the params budget the solved width aims for
MAX_WIDTH = 4096


def suggest(trial: BaseTrial, name: str, value: Any) -> Any:
    """A fixed value as is, or the trial's pick for a Dist (list-valued choices go through JSON)."""
    if not isinstance(value, Dist):
        return list(value) if isinstance(value, tuple) else value
    if value.kind == "choice" and any(isinstance(c, (tuple, list, dict)) for c in value.choices):
        picked = trial.suggest_categorical(name, [json.dumps(c) for c in value.choices])
        return json.loads(picked)
    return value.suggest(trial, name)


def corner_dict(cfg: SearchConfig, pick: Callable[[Any], Any], num_classes: int, input_size: int) -> dict[str, Any]:
    """An ArchSpec dict with every space entry resolved by `pick` (used for the smallest-network check)."""
    space = cfg.space
    d: dict[str, Any] = {k: pick(v) for k, v in space.items() if k not in ("blocks", "width", "fill")}
    d["stages"] = stages = int(pick(space.get("stages", 4)))
    blocks = space.get("blocks", 2)
    if isinstance(blocks, Dist) and blocks.kind == "int":
        d["blocks"] = [int(pick(blocks))] * stages
    else:
        b = pick(blocks)
        d["blocks"] = list(b) if isinstance(b, (list, tuple)) else [int(b)] * stages
    width = space.get("width", WIDTH_DEFAULT)
    d["width"] = MIN_WIDTH if width == "solve" else int(pick(width))
    d.setdefault("head", cfg.rules.head or "linear")
    d["num_classes"], d["input_size"] = num_classes, input_size
    return d


def solve_width(d: dict[str, Any], max_params: float, max_flops: float | None,
                max_peak: int | None = None, max_arena: int | None = None) -> int | None:
    """The largest multiple of MIN_WIDTH whose network fits the limits, or None if even MIN_WIDTH does not."""
    fits = _fits(d, max_params, max_flops, max_peak=max_peak, max_arena=max_arena)
    hi = _largest(lambda k: fits({"width": k * MIN_WIDTH}), MAX_WIDTH // MIN_WIDTH)
    return None if hi == 0 else hi * MIN_WIDTH


def fill_widths(d: dict[str, Any], max_params: float, max_flops: float | None,
                widening_1x1: bool = True, max_peak: int | None = None,
                max_arena: int | None = None) -> dict[str, Any] | None:
    """Solve C (doubling per stage), then widen stages from the last in steps of MIN_WIDTH while it fits.

    Doubling alone leaves up to a quarter of the budget unused (C moves in steps of 8 and the last
    stage, which holds most parameters, in steps of 8 * 2^(N-1)); widening each stage on its own,
    widest first, keeps the widths non-decreasing and lands within one step of the first stage.
    With `widening_1x1` false (a rule), no widening may add a 1x1 conv that increases the channel
    count: separable convs then keep whole width ratios between stages, so those designs stay doubled.
    `max_peak` caps the peak activation memory (elements) too, `max_arena` the arena head bound (bytes,
    blocks.resnet.arena_bound): a stage widens only while every limit holds.
    Returns the dict with `width` and per-stage `widths`, or None when even width MIN_WIDTH does not fit.
    """
    c = solve_width(d, max_params, max_flops, max_peak, max_arena)
    if c is None:
        return None
    base = None if widening_1x1 else complexity(ArchSpec.from_dict({**d, "width": c})).widening_1x1
    fits = _fits(d, max_params, max_flops, base, max_peak, max_arena)

    def fits_widened(widths: list[int], i: int) -> Callable[[int], bool]:
        """Whether `widths` with stage i widened by k steps of MIN_WIDTH still fits, as a function of k."""
        return lambda k: fits(_widened(widths, i, k))

    widths = [c * 2**i for i in range(int(d["stages"]))]
    for i in reversed(range(len(widths))):
        k = _largest(fits_widened(widths, i), (MAX_WIDTH - widths[i]) // MIN_WIDTH)
        widths = _widened(widths, i, k)["widths"]
    return {**d, "width": widths[0], "widths": widths}


def _widened(widths: list[int], i: int, k: int) -> dict[str, Any]:
    """The keys `width` and `widths` for `widths` with stage i widened by k steps of MIN_WIDTH."""
    new = [*widths[:i], widths[i] + k * MIN_WIDTH, *widths[i + 1:]]
    return {"width": new[0], "widths": new}


def _fits(d: dict[str, Any], max_params: float, max_flops: float | None, max_widening: int | None = None,
          max_peak: int | None = None, max_arena: int | None = None) -> Callable[[dict[str, Any]], bool]:
    """A test of whether `d` with some keys changed fits the limits (and widening 1x1 cap), analytically."""

    def fits(changes: dict[str, Any]) -> bool:
        try:
            spec = ArchSpec.from_dict({**d, **changes})
            cx = complexity(spec)
        except ValueError:  # e.g. zero_pad shortcuts need widths that never shrink
            return False
        return (cx.params <= max_params and (max_flops is None or cx.flops <= max_flops)
                and (max_widening is None or cx.widening_1x1 <= max_widening)
                and (max_peak is None or cx.peak_activations <= max_peak)
                and (max_arena is None or arena_bound(spec) <= max_arena))

    return fits


def _largest(ok: Callable[[int], bool], hi: int) -> int:
    """The largest k in [0, hi] with ok(k), for ok true up to some k and false after (0 if ok(1) is false)."""
    lo = 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def sample_arch(trial: BaseTrial, cfg: SearchConfig, num_classes: int, input_size: int) -> tuple[dict, str | None]:
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
    width = space.get("width", WIDTH_DEFAULT)
    if width != "solve":
        d["width"] = int(suggest(trial, "width", width))
        return d, None
    if d.get("widths") is not None:
        return d, None  # explicit per-stage widths: nothing to solve
    fill = float(suggest(trial, "fill", space.get("fill", FILL_DEFAULT)))
    try:
        ArchSpec.from_dict({**d, "width": MIN_WIDTH})
    except ValueError as e:
        return d, str(e)
    budget = cfg.budget
    widening, peak, arena = cfg.rules.widening_1x1, budget.peak_activations, budget.arena
    solved = fill_widths(d, fill * budget.params, budget.flops, widening, peak, arena)
    if solved is None:
        if fill_widths(d, budget.params, budget.flops, widening, peak, arena) is None:
            return d, f"even width {MIN_WIDTH} is over the hard budget for this shape"
        return d, (f"even width {MIN_WIDTH} is over the sampled fill share ({fill:.0%} of the budget, "
                   f"{fill * cfg.budget.params:,.0f} params) for this shape; the hard budget itself is not broken")
    return solved, None


def sample_train(trial: BaseTrial, cfg: SearchConfig) -> dict[str, Any]:
    """Sample the training keys; the augmentation policy becomes a choice when the YAML has several."""
    d = {key: suggest(trial, key, value) for key, value in cfg.train.items()}
    names = policy_names(cfg.augment)
    if isinstance(cfg.augment, dict) and "augment_policy" not in d:
        d["augment_policy"] = suggest(trial, "augment_policy", Dist("choice", choices=tuple(names)))
    return d


def sample(trial: BaseTrial, cfg: SearchConfig, num_classes: int, input_size: int) -> tuple[dict, dict, str | None]:
    """Architecture dict, training dict and a rejection reason (None = buildable) for one trial."""
    arch, reason = sample_arch(trial, cfg, num_classes, input_size)
    return arch, sample_train(trial, cfg), reason


def resolve_train(d: dict[str, Any]) -> TrainSpec:
    """A TrainSpec from sampled values."""
    return TrainSpec.from_dict(d)
