"""search/malloc.py: with its thresholds set, a training-like loop of frees and allocations stops faulting pages in."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from search import malloc

STEPS = """
import resource, sys, torch
from blocks import ArchSpec, build
from search import trainer
from search.config import TrainSpec

if sys.argv[1] == "default":  # glibc's own thresholds
    trainer.keep_freed_memory = lambda: False
torch.set_num_threads(1)
spec = {"num_classes": 10, "input_size": 32, "stages": 2, "blocks": [1, 1], "widths": [16, 32]}
state = trainer.setup_training(build(ArchSpec.from_dict(spec)), TrainSpec.from_dict({"epochs": 1, "batch_size": 128}),
                               torch.device("cpu"), 10)
x, y = torch.randn(128, 3, 32, 32).contiguous(memory_format=torch.channels_last), torch.randint(0, 10, (128,))
for _ in range(3):
    trainer.train_step(state, x, y)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    trainer.train_step(state, x, y)
print(__import__("search.malloc").malloc._state.get("set"), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def step_faults(mode: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    """Whether the thresholds were set, and the page faults of three training steps after three warm-up steps."""
    out = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True,
                         env=env or {k: v for k, v in os.environ.items() if k not in malloc.USER_SETTINGS})
    flag, faults = out.stdout.split()
    return flag, int(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_training_steps_reuse_freed_memory_instead_of_faulting_it_in_again() -> None:
    _, default = step_faults("default")  # seen: 4,500-9,400 over three steps
    flag, kept = step_faults("trainer")  # seen: 0-1,000
    assert flag == "True" and default > 3_000 and kept < default / 3


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_a_users_own_malloc_settings_stand() -> None:
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "131072"}
    flag, faults = step_faults("trainer", env)
    assert flag == "False" and faults > 3_000


def test_training_on_the_cpu_sets_them(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from search import trainer
    from search.config import TrainSpec

    calls: list[int] = []
    monkeypatch.setattr(trainer, "keep_freed_memory", lambda: calls.append(1) or True)
    trainer.setup_training(torch.nn.Linear(2, 2), TrainSpec.from_dict({"epochs": 1}), torch.device("cpu"), 1)
    assert calls == [1]
