"""Optimisers and per-step learning-rate schedules of a TrainSpec."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

if TYPE_CHECKING:
    from .config import TrainSpec


def make_optimizer(model: nn.Module, spec: TrainSpec) -> torch.optim.Optimizer:
    """SGD (Nesterov) / Adam / AdamW with no weight decay on BN and bias parameters."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if spec.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov)
    cls = torch.optim.Adam if spec.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=spec.lr)


def make_schedule(opt: torch.optim.Optimizer, spec: TrainSpec, steps_per_epoch: int) -> LRScheduler:
    """A per-step LR schedule over the whole run."""
    total = max(1, spec.epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler
    if spec.schedule == "onecycle":  # momentum stays train.momentum (Adam's beta1 its default): no cycling
        return sched.OneCycleLR(opt, max_lr=spec.lr, total_steps=total, cycle_momentum=False)
    if spec.schedule == "cyclic":
        return sched.LambdaLR(opt, lambda s: cyclic_factor(s, total, spec.cycles))
    warm = min(total - 1, int(spec.warmup_epochs * steps_per_epoch))
    main: LRScheduler
    if spec.schedule == "cosine":
        main = sched.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, total - warm)))))
    elif spec.schedule == "step":  # x0.1 at 50% and 75% of the run
        main = sched.MultiStepLR(opt, milestones=[(total - warm) // 2, 3 * (total - warm) // 4], gamma=0.1)
    else:
        main = sched.LambdaLR(opt, lambda s: 1.0)
    if warm <= 0:
        return main
    return sched.SequentialLR(opt, [sched.LinearLR(opt, 0.01, 1.0, total_iters=warm), main], milestones=[warm])


def cyclic_factor(step: int, total: int, cycles: int) -> float:
    """Triangular cycles between lr/10 and lr (Smith 2017), the last one annealing to 0 at the end of the run."""
    # CyclicLR ends a run at lr/10 or mid-upswing; a run scored or kept at its end should end annealed
    # (Smith 2018, the last phase of one-cycle: anneal well below the base rate).
    cycles = max(1, cycles)
    phase = min(step / total, 1.0) * cycles
    k = min(int(phase), cycles - 1)  # which cycle, 0-based
    u = phase - k  # position in it, 0..1
    if u < 0.5:
        return 0.1 + 0.9 * 2 * u
    floor = 0.0 if k == cycles - 1 else 0.1
    return floor + (1 - floor) * 2 * (1 - u)
