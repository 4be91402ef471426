"""`search.run SPACE.yaml --dry-run`: what the space holds and how long its search would take, training nothing.

Designs are drawn by Optuna's random sampler from an in-memory study (nothing is written, no study is
created or touched), resolved and checked exactly as the objective does, and summarised. A short timed
probe of a typical design (the one of median size) gives the expected duration on this device.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import optuna
import torch
import torch.nn.functional as F

from blocks import ArchSpec, build
from blocks.text import short_bytes, short_count

from .config import SearchConfig
from .describe import arch_brief
from .rules import check_sample
from .space import sample
from .trainer import TrainSpec, make_optimizer

EVAL_COST = 1 / 3  # a validation image costs about a third of a training image (forward only, no backward)
Probe = Callable[[ArchSpec, TrainSpec, torch.device], float]  # seconds per training image


@dataclass
class Design:
    """One buildable sampled design."""

    spec: ArchSpec
    train: TrainSpec
    params: int
    flops: int
    peak: int = 0  # peak activation memory, elements at batch 1


def sample_designs(cfg: SearchConfig, n: int, num_classes: int, input_size: int) -> tuple[list[Design], Counter]:
    """n random draws from the space: the buildable designs and a count of rejection reasons."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=cfg.search.seed),
                                direction="maximize")  # in memory: nothing is stored
    designs, rejected = [], Counter()
    for _ in range(n):
        trial = study.ask()
        arch_d, train_d, reason = sample(trial, cfg, num_classes, input_size)
        spec, train, cx, reason = check_sample(arch_d, train_d, reason, cfg)
        if reason is None:
            designs.append(Design(spec, train, cx.params, cx.flops, cx.peak_activations))
        else:
            rejected[reason.split(" (")[0]] += 1  # the kind of reason, without its per-sample figures
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return designs, rejected


def time_training(spec: ArchSpec, train: TrainSpec, device: torch.device, steps: int = 2) -> float:
    """Seconds per training image of `spec` at its batch size on random images (after one warm-up step)."""
    model = build(spec).to(device).train()
    opt = make_optimizer(model, train)
    x = torch.randn(train.batch_size, 3, spec.input_size, spec.input_size, device=device)
    y = torch.randint(0, spec.num_classes, (train.batch_size,), device=device)
    for i in range(steps + 1):
        if i == 1:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / (steps * train.batch_size)


def summarise(cfg: SearchConfig, designs: list[Design], rejected: Counter, n_train: int, n_val: int,
              device: torch.device, probe: Probe = time_training) -> list[str]:
    """The dry run's report lines."""
    n = len(designs) + sum(rejected.values())
    budget = cfg.budget.params
    lines = [f"dry run of {cfg.path}: {n:,} designs drawn at random (seed {cfg.search.seed}); nothing trained, "
             f"no study created or touched"]
    lines.append(f"rejected before building: {sum(rejected.values()) / n:.1%} ({sum(rejected.values()):,})")
    lines += [f"  {count:>6,}  {reason}" for reason, count in rejected.most_common()]
    if not designs:
        lines.append("no design of this space can be trained: widen the space or raise the budget")
        return lines
    util = sorted(d.params / budget for d in designs)
    lines.append(f"budget utilisation (params / {budget:,}) of the {len(designs):,} buildable designs: "
                 + "  ".join(f"{name} {q:.1%}" for name, q in _quantiles(util)))
    for lo in range(0, 100, 10):
        share = sum(lo <= 100 * u < lo + 10 or (lo == 90 and u >= 1.0) for u in util) / len(util)
        if share:
            lines.append(f"  {lo:>3}-{lo + 10}%  {'#' * max(1, round(40 * share)):<40}  {share:.1%}")
    lines.append(_range("depth (blocks)", [sum(d.spec.blocks) for d in designs], str))
    lines.append(_range("width C", [d.spec.width for d in designs], str))
    lines.append(_range("params", [d.params for d in designs], short_count))
    lines.append(_range("FLOPs", [d.flops for d in designs], short_count) + "  (fvcore: one multiply-add = one FLOP)")
    peak, per = cfg.budget.peak_activations, cfg.budget.activation_bytes
    lines.append(_range("peak memory", [d.peak for d in designs], short_count) + "  (activation elements live at "
                 "once, batch 1" + (f"; budget {peak:,} = {short_bytes(peak * per)} at {per} byte(s) each)"
                                    if peak is not None else ")"))
    typical = sorted(designs, key=lambda d: d.params)[len(designs) // 2]
    s_per_img = probe(typical.spec, typical.train, device)
    epochs = statistics.median(d.train.epochs for d in designs)
    trial_s = epochs * (n_train + EVAL_COST * n_val) * s_per_img
    total = cfg.search.n_trials * trial_s
    lines.append(f"probe: a typical design ({arch_brief(typical.spec.to_dict())}, {short_count(typical.params)} params) "
                 f"trains at {1 / s_per_img:,.0f} img/s on {device} (batch {typical.train.batch_size})")
    lines.append(f"expected duration: {cfg.search.n_trials} trials x {epochs:g} epochs x ({n_train:,} training + "
                 f"{n_val:,} validation images) = about {_hours(total)} on this device without pruning "
                 f"(one trial about {_hours(trial_s)}; pruned trials stop early)")
    return lines


def _quantiles(values: list[float]) -> list[tuple[str, float]]:
    """min, p10, median, p90, max of sorted values."""
    at = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
    return [("min", values[0]), ("p10", at(0.1)), ("median", at(0.5)), ("p90", at(0.9)), ("max", values[-1])]


def _range(name: str, values: list, fmt: Callable) -> str:
    """`name  lo .. hi (median m)`."""
    values = sorted(values)
    return f"{name:<15} {fmt(values[0])} .. {fmt(values[-1])} (median {fmt(values[len(values) // 2])})"


def _hours(seconds: float) -> str:
    """2 h 05 min / 7 min / 40 s."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"
