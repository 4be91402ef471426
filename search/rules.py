"""Hard budgets and architectural rules: checked analytically before building, and on the built module."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

from blocks import ArchSpec, Complexity, complexity
from blocks.resnet import ARENA_SLACK, arena_bound
from blocks.spec import SpecError

from .config import RulesConfig, SearchConfig, TrainSpec
from .data.augment import count_transforms, policy_names, policy_steps
from .distributions import Dist, candidates
from .errors import UserError
from .space import corner_dict

if TYPE_CHECKING:
    from .data.datasets import DatasetInfo

MAX_PEAK_CORNERS = 512  # combinations of categorical choices tried for the smallest peak activation memory
# Choices that can lower the peak in either direction (kernels cannot: 'same' padding keeps every map's size,
# and a smaller kernel, already the smallest corner's, never makes a larger PAD tensor for the arena bound)
PEAK_KEYS = ("stem", "strides", "widths", "block", "expansion", "separable", "shortcut", "pool", "head")


def min_receptive_field(rules: RulesConfig, input_size: int) -> int | None:
    """The receptive field floor in pixels (`input` = the input size), or None."""
    if rules.min_receptive_field == "input":
        return input_size
    return rules.min_receptive_field


def arch_violation(spec: ArchSpec, cx: Complexity, cfg: SearchConfig) -> str | None:
    """Why this architecture may not be trained (budget or rule), or None when it may."""
    budget, rules = cfg.budget, cfg.rules
    if cx.params > budget.params:
        return f"params {cx.params:,} > budget {budget.params:,}"
    if budget.flops is not None and cx.flops > budget.flops:
        return f"FLOPs {cx.flops:,} > budget {budget.flops:,}"
    if budget.peak_activations is not None and cx.peak_activations > budget.peak_activations:
        return f"peak activations {cx.peak_activations:,} > budget {budget.peak_activations:,} elements"
    if budget.arena is not None and (bound := arena_bound(spec)) > budget.arena:
        return f"arena head bound {bound:,} > budget {budget.arena:,} bytes ({ARENA_SLACK} x the int8 TFLite peak)"
    if rules.head is not None and spec.head != rules.head:
        return f"head {spec.head!r} breaks rules.head: {rules.head}"
    if not rules.dropout and spec.dropout > 0:
        return f"dropout {spec.dropout} breaks rules.dropout: false"
    if not rules.widening_1x1 and cx.widening_1x1:
        return f"{cx.widening_1x1} widening 1x1 conv(s) break rules.widening_1x1: false"
    floor = min_receptive_field(rules, spec.input_size)
    if floor is not None and cx.receptive_field < floor:
        return f"receptive field {cx.receptive_field} < rules.min_receptive_field {floor}"
    return None


@dataclass(frozen=True)
class Resolved:
    """A sampled design that may be trained: its spec, training settings and analytic complexity."""

    spec: ArchSpec
    train: TrainSpec
    cx: Complexity


@dataclass(frozen=True)
class Rejected:
    """A sampled design that may not be trained: why, and the design when it could be resolved (over a budget)."""

    reason: str
    design: Resolved | None = None


def check_sample(arch_d: dict, train_d: dict, reason: str | None, cfg: SearchConfig) -> Resolved | Rejected:
    """A sampled design (`reason`: why sampling already refused it) resolved and checked against budgets and rules."""
    if reason is not None:
        return Rejected(reason)
    try:
        spec, train = ArchSpec.from_dict(arch_d), TrainSpec.from_dict(train_d)
    except ValueError as e:
        return Rejected(str(e))
    design = Resolved(spec, train, complexity(spec))
    why = arch_violation(spec, design.cx, cfg) or train_violation(spec, train, cfg)
    return design if why is None else Rejected(why, design)


def train_violation(spec: ArchSpec, train: TrainSpec, cfg: SearchConfig) -> str | None:
    """Why these training settings cannot run with this architecture, or None."""
    if cfg.rules.max_epochs is not None and train.epochs > cfg.rules.max_epochs:
        return f"train.epochs {train.epochs} > rules.max_epochs {cfg.rules.max_epochs}"
    if train.progressive:
        if spec.head == "linear" and spec.pool is not None:
            return "progressive resizing needs pool: null (global average) with a linear head"
        last = sorted(train.progressive)[-1][1]
        if last != spec.input_size:
            return f"progressive resizing ends at {last}px, not the input size {spec.input_size}px"
        smallest = min(size for _, size in train.progressive)
        try:
            spec.replace(input_size=smallest)
        except ValueError as e:
            return f"progressive resizing to {smallest}px: {e}"
    return None


def module_violation(model: nn.Module, cfg: SearchConfig) -> str | None:
    """The built module checked against the rules (the analytic check's twin on the real thing)."""
    rules = cfg.rules
    for name, m in model.named_modules():
        if rules.head == "conv" and isinstance(m, nn.Linear):
            return f"module {name} is a fully connected layer (rules.head: conv)"
        if not rules.dropout and isinstance(m, nn.modules.dropout._DropoutNd):
            return f"module {name} is a dropout layer (rules.dropout: false)"
        if (not rules.widening_1x1 and isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)
                and m.out_channels > m.in_channels):
            return f"module {name} is a 1x1 conv widening {m.in_channels} -> {m.out_channels} (rules.widening_1x1: false)"
    return None


