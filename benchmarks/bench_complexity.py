"""Time the analytic `complexity(spec)` against `build(spec)` + fvcore counting on seeded random specs.

Run: python -m benchmarks.bench_complexity [--specs 50] [--seed 0] [--threads 1]
Prints one line per spec and a summary; checks on the way that both give the same numbers. Times are
CPU seconds of this process (time.process_time), so other load on a shared machine barely moves them.
The record goes to benchmarks/results/bench_complexity-<commit>.json (benchmarks.harness).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any

import torch
from fvcore.nn import FlopCountAnalysis, parameter_count

from benchmarks.harness import describe, machine, record
from blocks import ArchSpec, build, complexity


def draw_spec(rng: random.Random) -> ArchSpec:
    """A random valid design of the size a CIFAR-10 / Tiny ImageNet search would consider."""
    while True:
        stages = rng.randint(2, 4)
        d: dict[str, Any] = {
            "stages": stages, "blocks": [rng.randint(1, 4) for _ in range(stages)],
            "width": rng.choice([16, 32, 48, 64]), "kernel": rng.choice([3, 5]), "skip_kernel": rng.choice([1, 3]),
            "block": rng.choice(["basic", "bottleneck"]), "separable": rng.random() < 0.3,
            "shortcut": rng.choice(["projection", "zero_pad"]), "stem": rng.choice(["cifar", "conv_s2"]),
            "head": rng.choice(["linear", "conv"]),
        }
        if rng.random() < 0.5:
            d.update(input_size=64, num_classes=200)  # Tiny ImageNet; otherwise CIFAR-10 (32, 10)
        try:
            return ArchSpec.from_dict(d)
        except ValueError:
            continue  # e.g. a pool too large; draw again


def time_analytic(spec: ArchSpec, repeats: int) -> tuple[float, tuple[int, int]]:
    """Mean seconds per `complexity(spec)` call over `repeats` calls, and its (params, FLOPs)."""
    start = time.process_time()
    for _ in range(repeats):
        cx = complexity(spec)
    return (time.process_time() - start) / repeats, (cx.params, cx.flops)


def time_fvcore(spec: ArchSpec) -> tuple[float, float, tuple[int, int]]:
    """Seconds to build the model, seconds for fvcore params + FLOPs, and fvcore's (params, FLOPs)."""
    start = time.process_time()
    model = build(spec).eval()
    built = time.process_time()
    params = parameter_count(model)[""]
    x = torch.randn(1, spec.in_channels, spec.input_size, spec.input_size)
    fca = FlopCountAnalysis(model, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    flops = int(fca.total())
    return built - start, time.process_time() - built, (params, flops)


def main() -> None:
    """Draw the specs, time both ways, print per-spec lines and the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", type=int, default=50, help="number of random specs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the spec sampler")
    parser.add_argument("--repeats", type=int, default=200, help="complexity() calls per spec to average")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for build + fvcore")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    facts = machine()
    print(describe(facts))
    print("CPU ms of this process; FLOPs: fvcore convention, one multiply-add = one FLOP, batch 1")
    rng = random.Random(args.seed)
    specs = [draw_spec(rng) for _ in range(args.specs)]
    time_fvcore(specs[0])  # warm-up: first trace pays one-off JIT and allocator costs
    print(f"{'#':>3} {'params':>11} {'MFLOPs':>9} {'analytic ms':>12} {'build ms':>9} {'fvcore ms':>10}")
    analytic, builds, fvcores = [], [], []
    for i, spec in enumerate(specs):
        t_a, counts_a = time_analytic(spec, args.repeats)
        t_b, t_f, counts_f = time_fvcore(spec)
        if counts_a != counts_f:
            raise SystemExit(f"spec {i} mismatch: analytic {counts_a} != fvcore {counts_f}: {spec.to_dict()}")
        analytic.append(t_a)
        builds.append(t_b)
        fvcores.append(t_f)
        print(f"{i:>3} {counts_a[0]:>11} {counts_a[1] / 1e6:>9.1f} {t_a * 1e3:>12.3f} {t_b * 1e3:>9.1f} "
              f"{t_f * 1e3:>10.1f}")
    slow = [b + f for b, f in zip(builds, fvcores, strict=True)]
    mean_a, mean_f = statistics.fmean(analytic), statistics.fmean(slow)
    print(f"all {len(specs)} specs: analytic params and FLOPs equal fvcore's")
    print(f"analytic {mean_a * 1e3:.3f} ms/spec, build+fvcore {mean_f * 1e3:.0f} ms/spec "
          f"(build {statistics.fmean(builds) * 1e3:.0f} + fvcore {statistics.fmean(fvcores) * 1e3:.0f}), "
          f"ratio {mean_f / mean_a:.0f}x")
    med_a, med_f = statistics.median(analytic), statistics.median(slow)
    print(f"medians: analytic {med_a * 1e3:.3f} ms/spec, build+fvcore {med_f * 1e3:.0f} ms/spec, "
          f"ratio {med_f / med_a:.0f}x")
    figures = {"cpu_s_per_spec": {"analytic": analytic, "build": builds, "fvcore": fvcores},
               "mean_ratio": mean_f / mean_a, "median_ratio": med_f / med_a}
    record("bench_complexity", figures, facts)


if __name__ == "__main__":
    main()
