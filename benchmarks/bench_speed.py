"""The speed table of BENCHMARKS.md: old vs new training path, achieved GFLOP/s, data path, loop, compile.

    python -m benchmarks.bench_speed                 # this machine (CPU), 1 thread
    python -m benchmarks.bench_speed --device cuda   # the same table on a GPU machine

Every figure is a ratio of two paths measured side by side, alternating, in this one run (absolute
figures on a shared machine move with its load, ratios much less). FLOPs: fvcore convention (one
multiply-add = one FLOP) for the model; GFLOP/s are real FLOP/s (2 per multiply-add) everywhere. The record
goes to benchmarks/results/bench_speed-<commit>.json (benchmarks.harness), a run's tables under their --only keys.
"""

from __future__ import annotations

import argparse
import io
import os
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch

from benchmarks.harness import clock, describe, machine, record, side_by_side
from benchmarks.steps import matmul_gflops
from blocks import ArchSpec, build, complexity
from search.config import TrainSpec
from search.data import augment
from search.data.batch_augment import BatchAugment, split_policy
from search.data.batches import ArrayBatches, DeviceBatches, as_is
from search.device import autocast, prepare_model, use_amp
from search.optim import make_optimizer
from search.progress import Progress
from search.trainer import fit

DENSE = {"stages": 3, "blocks": [2, 2, 2], "width": 64}  # 2.78M params, 422M FLOPs at 32 px
SEPARABLE = {**DENSE, "separable": True}  # 0.41M params, 62M FLOPs
POLICY = [{"PadIfNeeded": {"min_height": 40, "min_width": 40, "border_mode": 4}},
          {"RandomCrop": {"height": 32, "width": 32}}, {"HorizontalFlip": {"p": 0.5}},
          {"CoarseDropout": {"num_holes_range": [1, 1], "hole_height_range": [8, 8], "hole_width_range": [8, 8],
                             "p": 0.5}}]
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def sync(device: torch.device) -> Callable[[], None] | None:
    """What waits for the device's queued work (CUDA only), for harness.clock."""
    return torch.cuda.synchronize if device.type == "cuda" else None


