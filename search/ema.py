"""Exponential moving average of a model's weights and BatchNorm statistics, on torch's AveragedModel."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def warmed_decay(decay: float, updates: int) -> float:
    """The decay applied at update n (the first update copies): min(decay, (1 + n) / (10 + n))."""
    # TensorFlow's ExponentialMovingAverage(num_updates=...) warm-up: early averages are not dominated by
    # the random initial weights, so a short search run's EMA is usable from its first epochs.
    return min(decay, (1 + updates) / (10 + updates))


class EMA(AveragedModel):
    """torch's AveragedModel, with the type of the copy it averages declared."""

    module: nn.Module


Tensors = tuple[torch.Tensor, ...] | list[torch.Tensor]


def _ema_update(decay: float) -> Callable[[Tensors, Tensors, torch.Tensor | int], None]:
    """AveragedModel multi_avg_fn: lerp float tensors towards the model's; copy integer buffers."""

    @torch.no_grad()
    def update(ema: Tensors, current: Tensors, n_averaged: torch.Tensor | int) -> None:
        if not torch.is_floating_point(ema[0]):
            torch._foreach_copy_(ema, current)  # BatchNorm's num_batches_tracked: a count, not a weight
            return
        n = torch.as_tensor(n_averaged, dtype=ema[0].dtype, device=ema[0].device)  # (a tensor: no host sync)
        weight = 1.0 - torch.clamp((1 + n) / (10 + n), max=decay)
        torch._foreach_lerp_(ema, current, weight)  # type: ignore[call-overload]  # 0-dim tensor weight: not in stubs

    return update


def make_ema(model: nn.Module, decay: float) -> EMA:
    """A copy of `model` whose parameters and buffers track an EMA of the model's after each update."""
    # use_buffers=True averages BatchNorm's running mean and variance too (timm's ModelEmaV2/V3 semantics),
    # so the EMA weights are evaluated with statistics that belong to them, not to the live weights.
    return EMA(model, multi_avg_fn=_ema_update(decay), use_buffers=True)