def check_space_meets_rules(cfg: SearchConfig, info: DatasetInfo) -> None:
    """Rules and budgets the space must be able to meet on the dataset `info` describes (the fixed values'
    rules are search.config.parse's): enough transforms, valid values, a smallest network under budget, progressive
    resizing that ends at the image size."""
    rules = cfg.rules
    if rules.min_augmentations is not None:
        for name in policy_names(cfg.augment):
            n = count_transforms(policy_steps(cfg.augment, name))
            if n < rules.min_augmentations:
                label = f"augment policy {name!r}" if isinstance(cfg.augment, dict) else "augment"
                raise UserError(f"{cfg.path}: {label} has {n} transforms, rules.min_augmentations is "
                                f"{rules.min_augmentations}")
        if cfg.retrain.augment is not None and count_transforms(cfg.retrain.augment) < rules.min_augmentations:
            raise UserError(f"{cfg.path}: retrain.augment has {count_transforms(cfg.retrain.augment)} transforms, "
                            f"rules.min_augmentations is {rules.min_augmentations}")
    smallest = corner_dict(cfg, _low, info.num_classes, info.image_size)
    _check_space_values(cfg, smallest)
    _check_budget_reachable(cfg, smallest)
    _check_progressive(cfg, info.image_size)


def _check_progressive(cfg: SearchConfig, size: int) -> None:
    """Every progressive-resizing schedule the space can pick ends at the dataset's image size."""
    for steps in candidates(cfg.train.get("progressive")):
        if steps:
            last = sorted(tuple(s) for s in steps)[-1][1]
            if last != size:
                raise UserError(f"{cfg.path}: train.progressive {[list(s) for s in steps]} ends at {last}px, not the "
                                f"dataset's image size {size}px (the last stage trains at the input size)")


def _check_space_values(cfg: SearchConfig, base: dict[str, Any]) -> None:
    """Every value a space key can take is valid on its own (an even kernel is a config error, not a rejection)."""
    for key, value in cfg.space.items():
        if key in ("stages", "blocks", "width", "fill") or not isinstance(value, Dist):
            continue
        values = list(value.choices) if value.kind == "choice" else [value.low, value.high]
        for v in values:
            try:
                ArchSpec.from_dict({**base, key: list(v) if isinstance(v, tuple) else v})
            except ValueError as e:
                if isinstance(e, SpecError) and e.key == key:  # others: the smallest network's, checked next
                    raise UserError(f"{cfg.path}: space.{key}: value {v!r} is invalid: {e}") from None


