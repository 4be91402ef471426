"""A lead for issue 27 that did not pay: batch norm fused with its ReLU by inductor, in the winner's training step.

    python -m benchmarks.bench_bn_compile

Each BasicBlock's two tails, BN + ReLU and BN + residual add + ReLU, are compiled alone by `torch.compile`
(inductor), the convs left to oneDNN; gradients are kept channels_last where they enter the compiled tails
(blocks.grad_format), as the eager model keeps them. The trainer's `train_step` of the winner, one thread,
batch 128, eager against compiled tails, rounds alternating. Compile time is paid in the timer's warm-up.
"""

from __future__ import annotations

import argparse
import time
import types

import torch
import torch.nn.functional as F

from benchmarks import bench_separable
from benchmarks.harness import describe, machine, record, side_by_side
from benchmarks.steps import random_batch, step_timer
from blocks import ArchSpec, build
from blocks.grad_format import same_format_grad
from search.config import TrainSpec


@torch.compile(dynamic=False)
def bn_relu(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    return torch.relu(F.batch_norm(x, mean, var, w, b, True, 0.1, 1e-5))


@torch.compile(dynamic=False)
def bn_add_relu(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, mean: torch.Tensor, var: torch.Tensor,
                skip: torch.Tensor) -> torch.Tensor:
    return torch.relu(F.batch_norm(x, mean, var, w, b, True, 0.1, 1e-5) + skip)


def fused_forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """BasicBlock.forward with its two tails compiled."""
    bn1, bn2 = self.bn1, self.bn2
    out = bn_relu(same_format_grad(self.conv1(x)), bn1.weight, bn1.bias, bn1.running_mean, bn1.running_var)
    return bn_add_relu(same_format_grad(self.conv2(out)), bn2.weight, bn2.bias, bn2.running_mean, bn2.running_var,
                       same_format_grad(self.shortcut(x)))


def winner(fused: bool) -> torch.nn.Module:
    """The MCU winner, its blocks' tails compiled when `fused`."""
    torch.manual_seed(0)
    model = build(ArchSpec.from_dict(bench_separable.DESIGNS[bench_separable.WINNER]))
    for block in model.modules():
        if fused and type(block).__name__ == "BasicBlock":
            block.forward = types.MethodType(fused_forward, block)
    return model


def main() -> None:
    """Print the two rates and record them (benchmarks/results/bench_bn_compile-<commit>.json)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5, help="rounds, alternating eager and compiled")
    args = p.parse_args()
    torch.set_num_threads(1)
    facts = machine()
    print(describe(facts))
    train, batch = TrainSpec.from_dict(bench_separable.TRAIN), random_batch(128)
    start = time.perf_counter()
    timers = {"eager": step_timer(winner(False), train, batch, 6, args.rounds),
              "compiled tails": step_timer(winner(True), train, batch, 6, args.rounds)}
    set_up = time.perf_counter() - start
    rates = side_by_side(timers, args.rounds)
    ratio = rates.ratio("compiled tails", "eager")
    print(f"the winner's step, 1 thread, images/s: eager {rates['eager']:.0f}, compiled tails "
          f"{rates['compiled tails']:.0f} ({ratio:.2f}x); set-up with compiling {set_up:.0f} s")
    record("bench_bn_compile", {**rates.figures(), "ratio": ratio, "setup_s": set_up}, facts)


if __name__ == "__main__":
    main()
