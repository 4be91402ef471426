"""A small network's training speed against its limits: the whole loop, the in-memory step, a matmul.

    python -m benchmarks.bench_mcu_speed --data-root DIR            # ResNet-8 on CIFAR-10 (DIR/cifar-10-batches-py)
    python -m benchmarks.bench_mcu_speed --data-root DIR --compile  # also torch.compile, compile time included

At ResNet-8's size (78k params, 12.7M multiply-adds an image) per-op overhead, threads, memory format,
batch size and the data path decide the speed, not arithmetic. Printed, side by side in one run:
- matmul: a 2048x2048 fp32 matmul on the same threads, GFLOP/s (the arithmetic ceiling of these cores);
- step: `trainer.train_step` (what `fit` runs per batch) on one batch held in memory, after
  `trainer.setup_training` (channels_last, autocast as `train.amp` says), per batch size and memory format;
- pipeline: iterating the real training loader alone (decode, augmentation, collate);
- fit: two whole epochs of `trainer.fit` over the real loaders (45,000 training + 5,000 validation images);
  with --compile also compiled, whose first epoch includes the compile.
GFLOP/s of a training step count 3 x 2 x multiply-adds an image (forward, and backward at twice the forward).
The record goes to benchmarks/results/bench_mcu_speed-<commit>.json (benchmarks.harness).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import torch

from benchmarks.harness import describe, machine, record
from benchmarks.steps import matmul_gflops, random_batch, step_timer
from blocks import ArchSpec, build, complexity
from search.config import DataConfig, TrainSpec
from search.data.augment import DEFAULT_POLICY, policy_steps
from search.data.datasets import make_loaders
from search.trainer import fit

RESNET8 = {"stages": 3, "blocks": [1, 1, 1], "widths": [16, 32, 64], "num_classes": 10, "input_size": 32}
AUGMENT = [{"PadIfNeeded": {"min_height": 40, "min_width": 40, "border_mode": 4}},
           {"RandomCrop": {"height": 32, "width": 32}}, {"HorizontalFlip": {"p": 0.5}}]


def step_rate(spec: ArchSpec, train: TrainSpec, steps: int, channels_last: bool = True) -> float:
    """Images/s of `train_step` on one in-memory batch (two warm-up steps first)."""
    batch = random_batch(train.batch_size, spec.input_size, spec.num_classes, channels_last=channels_last)
    return step_timer(build(spec), train, batch, steps, channels_last=channels_last)()


def data(root: str, workers: int | str) -> DataConfig:
    """CIFAR-10 from `root`, the 45,000 / 5,000 split of the search."""
    return DataConfig(dataset="cifar10", root=root, download=False, val_fraction=0.1, num_workers=workers)


def pipeline_rate(cfg: DataConfig, batch: int, batches: int = 100) -> float:
    """Images/s of iterating the real training loader alone (its first batch, worker start-up, not counted)."""
    loader = make_loaders(cfg, policy_steps(AUGMENT, DEFAULT_POLICY), batch, seed=0).train
    n, t0 = 0, None
    for i, (x, _) in enumerate(loader):
        if i == 1:
            n, t0 = 0, time.perf_counter()
        n += x.shape[0]
        if i == batches:
            break
    if t0 is None:
        raise SystemExit(f"the training loader gave fewer than 2 batches of {batch}: no rate to measure")
    return n / (time.perf_counter() - t0)


def fit_epochs(spec: ArchSpec, train: TrainSpec, cfg: DataConfig) -> list[tuple[float, float]]:
    """(training images/s, seconds with validation) of each epoch of `fit` (a compiled run compiles in its first)."""
    loaders = make_loaders(cfg, policy_steps(AUGMENT, DEFAULT_POLICY), train.batch_size, seed=0)
    history = fit(build(spec), loaders.train, loaders.val, train, torch.device("cpu"), seed=0)
    return [(h.images_per_s, h.time_s) for h in history]


def main() -> None:
    """Print the figures for ResNet-8 (or --arch) at the given threads, and record them."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--batch-sizes", default="64,128,256")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--workers", default="auto", help="DataLoader workers (data.num_workers)")
    p.add_argument("--compile", action="store_true", help="also time train.compile: true (compile included)")
    p.add_argument("--no-fit", action="store_true", help="skip the whole-epoch fits (2 minutes each)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    spec = ArchSpec.from_dict(RESNET8)
    flops = complexity(spec).flops * 2 * 3  # FLOPs of one training step per image (multiply-add = 2)
    base = {"epochs": 1, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "onecycle",
            "label_smoothing": 0.1, "amp": "auto"}
    facts = machine()
    print(describe(facts))
    print(f"ResNet-8: {complexity(spec).params:,} params, {complexity(spec).flops:,} multiply-adds an image")
    ceiling = matmul_gflops(torch.device("cpu"), reps=10)
    figures: dict[str, Any] = {"matmul_gflops": ceiling, "step": {}}
    print(f"matmul 2048^2 fp32            {ceiling:8.1f} GFLOP/s")
    for b in [int(s) for s in args.batch_sizes.split(",")]:
        train = TrainSpec.from_dict({**base, "batch_size": b})
        for cl in (True, False):
            r = step_rate(spec, train, args.steps, cl)
            figures["step"][f"batch {b}, {'channels_last' if cl else 'NCHW'}"] = r
            print(f"step batch {b:4d} {'channels_last' if cl else 'NCHW         '}  {r:8.0f} img/s "
                  f"{r * flops / 1e9:6.1f} GFLOP/s ({r * flops / 1e9 / ceiling:.0%} of matmul)")
    if args.compile:
        train = TrainSpec.from_dict({**base, "batch_size": 128, "compile": True})
        t0 = time.perf_counter()
        r = step_rate(spec, train, args.steps)
        figures["step_compiled"] = {"batch 128": r, "first_call_to_last_step_s": time.perf_counter() - t0}
        print(f"step batch  128 compiled       {r:8.0f} img/s (first call to last step {time.perf_counter() - t0:.0f} s)")
    cfg = data(args.data_root, args.workers)
    figures["pipeline"] = pipeline_rate(cfg, 128)
    print(f"pipeline alone, batch 128      {figures['pipeline']:8.0f} img/s (num_workers {args.workers})")
    if not args.no_fit:  # two epochs each: the second is the steady state, the first also compiles
        for compile_ in (False, True) if args.compile else (False,):
            train = TrainSpec.from_dict({**base, "batch_size": 128, "epochs": 2, "compile": compile_})
            (r1, s1), (r2, s2) = fit_epochs(spec, train, cfg)
            figures[f"fit{' compiled' if compile_ else ''}"] = {"images_per_s": [r1, r2], "s": [s1, s2]}
            print(f"fit, batch 128{' compiled' if compile_ else '         '}  epoch 1 {r1:5.0f} img/s {s1:4.0f} s, "
                  f"epoch 2 {r2:5.0f} img/s {s2:4.0f} s (each with validation)")
    record("bench_mcu_speed", figures, facts)


if __name__ == "__main__":
    main()
