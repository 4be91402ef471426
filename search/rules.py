"""Hard budgets and architectural rules: checked analytically before building, and on the built module."""

from __future__ import annotations

from torch import nn

from blocks import ArchSpec, Complexity
from blocks.resnet import ARENA_SLACK, arena_bound

from .config import RulesConfig, SearchConfig, TrainSpec


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
