"""Measured cost of a design on its device: inference latency by a short timed probe (no training)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from .device import autocast, prepare_model, sync

LARGE_BATCH = 256  # the "large batch" of the recorded latencies: throughput-bound serving
# What measures latency: (model, input size px, batch, device, train.amp) -> ms per forward pass
LatencyProbe = Callable[[nn.Module, int, int, torch.device, "bool | str"], float]


def latency_ms(model: nn.Module, input_size: int, batch: int, device: torch.device, amp: bool | str = "auto",
               repeats: int = 5, clock: Callable[[], float] = time.perf_counter) -> float:
    """Median wall ms of one eval-mode forward pass at `batch` x 3 x size x size on `device` (after one warm-up)."""
    was_training = model.training
    prepare_model(model, device).eval()
    x = torch.randn(batch, 3, input_size, input_size, device=device).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.no_grad(), autocast(device, amp):
        for i in range(repeats + 1):
            sync(device)
            t0 = clock()
            model(x)
            sync(device)
            if i:  # the first pass pays for allocation and kernel selection
                times.append((clock() - t0) * 1e3)
    model.train(was_training)
    return statistics.median(times)


def cost_attrs(model: nn.Module, input_size: int, device: torch.device, amp: bool | str,
               probe: LatencyProbe = latency_ms) -> dict[str, float]:
    """Inference latency at batch 1 and at LARGE_BATCH, ms, as trial user attributes."""
    return {f"latency_ms_batch{b}": round(probe(model, input_size, b, device, amp), 3) for b in (1, LARGE_BATCH)}