def step_rate(arch: dict, device: torch.device, amp: bool, channels_last: bool, batch: int, steps: int,
              compile_model: bool = False) -> Callable[[], float]:
    """A timer of training steps (forward, backward, SGD) on one in-memory batch: call it for images/s."""
    spec = ArchSpec.from_dict({**arch, "num_classes": 10, "input_size": 32})
    model = prepare_model(build(spec), device) if channels_last else build(spec).to(device)
    step_model = torch.compile(model) if compile_model else model
    opt = make_optimizer(model, TrainSpec())
    x = torch.randn(batch, 3, 32, 32, device=device)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    y = torch.randint(0, 10, (batch,), device=device)
    loss_fn = torch.nn.CrossEntropyLoss()

    def one() -> None:
        with autocast(device, amp):
            loss = loss_fn(step_model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    clock(one, 1, sync(device))  # warm-up (allocator, oneDNN/cuDNN kernel choice; the compile when compiling)
    return lambda: steps * batch / clock(one, steps, sync(device))


def training_table(device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """Old path (fp32, NCHW) against the new one (train.amp auto: bf16 + channels_last here?) per design."""
    amp = use_amp("auto", device)
    print(f"\n## training step, batch {args.batch}, {args.steps} steps x {args.rounds} rounds, in-memory batch")
    print(f"new path = train.amp auto on {device.type}: {'bf16 autocast' if amp else 'fp32'} + channels_last")
    print("| design | params | MFLOPs/img | old img/s | new img/s | new/old | new GFLOP/s | of bf16 matmul |")
    print("|---|---|---|---|---|---|---|---|")
    dtype = torch.bfloat16 if amp else torch.float32
    figures = {}
    for name, arch in (("dense", DENSE), ("separable", SEPARABLE)):
        cx = complexity(ArchSpec.from_dict({**arch, "num_classes": 10, "input_size": 32}))
        r = side_by_side({"old": step_rate(arch, device, False, False, args.batch, args.steps),
                          "new": step_rate(arch, device, amp, True, args.batch, args.steps),
                          "peak": partial(matmul_gflops, device, dtype)}, args.rounds)
        peak = r["peak"]
        gflops = r["new"] * cx.flops * 2 * 3 / 1e9  # training = forward + 2x for backward; 2 FLOPs a multiply-add
        figures[name] = {**r.figures(), "new_over_old": r.ratio("new", "old"), "new_gflops": gflops}
        print(f"| {name} | {cx.params / 1e6:.2f}M | {cx.flops / 1e6:.0f} | {r['old']:.1f} | {r['new']:.1f} | "
              f"{r.ratio('new', 'old'):.2f}x | {gflops:.0f} | {gflops / peak:.0%} of {peak:.0f} |")
    return figures


def data_table(device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """CIFAR policy (pad-crop, flip, cutout, normalise): albumentations per image vs the batched twins."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.data_images, 32, 32, 3), dtype=np.uint8)
    pipeline = augment.train_pipeline(POLICY, "bench", seed=0)
    collate = augment.NormalizeCollate(MEAN, STD)
    _, twins = split_policy(list(pipeline.transforms))
    ours = BatchAugment(twins, MEAN, STD)
    batch = args.data_batch

    def albumentations() -> None:
        for i in range(0, len(images), batch):
            collate([(pipeline(image=im)["image"], 0) for im in images[i:i + batch]])

    def batched() -> None:
        ds = ArrayBatches(images, np.zeros(len(images), np.int64), np.arange(len(images)))
        loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, collate_fn=as_is,
                                             generator=torch.Generator().manual_seed(0))
        for _ in DeviceBatches(loader, ours, device):
            pass

    timers = {"albumentations": lambda: len(images) / clock(albumentations),
              "batched": lambda: len(images) / clock(batched, 1, sync(device))}
    kornia_note = ""
    try:
        timers["kornia"] = kornia_timer(images, batch, device)
    except ImportError:
        kornia_note = " (kornia not installed: pip install kornia to add its column)"
    r = side_by_side(timers, args.rounds)
    print(f"\n## data path, CIFAR policy (pad 4 reflect101 + crop, flip, 8x8 cutout, normalise), batch {batch}, "
          f"{torch.get_num_threads()} thread(s), {len(images)} images{kornia_note}")
    print("| path | img/s | vs albumentations |")
    print("|---|---|---|")
    for k, v in r.medians().items():
        print(f"| {k} | {v:,.0f} | {r.ratio(k, 'albumentations'):.1f}x |")
    return r.figures()


def kornia_timer(images: np.ndarray, batch: int, device: torch.device) -> Callable[[], float]:
    """kornia's nearest equivalent (RandomCrop with reflect padding, flip, RandomErasing of a fixed 8x8 area)."""
    import kornia.augmentation as K

    aug = K.AugmentationSequential(
        K.RandomCrop((32, 32), padding=4, padding_mode="reflect"), K.RandomHorizontalFlip(),
        K.RandomErasing(scale=(64 / 1024, 64 / 1024), ratio=(1.0, 1.0), p=0.5),
        K.Normalize(mean=torch.tensor(MEAN), std=torch.tensor(STD))).to(device)
    data = torch.from_numpy(images).permute(0, 3, 1, 2)

    def augment_all() -> None:
        for i in range(0, len(data), batch):
            aug(data[i:i + batch].to(device).float() / 255)

    return lambda: len(data) / clock(augment_all, 1, sync(device))


def loop_table(device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """`fit` over uint8 batches augmented on the device against training steps on one in-memory batch."""
    amp = use_amp("auto", device)
    n = args.batch * args.steps
    images = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = np.random.default_rng(1).integers(0, 10, n)
    _, twins = split_policy(augment.build_transforms(POLICY, "bench"))
    spec = ArchSpec.from_dict({**DENSE, "num_classes": 10, "input_size": 32})

    def loop() -> float:
        loader = torch.utils.data.DataLoader(ArrayBatches(images, labels, np.arange(n)), batch_size=args.batch,
                                             shuffle=True, drop_last=True, collate_fn=as_is,
                                             generator=torch.Generator().manual_seed(0))
        history = fit(build(spec), DeviceBatches(loader, BatchAugment(twins, MEAN, STD), device), None,
                      TrainSpec(epochs=1, batch_size=args.batch), device)
        return history[0].images_per_s

    r = side_by_side({"limit": step_rate(DENSE, device, amp, True, args.batch, args.steps), "loop": loop},
                     args.rounds)
    print(f"\n## whole loop (fit, data gathered and augmented on {device.type}) vs the in-memory compute limit, dense")
    print(f"| compute limit img/s | loop img/s | loop / limit |\n|---|---|---|\n"
          f"| {r['limit']:.1f} | {r['loop']:.1f} | {r.ratio('loop', 'limit'):.0%} |")
    return {**r.figures(), "loop_over_limit": r.ratio("loop", "limit")}


def compile_table(device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """torch.compile: one-off compile time against the time it saves per step, dense design, new path."""
    amp = use_amp("auto", device)
    t0 = time.perf_counter()
    compiled = step_rate(DENSE, device, amp, True, args.batch, args.steps, compile_model=True)
    compile_s = time.perf_counter() - t0  # includes one eager-sized step and model build, as a trial pays it
    r = side_by_side({"eager": step_rate(DENSE, device, amp, True, args.batch, args.steps), "compiled": compiled},
                     args.rounds)
    saved = args.batch / r["eager"] - args.batch / r["compiled"]  # seconds saved per step
    breakeven = f"{compile_s / saved:,.0f} steps" if saved > 0 else "never (compiled is not faster)"
    print(f"\n## train.compile, dense, batch {args.batch}")
    print("| eager img/s | compiled img/s | compiled/eager | compile s (first step) | pays off after |")
    print(f"|---|---|---|---|---|\n| {r['eager']:.1f} | {r['compiled']:.1f} | {r.ratio('compiled', 'eager'):.2f}x | "
          f"{compile_s:.0f} | {breakeven} |")
    return {**r.figures(), "compile_s": compile_s, "pays_off_after": breakeven}


def progress_table(device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """The per-batch progress hook (search.progress.Progress): its cost per batch against one training step."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    calls = 20_000

    def epochs(hook: Progress) -> None:
        for i in range(calls):  # 1,000 batches an epoch
            hook(1 + i // 1000, i % 1000 + 1, 1000, args.batch)

    cost = {}
    for name, stream in (("log file or pipe (a plain line every 30 s)", io.StringIO()),
                         ("terminal (tqdm bar, redrawn every 0.5 s)", Terminal())):
        cost[name] = clock(partial(epochs, Progress("bench", calls // 1000, later_runs=5, stream=stream))) / calls
    step_s = args.batch / step_rate(DENSE, device, use_amp("auto", device), True, args.batch, args.steps)()
    print(f"\n## progress hook, per batch, against one training step (dense, new path, batch {args.batch}: "
          f"{step_s * 1e3:.0f} ms)")
    print("| output | µs per batch | of a training step |\n|---|---|---|")
    for name, s in cost.items():
        print(f"| {name} | {s * 1e6:.1f} | {s / step_s:.4%} |")
    return {"s_per_batch": cost, "step_s": step_s}


def main() -> None:
    """Print the tables and record them."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads (CPU); per-core figures use 1")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=5, help="training steps per timing")
    p.add_argument("--rounds", type=int, default=3, help="alternating timings per path (the median is shown)")
    p.add_argument("--data-images", type=int, default=8192)
    p.add_argument("--data-batch", type=int, default=256, help="batch of the data-path table")
    p.add_argument("--only", nargs="*", default=["train", "data", "loop", "compile", "progress"])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    facts = machine()
    print(f"{describe(facts)}; {device.type}, bf16 native: {use_amp('auto', device)}")
    tables = {"train": training_table, "data": data_table, "loop": loop_table, "compile": compile_table,
              "progress": progress_table}
    figures = {"device": device.type, **{key: tables[key](device, args) for key in args.only}}
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    record("bench_speed", figures, facts)


if __name__ == "__main__":
    main()
