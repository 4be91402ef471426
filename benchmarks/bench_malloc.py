"""Page faults a training step costs with glibc's own malloc thresholds and with the trainer's (search/malloc.py).

    python -m benchmarks.bench_malloc [--runs 20]

Each run is a fresh process that trains a network shaped like the MCU winner (5x5 separable, 16-56 channels)
for 4 warm-up steps and 10 measured ones, one thread, batch 128, and prints the median minor page faults of
the 10 (tests/search/test_malloc.py runs the same `step_faults`, once per mode). Three modes, a run of each in
turn: glibc's own thresholds (`default`), the trainer's (`kept`), and the trainer under a user's
MALLOC_TRIM_THRESHOLD_ (`user`, which search/malloc.py leaves standing). Printed: each mode's median faults
over the runs, with the lowest and highest, and how many runs met the test's assertions (default > 100, kept
< 100 with the thresholds set, user > 100 with them not set). Faults count pages, not time: load changes them
only through the heap's layout, so the figures may be taken beside other work (say what ran beside).
The record goes to benchmarks/results/bench_malloc-<commit>.json (benchmarks.harness).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

from benchmarks.harness import ROOT, describe, machine, record

# A step that grows the heap to a new peak faults even with the thresholds set, and how often that happens
# depends on the heap's layout (ASLR), not on load: the median over ten steps after four warm-up steps is
# what a step usually costs.
STEPS = """
import resource, statistics, sys, torch
from blocks import ArchSpec, build
from search import trainer
from search.config import TrainSpec

if sys.argv[1] == "default":  # glibc's own thresholds
    trainer.keep_freed_memory = lambda: False
torch.set_num_threads(1)
spec = {"num_classes": 10, "input_size": 32, "stages": 2, "blocks": [3, 1], "widths": [16, 56], "kernel": 5,
        "separable": True}
state = trainer.setup_training(build(ArchSpec.from_dict(spec)), TrainSpec.from_dict({"epochs": 1, "batch_size": 128}),
                               torch.device("cpu"), 10)
x, y = torch.randn(128, 3, 32, 32).contiguous(memory_format=torch.channels_last), torch.randint(0, 10, (128,))
for _ in range(4):
    trainer.train_step(state, x, y)
faults = []
for _ in range(10):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    trainer.train_step(state, x, y)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(__import__("search.malloc").malloc._state.get("set"), statistics.median(faults))
"""
USER_THRESHOLD = {"MALLOC_TRIM_THRESHOLD_": "131072"}  # a user's own setting, which the trainer leaves alone
LIMIT = 100  # faults a step: the test's line between "reuses freed memory" and "faults it in again"


def step_faults(mode: str, env: dict[str, str] | None = None) -> tuple[str, float]:
    """Whether the thresholds were set, and the median page faults of ten training steps after four warm-up steps
    (`mode` "default": glibc's own thresholds; anything else: the trainer's). Without `env`, the process runs
    with this one's environment less any malloc settings of the user's."""
    from search import malloc

    out = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True, cwd=ROOT,
                         env=env or {k: v for k, v in os.environ.items() if k not in malloc.USER_SETTINGS})
    flag, faults = out.stdout.split()
    return flag, float(faults)


def main() -> None:
    """Print each mode's faults over --runs runs, and how many met the test's assertions; record them."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=20, help="runs of each mode, taken in turn (default 20)")
    args = p.parse_args()
    if args.runs < 1:
        p.error("--runs must be 1 or more")
    facts = machine()
    print(describe(facts))
    modes = {"default": ("default", None, lambda flag, f: f > LIMIT),
             "kept": ("trainer", None, lambda flag, f: flag == "True" and f < LIMIT),
             "user": ("trainer", {**os.environ, **USER_THRESHOLD}, lambda flag, f: flag == "False" and f > LIMIT)}
    faults: dict[str, list[float]] = {name: [] for name in modes}
    passed = dict.fromkeys(modes, 0)
    for run in range(1, args.runs + 1):
        for name, (mode, env, holds) in modes.items():
            flag, f = step_faults(mode, env)
            faults[name].append(f)
            passed[name] += holds(flag, f)
        print(f"run {run}/{args.runs}: " + ", ".join(f"{name} {got[-1]:,.1f}" for name, got in faults.items()),
              flush=True)
    figures = {}
    print(f"median page faults a training step, {args.runs} runs of each mode:")
    for name, got in faults.items():
        figures[name] = {"median": statistics.median(got), "min": min(got), "max": max(got), "met": passed[name]}
        print(f"  {name:>7}: {figures[name]['median']:,.1f} (runs {min(got):,.1f}-{max(got):,.1f}); "
              f"the test's assertion held in {passed[name]} of {args.runs}")
    record("bench_malloc", {"runs": args.runs, **figures}, facts)


if __name__ == "__main__":
    main()
