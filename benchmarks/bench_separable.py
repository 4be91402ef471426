"""Separable designs' training step on the CPU: the old depthwise path against the new, side by side.

    python -m benchmarks.bench_separable                      # steps, results, profile, roofline
    python -m benchmarks.bench_separable --fit-root DIR       # also a whole epoch of `fit`, old and new
    python -m benchmarks.bench_separable --batch-only         # only the new step at batch 64, 128, 256

The old path is commit 9f6f631's own `blocks/` and `search/` (`git archive`): every depthwise conv a plain
nn.Conv2d, whose 5x5 weight gradient runs on oneDNN's generic grouped kernel, and glibc's default malloc. The
new one is this checkout: blocks.depthwise.DepthwiseConv2d (the weight gradient in column groups at most 3
wide, on oneDNN's depthwise kernel), gradients kept channels_last (blocks.grad_format) and search.malloc. Each
tree's own `train_step` (channels_last, SGD, the schedule), fp32, batch 128, MCU-space shapes, runs in a
process of its own (benchmarks/tree_child.py: the malloc setting is process-wide); each rate is the median of
rounds that alternate old and new, so load that comes and goes hits both alike. The results, profile,
roofline and layers sections compare in this process: the new model against a copy whose depthwise convs are
plain nn.Conv2d. Printed:
- steps: images/s old and new at 1 and 2 threads, per design (dense ResNet-8, the winner with 3x3 and 5x5);
- results: a fixed-seed run of old and new from the same weights on the same batches, the largest loss gap;
- profile: where the new step's time goes, by operation kind;
- roofline: the bytes each step's operations read and write (each tensor once per operation: a floor),
  against this machine's measured copy bandwidth, next to the step's measured time;
- layers: each 5x5 depthwise layer's weight gradient alone, oneDNN's generic kernel against the column
  groups (`--layers-only` prints just this);
- batch: the new step's images/s at batch 64, 128 and 256 (ResNet-8 and the winner, one thread);
- threads: the new step at 1 and 2 threads, OpenMP's threads spinning (its default, ACTIVE) or sleeping
  (OMP_WAIT_POLICY=PASSIVE) while they wait, on the quiet machine and with a busy loop taking one core
  (each configuration a child process: OpenMP reads its wait policy once, at start);
- with --fit-root: one epoch of `fit` on the 50,000 training images of DIR/cifar-10-batches-py, old and new.
The record goes to benchmarks/results/bench_separable-<commit>.json (benchmarks.harness).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.harness import ROOT, clock, describe, machine, record, side_by_side
from benchmarks.steps import matmul_gflops, random_batch
from blocks import ArchSpec, build, complexity
from blocks.depthwise import DepthwiseConv2d
from search.config import TrainSpec
from search.trainer import setup_training, train_step

BASE = {"num_classes": 10, "input_size": 32, "stages": 3}
DESIGNS = {  # the MCU space's proof: ResNet-8, the search's winner (trial 26), and its shape at 3x3
    "ResNet-8 (dense 3x3)": {**BASE, "blocks": [1, 1, 1], "widths": [16, 32, 64]},
    "winner shape, separable 3x3": {**BASE, "blocks": [3, 1, 3], "widths": [16, 56, 88], "separable": True},
    "winner (trial 26), separable 5x5": {**BASE, "blocks": [3, 1, 3], "widths": [16, 56, 88], "kernel": 5,
                                         "separable": True},
}
WINNER = "winner (trial 26), separable 5x5"
TRAIN = {"epochs": 1, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "onecycle",
         "label_smoothing": 0.1, "amp": False}


def plain(model: nn.Module) -> nn.Module:
    """A copy of `model` with every DepthwiseConv2d a plain nn.Conv2d of the same weights (commit 9f6f631's model)."""
    old = copy.deepcopy(model)
    for parent in list(old.modules()):
        for name, child in parent.named_children():
            if isinstance(child, DepthwiseConv2d):
                (kh, kw), (sh, sw) = child.kernel_size, child.stride
                conv = nn.Conv2d(child.in_channels, child.out_channels, (kh, kw), (sh, sw), (kh // 2, kw // 2),
                                 groups=child.groups, bias=False)  # DepthwiseConv2d's own padding, k // 2
                conv.load_state_dict(child.state_dict())
                setattr(parent, name, conv)
    return old


def pair(arch: dict, seed: int = 0) -> dict[str, nn.Module]:
    """The old and the new model of one design, with the same initial weights."""
    torch.manual_seed(seed)
    new = build(ArchSpec.from_dict(arch))
    return {"old": plain(new), "new": new}


def batch(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random channels_last batch of CIFAR-shaped images and labels."""
    return random_batch(n, seed=seed)


BASELINE = "9f6f631"  # the commit before issue 27: plain nn.Conv2d depthwise convs, glibc's default malloc


@contextmanager
def trees() -> Iterator[dict[str, Path]]:
    """The old tree (BASELINE's blocks and search, from git) and the new one (this checkout)."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "archive", BASELINE, "blocks", "search"], cwd=ROOT, capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        yield {"old": Path(tmp), "new": ROOT}


def child(arch: dict, *args: str, train: dict = TRAIN) -> list[str]:
    """benchmarks.tree_child's command line for `arch`; run it from a tree with child_env."""
    return [sys.executable, "-m", "benchmarks.tree_child", "--arch", json.dumps(arch), "--train", json.dumps(train),
            *args]


def child_env(env: dict | None = None) -> dict:
    """The environment of a tree_child: `benchmarks` from this checkout, `blocks` and `search` from its cwd."""
    return {**(env if env is not None else os.environ), "PYTHONPATH": str(ROOT)}


def step_rates(arch: dict, threads: int, steps: int, rounds: int, env: dict | None = None,
               which: tuple[str, ...] = ("old", "new"), train: dict = TRAIN) -> dict[str, float]:
    """Median images/s of the old tree's and the new tree's `train_step` (those in `which`), each in its own
    process (the malloc thresholds are process-wide), rounds of `steps` steps alternating between them."""
    with trees() as where:
        procs = {k: subprocess.Popen(child(arch, "steps", "--threads", str(threads), "--steps", str(steps),
                                           "--rounds", str(rounds), train=train),
                                     cwd=tree, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=child_env(env))
                 for k, tree in where.items() if k in which}
        try:
            for k, proc in procs.items():
                assert proc.stdout is not None
                ready, blocks_file = proc.stdout.readline().split()
                assert ready == "ready" and Path(blocks_file).is_relative_to(where[k]), (k, blocks_file)

            def timer(proc: subprocess.Popen) -> Callable[[], float]:
                def one_round() -> float:
                    assert proc.stdin is not None and proc.stdout is not None
                    proc.stdin.write("\n")
                    proc.stdin.flush()
                    return float(proc.stdout.readline())
                return one_round

            return side_by_side({k: timer(proc) for k, proc in procs.items()}, rounds).medians()
        finally:
            for proc in procs.values():
                proc.kill()
                proc.wait()


def trained(model: nn.Module, steps: int, threads: int) -> tuple[list[float], dict[str, torch.Tensor]]:
    """Losses of `steps` fixed-seed training steps of `model` on `threads` threads, and its weights after them."""
    torch.set_num_threads(threads)
    torch.manual_seed(2)
    state = setup_training(model, TrainSpec.from_dict(TRAIN), torch.device("cpu"), steps)
    state.model.train()
    losses = [train_step(state, *batch(128, 100 + i))[1].item() for i in range(steps)]
    return losses, dict(model.state_dict())


def gaps(a: tuple[list[float], dict], b: tuple[list[float], dict]) -> tuple[float, float]:
    """Largest loss gap and largest relative weight gap between two runs."""
    loss = max(abs(x - y) for x, y in zip(a[0], b[0], strict=True))
    weight = max(((a[1][n] - b[1][n]).abs().max() / a[1][n].abs().max().clamp_min(1e-12)).item()
                 for n in a[1] if a[1][n].is_floating_point())
    return loss, weight


def same_results(arch: dict, steps: int) -> dict[str, tuple[float, float]]:
    """Old and new from the same weights on the same batches; beside it, fp32's own noise: the old path on
    1 thread against 2 (oneDNN sums in another order)."""
    models = pair(arch, seed=1)
    runs = {"old, 1 thread": trained(copy.deepcopy(models["old"]), steps, 1),
            "new, 1 thread": trained(models["new"], steps, 1),
            "old, 2 threads": trained(models["old"], steps, 2)}
    return {"new against old": gaps(runs["old, 1 thread"], runs["new, 1 thread"]),
            "old on 2 threads against 1 (fp32 noise)": gaps(runs["old, 1 thread"], runs["old, 2 threads"])}


KINDS = (("conv backward", ("convolution_backward",)), ("conv forward", ("convolution", "conv2d")),
         ("batch-norm forward", ("native_batch_norm", "batch_norm")), ("batch-norm backward", ("batch_norm_backward",)),
         ("ReLU", ("relu", "threshold", "clamp")), ("residual add", ("aten::add",)),
         ("copies (incl. the column groups' shifted inputs)", ("copy_", "fill_", "zero_")))


def profile_split(arch: dict, threads: int) -> list[tuple[str, float]]:
    """Share of the new step's self CPU time by operation kind."""
    torch.set_num_threads(threads)
    state = setup_training(pair(arch)["new"], TrainSpec.from_dict(TRAIN), torch.device("cpu"), 20)
    x, y = batch(128, 0)
    for _ in range(2):
        train_step(state, x, y)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            train_step(state, x, y)
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events)
    shares: Counter[str] = Counter()
    for e in events:
        kind = next((name for name, keys in KINDS if any(e.key.endswith(k) or e.key == k for k in keys)), "other")
        shares[kind] += e.self_cpu_time_total / total
    return [(kind, float(share)) for kind, share in shares.most_common()]


class Traffic(TorchDispatchMode):
    """Bytes each aten operation reads and writes: its tensor inputs and outputs, each once (views excluded)."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        tensors_in = [t for t in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        tensors_out = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
        inputs = {t.untyped_storage().data_ptr() for t in tensors_in}
        if any(t.untyped_storage().data_ptr() in inputs for t in tensors_out) and not func._schema.is_mutable:
            return out  # a view: no data moves
        self.bytes += sum(t.numel() * t.element_size() for t in tensors_in + tensors_out)
        return out


def step_bytes(arch: dict) -> int:
    """Bytes one new training step's operations read and write (a floor on its memory traffic)."""
    state = setup_training(pair(arch)["new"], TrainSpec.from_dict(TRAIN), torch.device("cpu"), 4)
    x, y = batch(128, 0)
    train_step(state, x, y)
    with Traffic() as t:
        train_step(state, x, y)
    return t.bytes


def bandwidth(threads: int, mib: int = 256, reps: int = 5) -> float:
    """GB/s of copying a `mib` MiB fp32 tensor into another (read + write counted)."""
    torch.set_num_threads(threads)
    a = torch.randn(mib * 2**18)
    b = torch.empty_like(a)
    b.copy_(a)
    return 2 * a.numel() * 4 * reps / clock(partial(b.copy_, a), reps) / 1e9


def conv_roofline(arch: dict, bw: float, reps: int = 10) -> dict[str, dict[str, float]]:
    """Each conv of the new model trained alone (forward, input and weight gradients; batch 128, one thread,
    channels_last) against its roofline bound: the larger of its multiply-adds (3x the forward's) at the
    matmul's rate and its bytes (input, output and weight, each read or written three times) at `bw`.
    Summed by kind: depthwise, pointwise, other (the stem)."""
    torch.set_num_threads(1)
    model = pair(arch)["new"].to(memory_format=torch.channels_last)
    shapes: dict[nn.Conv2d, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def note(m: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        if isinstance(m, nn.Conv2d):  # the hooks below are on convolutions only
            shapes[m] = (tuple(inputs[0].shape), tuple(output.shape))

    hooks = [m.register_forward_hook(note) for m in model.modules() if isinstance(m, nn.Conv2d)]
    model(batch(128, 0)[0])
    for h in hooks:
        h.remove()
    peak_macs = matmul_gflops(torch.device("cpu")) / 2 * 1e9  # a multiply-add is 2 of the matmul's FLOPs
    out: dict[str, dict[str, float]] = {}
    for conv, (shape_in, shape_out) in shapes.items():
        x = torch.randn(shape_in).contiguous(memory_format=torch.channels_last).requires_grad_()
        grad = torch.randn(shape_out).contiguous(memory_format=torch.channels_last)

        def train_once(conv: nn.Conv2d = conv, x: torch.Tensor = x, grad: torch.Tensor = grad) -> None:
            torch.autograd.grad(conv(x), (x, conv.weight), grad)  # both gradients, none accumulated

        train_once()
        seconds = clock(train_once, reps) / reps
        macs = 3 * conv.weight.numel() * shape_out[0] * shape_out[2] * shape_out[3]
        moved = 3 * 4 * (math.prod(shape_in) + math.prod(shape_out) + conv.weight.numel())
        kind = "depthwise" if conv.groups > 1 else "pointwise" if conv.kernel_size == (1, 1) else "other"
        sums = out.setdefault(kind, {"measured_s": 0.0, "bound_s": 0.0, "macs": 0.0, "bytes": 0.0})
        sums["measured_s"] += seconds
        sums["bound_s"] += max(macs / peak_macs, moved / (bw * 1e9))
        sums["macs"] += macs
        sums["bytes"] += moved
    out["peak"] = {"GMACps": peak_macs / 1e9, "GBps": bw}
    return out


def fit_epoch(root: str, threads: int) -> dict[str, float]:
    """Seconds of one `fit` epoch of the winner on the 50,000 training images (no validation), old tree and new,
    each in its own process, one after the other."""
    with trees() as where:
        return {k: float(subprocess.run(child(DESIGNS[WINNER], "fit", "--threads", str(threads), "--root", root),
                                        cwd=tree, env=child_env(), capture_output=True, text=True,
                                        check=True).stdout.split()[-1])
                for k, tree in where.items()}


LAYERS = ((16, 32, 1), (16, 32, 2), (56, 16, 1), (88, 8, 1))  # (channels, input side, stride) in the winner


def layer_times(reps: int = 20) -> dict[str, dict[str, float]]:
    """ms of one 5x5 depthwise weight gradient at batch 128, one thread: oneDNN's own call against weight_grad."""
    from blocks.depthwise import weight_grad

    torch.set_num_threads(1)
    out = {}
    for channels, side, stride in LAYERS:
        x = torch.randn(128, channels, side, side).contiguous(memory_format=torch.channels_last)
        side_out = (side - 1) // stride + 1
        grad = torch.randn(128, channels, side_out, side_out).contiguous(memory_format=torch.channels_last)
        w = torch.empty(channels, 1, 5, 5)
        runs = {"old": partial(torch.ops.aten.convolution_backward, grad, x, w, None, [stride] * 2, [2, 2], [1, 1],
                               False, [0, 0], channels, [False, True, False]),
                "new": partial(weight_grad, grad, x, w, (stride, stride), (2, 2))}
        timers = {k: partial(lambda run: 1e3 * clock(run), run) for k, run in runs.items()}
        out[f"{channels} channels, {side} px, stride {stride}"] = side_by_side(timers, reps).medians()
    return out


def print_layers(figures: dict) -> None:
    """The layers section, printed and kept in `figures`."""
    figures["layers_ms"] = layer_times()
    print("\nlayers: one 5x5 depthwise weight gradient, batch 128, one thread, median ms (old = oneDNN's generic "
          "kernel, new = column groups)")
    for k, v in figures["layers_ms"].items():
        print(f"  {k}: old {v['old']:.2f}, new {v['new']:.2f} ({v['old'] / v['new']:.1f}x)", flush=True)


def thread_rates(steps: int, rounds: int) -> dict[str, float]:
    """images/s of the new winner step per (threads, wait policy), quiet and beside a busy loop on one core
    (each configuration its own process: OpenMP reads its wait policy once, at start)."""
    out = {}
    for busy in (False, True):
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            for threads, policy in ((1, "ACTIVE"), (2, "ACTIVE"), (2, "PASSIVE")):
                env = {**os.environ, "OMP_WAIT_POLICY": policy}
                out[f"{'one core busy' if busy else 'quiet'}, {threads} thread(s), {policy}"] = step_rates(
                    DESIGNS[WINNER], threads, steps, rounds, env=env, which=("new",))["new"]
        finally:
            if spinner is not None:
                spinner.kill()
    return out


def batch_rates(steps: int, rounds: int, sizes: tuple[int, ...] = (64, 128, 256)) -> dict[str, float]:
    """The new step's images/s at other batch sizes, one thread, ResNet-8 and the winner: whether a batch other
    than the spaces' 128 would train faster per image (it would also train differently: not a default)."""
    return {f"{name}, batch {size}": step_rates(DESIGNS[name], 1, max(1, steps * 128 // size), rounds, which=("new",),
                                                train={**TRAIN, "batch_size": size})["new"]
            for name in ("ResNet-8 (dense 3x3)", WINNER) for size in sizes}


def print_batches(figures: dict, steps: int, rounds: int) -> None:
    """batch_rates(), printed and kept in `figures`."""
    figures["batch"] = batch_rates(steps, rounds)
    print("\nbatch size (the new step, 1 thread, images/s):")
    for k, v in figures["batch"].items():
        print(f"  {k}: {v:.0f}", flush=True)


def main() -> None:
    """Print every figure and record them (benchmarks/results/bench_separable-<commit>.json)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=6, help="training steps a round")
    p.add_argument("--rounds", type=int, default=5, help="rounds, alternating old and new")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--fit-root", help="also one whole epoch of fit on DIR/cifar-10-batches-py, old and new")
    p.add_argument("--fit-threads", default="2", help="threads of the --fit-root epochs")
    p.add_argument("--layers-only", action="store_true", help="only the per-layer weight-gradient times")
    p.add_argument("--batch-only", action="store_true", help="only the new step's images/s at batch 64, 128, 256")
    args = p.parse_args()
    facts = machine()
    print(describe(facts))
    figures: dict = {"steps": {}}
    if args.layers_only:
        layers: dict = {}
        print_layers(layers)
        record("bench_separable_layers", layers, facts)
        return
    if args.batch_only:
        batches: dict = {}
        print_batches(batches, args.steps, args.rounds)
        record("bench_separable_batch", batches, facts)
        return
    print("| design | multiply-adds | threads | old img/s | new img/s | new / old | GMAC/s new (3x forward) |")
    print("|---|---|---|---|---|---|---|")
    for name, arch in DESIGNS.items():
        macs = complexity(ArchSpec.from_dict(arch)).flops
        for threads in (int(t) for t in args.threads.split(",")):
            r = step_rates(arch, threads, args.steps, args.rounds)
            figures["steps"][f"{name}, {threads} thread(s)"] = r
            print(f"| {name} | {macs / 1e6:.2f} M | {threads} | {r['old']:.0f} | {r['new']:.0f} | "
                  f"{r['new'] / r['old']:.2f}x | {3 * macs * r['new'] / 1e9:.1f} |", flush=True)
    figures["results"] = same_results(DESIGNS[WINNER], steps=20)
    print("\nresults: 20 fixed-seed steps of the winner from the same weights on the same batches")
    for k, (loss, weight) in figures["results"].items():
        print(f"  {k}: largest loss gap {loss:.2e}, largest relative weight gap {weight:.2e}")
    split = profile_split(DESIGNS[WINNER], 1)
    figures["profile"] = dict(split)
    print("profile of the new step (winner, 1 thread): " + ", ".join(f"{k} {v:.0%}" for k, v in split))
    print("\nroofline (1 thread): bytes each operation reads and writes, each tensor once, at the copy bandwidth")
    bw = bandwidth(1)
    figures["roofline"] = {"copy_GBps_1_thread": bw}
    for name, arch in DESIGNS.items():
        moved = step_bytes(arch)
        measured = figures["steps"].get(f"{name}, 1 thread(s)", {}).get("new")
        floor_s = moved / (bw * 1e9)
        figures["roofline"][name] = {"bytes_per_step": moved, "floor_s": floor_s}
        line = f"  {name}: {moved / 1e6:.0f} MB a step of 128 images, floor {1e3 * floor_s:.0f} ms at {bw:.1f} GB/s"
        if measured:
            step_s = 128 / measured
            line += f"; measured {1e3 * step_s:.0f} ms: the floor is {floor_s / step_s:.0%} of it"
        print(line, flush=True)
    roof = figures["roofline"]["convs"] = conv_roofline(DESIGNS[WINNER], bw)
    print(f"  the winner's convs, each trained alone (bound: multiply-adds at the matmul's "
          f"{roof['peak']['GMACps']:.0f} GMAC/s or bytes at {bw:.1f} GB/s, the larger):")
    for kind, v in roof.items():
        if kind != "peak":
            print(f"    {kind}: {v['bytes'] / v['macs']:.1f} bytes a multiply-add, measured {1e3 * v['measured_s']:.1f} "
                  f"ms, bound {1e3 * v['bound_s']:.1f} ms: {v['bound_s'] / v['measured_s']:.0%} of the bound's speed",
                  flush=True)
    print_layers(figures)
    print_batches(figures, args.steps, args.rounds)
    print("\nthreads (the winner's new step, images/s; OpenMP waits spinning = ACTIVE, sleeping = PASSIVE):")
    figures["threads"] = thread_rates(args.steps, args.rounds)
    for k, v in figures["threads"].items():
        print(f"  {k}: {v:.0f}", flush=True)
    if args.fit_root:
        for threads in (int(t) for t in args.fit_threads.split(",")):
            s = fit_epoch(args.fit_root, threads)
            figures.setdefault("fit_epoch_s", {})[threads] = s
            print(f"fit, one epoch of the winner on 50,000 images, {threads} thread(s): old {s['old']:.0f} s, "
                  f"new {s['new']:.0f} s ({s['old'] / s['new']:.2f}x)", flush=True)
    record("bench_separable", figures, facts)


if __name__ == "__main__":
    main()
