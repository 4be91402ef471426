"""search/objective.py: what a trial reports to the pruner, and the latency budget it checks before training."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from search import run
from search.config import load_config
from search.trials import REJECTED
from tests.helpers.spaces import PRUNING_SPACE, ROOT, write_space

S = optuna.trial.TrialState


def _run_curve(study: optuna.Study, curve: list[tuple[int, float]], native: int = 64) -> int | None:
    """Feed (image size, val_acc) per epoch through the objective's pruner reporting; the epoch pruned at, or None."""
    from search.objective import report_epoch
    from search.trainer import EpochResult

    trial = study.ask()
    for epoch, (size, acc) in enumerate(curve, start=1):
        if report_epoch(trial, EpochResult(epoch, 1.0, acc, 1.0, acc, 0.1, size, 0.0), native, len(curve)):
            study.tell(trial, state=S.PRUNED)
            return epoch
    study.tell(trial, curve[-1][1])
    return None


def test_progressive_trial_is_judged_at_native_size_only() -> None:
    """A 16->32->64 px trial is not pruned by a fixed 64 px trial that is no better at 64 px, but is when worse."""
    cfg = load_config(ROOT / "spaces" / "tiny_26m.yaml", ["search.pruner_startup_trials=1",
                                                         "search.pruner_warmup_epochs=0"])
    from search.study.samplers import make_pruner

    fixed = [(64, a) for a in (0.30, 0.40, 0.45, 0.50, 0.55, 0.60)]
    low_res = [(16, 0.10), (16, 0.12), (32, 0.20), (32, 0.25)]
    for native_accs, pruned_at in (((0.56, 0.61), None), ((0.50, 0.52), 5)):
        study = optuna.create_study(direction="maximize", pruner=make_pruner(cfg))
        assert _run_curve(study, fixed) is None
        progressive = low_res + [(64, a) for a in native_accs]
        assert _run_curve(study, progressive) == pruned_at
        reported = study.get_trials()[1].intermediate_values
        assert sorted(reported) == list(range(5, 5 + len(reported)))  # only the 64 px epochs reached the pruner


def test_latency_budget_rejects_by_a_probe_and_trials_record_their_cost(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_probe(model, size, batch, device, amp) -> float:  # ms grows with params: no clock involved
        calls.append(batch)
        return sum(p.numel() for p in model.parameters()) / 1000 * (1 + batch / 256)

    monkeypatch.setattr("search.objective.latency_ms", fake_probe)
    space = {**PRUNING_SPACE, "budget": {"params": 20_000, "latency_ms": 8.0, "latency_batch": 8},
             "train": {**PRUNING_SPACE["train"], "lr": 0.1, "epochs": 1},
             "search": {**PRUNING_SPACE["search"], "n_trials": 3, "pruner": "none"}}
    assert run.main([str(write_space(tmp_path, base=space)), "--results-dir", str(tmp_path / "r")]) == 0
    study = optuna.load_study(study_name="space", storage=f"sqlite:///{tmp_path / 'r' / 'space' / 'study.db'}")
    slow = [t for t in study.trials if "latency" in t.user_attrs.get(REJECTED, "")]
    done = [t for t in study.trials if t.state == S.COMPLETE]
    assert slow and len(done) == 3 and 8 in calls
    assert all(t.user_attrs["probe_latency_ms"] > 8.0 and "epoch_times_s" not in t.user_attrs for t in slow)
    for t in done:
        assert t.user_attrs["probe_latency_ms"] <= 8.0 and t.user_attrs["train_images_per_s"] > 0
        assert t.user_attrs["latency_ms_batch256"] == round(2 * t.user_attrs["params"] / 1000, 3)
        assert t.user_attrs["latency_ms_batch1"] < t.user_attrs["latency_ms_batch256"]


def test_trials_that_start_together_get_their_own_place() -> None:
    """The log's k/n: two workers' trials starting at once are the 1st and the 2nd, never both the 1st."""
    from types import SimpleNamespace

    from search.objective import EpochHook
    from search.trial_record import TrialRecord

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    cfg = SimpleNamespace(search=SimpleNamespace(objectives=["val_acc"], n_trials=24))
    objective = SimpleNamespace(cfg=cfg, log=lambda line: None, progress_every_s=60.0)

    def hook(trial: optuna.Trial) -> EpochHook:
        return EpochHook(objective, trial, SimpleNamespace(epochs=8), TrialRecord(Path(), trial.number, {}), 0)

    baseline = study.ask()
    baseline.set_user_attr("baseline", "resnet8")
    assert hook(baseline).place == "baseline resnet8"  # baselines are not counted in n_trials
    first = study.ask()
    assert hook(first).place == "1/24"
    second = study.ask()  # another worker starts while the first still trains
    assert hook(second).place == "2/24"
    study.tell(first, 0.5)
    study.tell(baseline, 0.7)
    assert hook(study.ask()).place == "3/24"
    study.tell(second, 0.6)
    assert hook(study.ask()).place == "4/24"
