"""search/malloc.py: with its thresholds set, a training-like loop of frees and allocations stops faulting pages in."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from search import malloc

# A network shaped like the MCU winner (5x5 separable, 16-56 channels): its steps free and reallocate
# megabytes, as the trials this setting is for do. Per-step counts, not a sum: a step that grows the heap to
# a new peak faults even with the thresholds set, and how often that happens depends on the heap's layout
# (ASLR), not on load. The median over ten steps after four warm-up steps is what a step usually costs.
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


def step_faults(mode: str, env: dict[str, str] | None = None) -> tuple[str, float]:
    """Whether the thresholds were set, and the median page faults of ten training steps after four warm-up steps."""
    out = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True,
                         env=env or {k: v for k, v in os.environ.items() if k not in malloc.USER_SETTINGS})
    flag, faults = out.stdout.split()
    return flag, float(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_training_steps_reuse_freed_memory_instead_of_faulting_it_in_again() -> None:
    # seen over 20 runs beside a one-thread retrain (load average 1.2-2.1), median faults a step: glibc's own
    # 2,000-9,632, kept 0-0.5; a user's MALLOC_TRIM_THRESHOLD_ 89,263. The old sum over 3 steps failed 8 of 20.
    _, default = step_faults("default")
    flag, kept = step_faults("trainer")
    assert flag == "True" and default > 100 and kept < 100


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_a_users_own_malloc_settings_stand() -> None:
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "131072"}
    flag, faults = step_faults("trainer", env)
    assert flag == "False" and faults > 100


def test_training_on_the_cpu_sets_them(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from search import trainer
    from search.config import TrainSpec

    calls: list[int] = []
    monkeypatch.setattr(trainer, "keep_freed_memory", lambda: calls.append(1) or True)
    trainer.setup_training(torch.nn.Linear(2, 2), TrainSpec.from_dict({"epochs": 1}), torch.device("cpu"), 1)
    assert calls == [1]