def _low(v: Any) -> Any:
    """The smallest value a space entry can take (a choice's first entry for non-numbers)."""

    if not isinstance(v, Dist):
        return v
    if v.kind == "choice":
        nums = [c for c in v.choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
        return min(nums) if len(nums) == len(v.choices) else v.choices[0]
    low = v.bounds()[0]
    return int(low) if v.kind == "int" else low


def _check_budget_reachable(cfg: SearchConfig, d: dict[str, Any]) -> None:
    """Raise when even the smallest corner `d` of the space is over the params/FLOPs/peak-memory/arena budget."""
    try:
        spec = ArchSpec.from_dict(d)
    except ValueError as e:
        raise UserError(f"{cfg.path}: space: the smallest architecture in the space is invalid: {e}") from None
    cx = complexity(spec)
    label = f"stages={spec.stages}, blocks={list(spec.blocks)}, width={spec.width}"

    fill = max(candidates(cfg.space.get("fill", 1.0)))
    if cfg.space.get("width") == "solve" and cx.params > fill * cfg.budget.params:  # every sample would be rejected
        raise UserError(f"{cfg.path}: space.fill: at most {fill:g} x budget.params = {fill * cfg.budget.params:,.0f} "
                        f"params, below the smallest network in the space ({cx.params:,} params at {label}); "
                        f"raise fill or the budget, or shrink the space")
    if cx.params > cfg.budget.params:
        raise UserError(f"{cfg.path}: budget.params {cfg.budget.params:,} is below the smallest network in the "
                        f"space ({cx.params:,} params at {label}); raise the budget or shrink the space")
    if cfg.budget.flops is not None and cx.flops > cfg.budget.flops:
        raise UserError(f"{cfg.path}: budget.flops {cfg.budget.flops:,} is below the smallest network in the "
                        f"space ({cx.flops:,} FLOPs at {label}); raise the budget or shrink the space")
    if cfg.budget.peak_activations is not None:
        peak, where = _smallest(cfg, d, lambda spec: complexity(spec).peak_activations)
        if peak > cfg.budget.peak_activations:
            raise UserError(f"{cfg.path}: budget.peak_activations {cfg.budget.peak_activations:,} elements is below "
                            f"the smallest peak of any design in the space ({peak:,} at {where}); raise the budget "
                            f"or shrink the space")
    if cfg.budget.arena is not None:
        bound, where = _smallest(cfg, d, arena_bound)
        if bound > cfg.budget.arena:
            raise UserError(f"{cfg.path}: budget.arena {cfg.budget.arena:,} bytes is below the smallest arena head "
                            f"bound of any design in the space ({bound:,} bytes, {ARENA_SLACK} x its int8 TFLite "
                            f"peak, at {where}); raise the budget or shrink the space")


def _smallest(cfg: SearchConfig, smallest: dict[str, Any], measure: Callable[[ArchSpec], int]) -> tuple[int, str]:
    """The least `measure` (a peak memory) of any design of the space, and the design's keys that get it.

    The peak is not smallest at the params corner (a strided stem or a separable conv can lower it), so
    every combination of the choices in PEAK_KEYS is tried at the smallest numbers `smallest`, up to
    MAX_PEAK_CORNERS. The corner `smallest` itself is valid (checked before).
    """
    keys = [k for k in PEAK_KEYS if isinstance(cfg.space.get(k), Dist) and cfg.space[k].kind == "choice"]
    best = (measure(ArchSpec.from_dict(smallest)), ", ".join(f"{k}={smallest[k]}" for k in ("stages", "blocks",
                                                                                              "width", *keys)))
    for values in itertools.islice(itertools.product(*(cfg.space[k].choices for k in keys)), MAX_PEAK_CORNERS):
        d = {**smallest, **{k: list(v) if isinstance(v, tuple) else v for k, v in zip(keys, values, strict=True)}}
        try:
            peak = measure(ArchSpec.from_dict(d))
        except ValueError:
            continue
        if peak < best[0]:
            best = (peak, ", ".join(f"{k}={d[k]}" for k in ("stages", "blocks", "width", *keys)))
    return best
