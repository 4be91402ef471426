"""The latency budget: its rejections count towards search.max_rejections, and the dry run names it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import optuna
import pytest

from search.config import load_config
from search.device import resolve_device
from search.dryrun import summarise
from search.objective import Objective
from tests.helpers.spaces import PRUNING_SPACE, write_space

FAST = ["data.synthetic_train=40", "data.synthetic_test=10", "train.epochs=1"]


def test_latency_rejections_stop_the_search(tmp_path: Path) -> None:
    """Every design is over a 1e-9 ms budget (an injected probe says 1 ms): the search gives up after 3."""
    cfg = load_config(write_space(tmp_path, base=PRUNING_SPACE),
                      [*FAST, "budget.latency_ms=1.0e-9", "search.max_rejections=3"])
    lines: list[str] = []
    objective = Objective(cfg, tmp_path / "results", "cpu", log=lines.append, probe=lambda *a: 1.0)
    study = optuna.create_study(direction="maximize")
    for _ in range(3):
        trial = study.ask()
        with pytest.raises(optuna.TrialPruned, match="latency 1.00 ms at batch 1 is over the budget"):
            objective(trial)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert objective.gave_up and objective.rejections_in_a_row == 3
    assert lines[-1].startswith("stopping: 3 samples in a row broke the budget or rules")


def test_a_trained_trial_ends_the_run_of_rejections(tmp_path: Path) -> None:
    """A design within the latency budget resets the count (it is reset once the latency is checked)."""
    cfg = load_config(write_space(tmp_path, base=PRUNING_SPACE),
                      [*FAST, "budget.latency_ms=5", "search.max_rejections=3"])
    times = iter([9.0, 9.0, 1.0])  # ms: two over the budget, then one within it
    objective = Objective(cfg, tmp_path / "results", "cpu", log=lambda s: None, probe=lambda *a: next(times, 1.0))
    study = optuna.create_study(direction="maximize")
    counts = []
    for _ in range(3):
        trial = study.ask()
        try:
            study.tell(trial, objective(trial))
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        counts.append(objective.rejections_in_a_row)
    assert counts == [1, 2, 0] and not objective.gave_up


def test_dry_run_names_the_latency_budget(tmp_path: Path) -> None:
    """The dry run says the latency budget is set and measured per trial (it times no inference itself)."""
    cfg = load_config(write_space(tmp_path, base=PRUNING_SPACE), ["budget.latency_ms=2.5", "budget.latency_batch=8"])
    lines = summarise(cfg, [], Counter({"over the params budget": 5}), 100, 10, resolve_device("cpu"))
    assert sum("latency budget: 2.5 ms per forward pass at batch 8" in line for line in lines) == 1
    assert any("measured on each trial's model before it trains" in line for line in lines)
