"""The trainer's own step timed on one batch held in memory, and the matmul a step's speed is held against.

What bench_mcu_speed.py and bench_separable.py time as a training step (bench_speed.py times the path `fit`
took before the trainer's, and so builds its own step).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from benchmarks.harness import clock
from search.config import TrainSpec
from search.trainer import setup_training, train_step

WARMUP = 2  # untimed steps first: oneDNN picks and compiles its kernels, the allocator fills


def random_batch(n: int, size: int = 32, classes: int = 10, seed: int = 0,
                 channels_last: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded batch of `n` random RGB images of `size` px and their labels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    return x, torch.randint(0, classes, (n,), generator=g)


def step_timer(model: nn.Module, train: TrainSpec, batch: tuple[torch.Tensor, torch.Tensor], steps: int,
               rounds: int = 1, channels_last: bool = True) -> Callable[[], float]:
    """A timer for harness.side_by_side: images/s of `steps` `train_step`s of `model` (set up as `fit` sets it up,
    on the CPU) on `batch`, good for `rounds` calls (the schedule is sized to them), after WARMUP steps."""
    state = setup_training(model, train, torch.device("cpu"), WARMUP + steps * rounds)
    if not channels_last:
        state.model.to(memory_format=torch.contiguous_format)
    state.model.train()
    x, y = batch
    step = partial(train_step, state, x, y)
    for _ in range(WARMUP):
        step()
    return lambda: steps * len(x) / clock(step, steps)


def matmul_gflops(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048, reps: int = 5) -> float:
    """Real GFLOP/s (2 n^3 a product) of an n x n matmul on torch's current threads: the cores' arithmetic limit."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    a @ b  # warm-up
    if sync is not None:
        sync()
    return 2 * n**3 * reps / clock(lambda: a @ b, reps, sync) / 1e9
