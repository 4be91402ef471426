"""A small network's training speed against its limits: the whole loop, the in-memory step, a matmul.

    python benchmarks/bench_mcu_speed.py --data-root DIR            # ResNet-8 on CIFAR-10 (DIR/cifar-10-batches-py)
    python benchmarks/bench_mcu_speed.py --data-root DIR --compile  # also torch.compile, compile time included

At ResNet-8's size (78k params, 12.7M multiply-adds an image) per-op overhead, threads, memory format,
batch size and the data path decide the speed, not arithmetic. Printed, side by side in one run:
- matmul: a 2048x2048 fp32 matmul on the same threads, GFLOP/s (the arithmetic ceiling of these cores);
- step: `trainer.train_step` (what `fit` runs per batch) on one batch held in memory, after
  `trainer.setup_training` (channels_last, autocast as `train.amp` says), per batch size and memory format;
- pipeline: iterating the real training loader alone (decode, augmentation, collate);
- fit: two whole epochs of `trainer.fit` over the real loaders (45,000 training + 5,000 validation images);
  with --compile also compiled, whose first epoch includes the compile.
GFLOP/s of a training step count 3 x 2 x multiply-adds an image (forward, and backward at twice the forward).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from blocks import ArchSpec, build, complexity  # noqa: E402
from search.config import DataConfig, TrainSpec  # noqa: E402
from search.data.augment import DEFAULT_POLICY, policy_steps  # noqa: E402
from search.data.datasets import make_loaders  # noqa: E402
from search.trainer import fit, setup_training, train_step  # noqa: E402

RESNET8 = {"stages": 3, "blocks": [1, 1, 1], "widths": [16, 32, 64], "num_classes": 10, "input_size": 32}
AUGMENT = [{"PadIfNeeded": {"min_height": 40, "min_width": 40, "border_mode": 4}},
           {"RandomCrop": {"height": 32, "width": 32}}, {"HorizontalFlip": {"p": 0.5}}]


def matmul_gflops(n: int = 2048, reps: int = 10) -> float:
    """fp32 GFLOP/s of an n x n matmul on torch's current threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def step_rate(spec: ArchSpec, train: TrainSpec, steps: int, channels_last: bool = True) -> float:
    """Images/s of `train_step` on one in-memory batch (two warm-up steps first)."""
    state = setup_training(build(spec), train, torch.device("cpu"), steps + 2)
    if not channels_last:
        state.model.to(memory_format=torch.contiguous_format)
    x = torch.randn(train.batch_size, 3, spec.input_size, spec.input_size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, spec.num_classes, (train.batch_size,))
    state.model.train()
    for i in range(steps + 2):
        if i == 2:
            t0 = time.perf_counter()
        train_step(state, x, y)
    return steps * train.batch_size / (time.perf_counter() - t0)


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
    return n / (time.perf_counter() - t0)


def fit_epochs(spec: ArchSpec, train: TrainSpec, cfg: DataConfig) -> list[tuple[float, float]]:
    """(training images/s, seconds with validation) of each epoch of `fit` (a compiled run compiles in its first)."""
    loaders = make_loaders(cfg, policy_steps(AUGMENT, DEFAULT_POLICY), train.batch_size, seed=0)
    history = fit(build(spec), loaders.train, loaders.val, train, torch.device("cpu"), seed=0)
    return [(h.images_per_s, h.time_s) for h in history]


def main() -> None:
    """Print the figures for ResNet-8 (or --arch) at the given threads."""
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
    print(f"ResNet-8: {complexity(spec).params:,} params, {complexity(spec).flops:,} multiply-adds an image; "
          f"torch {torch.__version__}, {args.threads} thread(s), load average {os.getloadavg()[0]:.1f}")
    ceiling = matmul_gflops()
    print(f"matmul 2048^2 fp32            {ceiling:8.1f} GFLOP/s")
    for b in [int(s) for s in args.batch_sizes.split(",")]:
        train = TrainSpec.from_dict({**base, "batch_size": b})
        for cl in (True, False):
            r = step_rate(spec, train, args.steps, cl)
            print(f"step batch {b:4d} {'channels_last' if cl else 'NCHW         '}  {r:8.0f} img/s "
                  f"{r * flops / 1e9:6.1f} GFLOP/s ({r * flops / 1e9 / ceiling:.0%} of matmul)")
    if args.compile:
        train = TrainSpec.from_dict({**base, "batch_size": 128, "compile": True})
        t0 = time.perf_counter()
        r = step_rate(spec, train, args.steps)
        print(f"step batch  128 compiled       {r:8.0f} img/s (first call to last step {time.perf_counter() - t0:.0f} s)")
    cfg = data(args.data_root, args.workers)
    print(f"pipeline alone, batch 128      {pipeline_rate(cfg, 128):8.0f} img/s (num_workers {args.workers})")
    if not args.no_fit:  # two epochs each: the second is the steady state, the first also compiles
        for compile_ in (False, True) if args.compile else (False,):
            train = TrainSpec.from_dict({**base, "batch_size": 128, "epochs": 2, "compile": compile_})
            (r1, s1), (r2, s2) = fit_epochs(spec, train, cfg)
            print(f"fit, batch 128{' compiled' if compile_ else '         '}  epoch 1 {r1:5.0f} img/s {s1:4.0f} s, "
                  f"epoch 2 {r2:5.0f} img/s {s2:4.0f} s (each with validation)")

if __name__ == "__main__":
    main()
