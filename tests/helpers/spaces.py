"""The search spaces the tests run on, written as YAML files in a test's folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from blocks import ArchSpec, complexity
from blocks.spec import SpecError
from search.space import MIN_WIDTH

ROOT = Path(__file__).resolve().parents[2]

# spaces/smoke.yaml shrunk to seconds: its baseline, then 3 searched trials, 2 epochs each on 180 generated
# 16 px images. The receptive-field rule rejects some samples before they are built, so the study also has
# rejected trials.
SMOKE_OVERRIDES = ["data.synthetic_train=200", "data.synthetic_test=100", "data.synthetic_size=16",
                   "data.num_workers=0", "train.epochs=2", "rules.min_receptive_field=30",
                   "search.pruner=none"]  # all 4 trained trials complete, whatever their curves

# Seconds per trial on a 2-core CPU: 8 px generated images, a few thousand parameters, no pruning, so
# every trial runs all its epochs and a test can catch one in the middle.
SPACE = {
    "data": {"dataset": "synthetic", "synthetic_train": 160, "synthetic_test": 40, "synthetic_size": 8,
             "synthetic_classes": 4, "num_workers": 0},
    "budget": {"params": 6000},
    "space": {"stages": {"int": [1, 2]}, "blocks": 1, "width": "solve", "fill": {"float": [0.6, 1.0]}},
    "train": {"epochs": 3, "batch_size": 32, "lr": {"float": [0.05, 0.2], "log": True}, "schedule": "constant"},
    "augment": [{"HorizontalFlip": {"p": 0.5}}],
    "search": {"n_trials": 4, "sampler": "random", "pruner": "none", "seed": 1},
}
FAST_HEARTBEAT = ["--heartbeat", "1", "--grace", "3"]  # a dead worker's trial is retried within seconds

# Built to show pruning: the random sampler draws some learning rates so small that a trial
# learns nothing in its first epoch, and the median pruner stops it.
PRUNING_SPACE = {
    "data": {"dataset": "synthetic", "synthetic_train": 400, "synthetic_test": 60, "synthetic_size": 12,
             "num_workers": 0},
    "budget": {"params": 20_000},
    "space": {"stages": {"int": [1, 2]}, "blocks": 1, "width": "solve", "fill": {"float": [0.5, 1.0]}},
    "train": {"epochs": 3, "batch_size": 32, "lr": {"choice": [0.2, 1.0e-6]}, "schedule": "constant"},
    "augment": [{"HorizontalFlip": {"p": 0.5}}],
    "search": {"n_trials": 5, "sampler": "random", "pruner": "median", "pruner_startup_trials": 1,
               "pruner_warmup_epochs": 0, "seed": 0},
}


def write_space(folder: Path, changes: dict | None = None, name: str = "space.yaml", *,
                base: dict = SPACE) -> Path:
    """`base` (SPACE unless given) with `changes` merged into its sections, as a YAML file in `folder`.

    A dict in `changes` updates that section's keys; anything else (a list, a scalar) replaces the section.
    """
    space = json.loads(json.dumps(base))  # a deep copy: the module's spaces are never changed
    for section, values in (changes or {}).items():
        space[section] = {**space.get(section, {}), **values} if isinstance(values, dict) else values
    path = folder / name
    path.write_text(yaml.safe_dump(space))
    return path


def widening_breaks_a_budget(spec: ArchSpec, stage: int, budget: Any) -> bool:
    """Whether `spec` with stage `stage` widened by MIN_WIDTH breaks its params, FLOPs or peak budget (or is no
    valid spec: a zero-pad shortcut cannot narrow, so a stage cannot outgrow the next one)."""
    widths = list(spec.widths)
    widths[stage] += MIN_WIDTH
    try:
        c = complexity(ArchSpec.from_dict({**spec.to_dict(), "width": widths[0], "widths": widths}))
    except SpecError:
        return True
    return any(limit is not None and used > limit for used, limit in
               ((c.params, budget.params), (c.flops, budget.flops), (c.peak_activations, budget.peak_activations)))
