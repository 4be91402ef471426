"""Baselines from the YAML: trained first, marked, never pruned, not counted; bad ones fail at load."""

from __future__ import annotations

import copy
from pathlib import Path

import optuna
import pytest

from search import run
from search.baselines import enqueue_baselines, resolve_baseline, resolve_trial, train_params
from search.config import load_config
from search.data.datasets import dataset_info
from search.distributions import middle
from search.space import Resolved
from search.trials import BASELINE
from tests.helpers.spaces import PRUNING_SPACE, ROOT, widening_breaks_a_budget, write_space

S = optuna.trial.TrialState

# PRUNING_SPACE's lr choice can draw a rate that learns nothing; a baseline takes the first choice (0.2).
SPACE = {**copy.deepcopy(PRUNING_SPACE), "train": {**PRUNING_SPACE["train"], "epochs": 2},
         "baselines": [{"name": "wide", "blocks": [1, 1]}, {"name": "narrow", "blocks": [2], "width": 8}],
         "search": {**PRUNING_SPACE["search"], "n_trials": 2, "pruner_startup_trials": 0}}


def test_baselines_train_first_marked_and_not_counted(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_space(tmp_path, base=SPACE)
    assert run.main([str(path), "--results-dir", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    study = optuna.load_study(study_name="space", storage=f"sqlite:///{tmp_path}/results/space/study.db")
    trials = sorted(study.get_trials(), key=lambda t: t.number)
    assert [t.user_attrs.get(BASELINE) for t in trials[:2]] == ["wide", "narrow"]
    assert all(t.state == S.COMPLETE for t in trials[:2])
    assert trials[0].params == {"lr": 0.2}  # the baseline trained with the trials' (first-choice) lr
    wide = trials[0].user_attrs
    assert wide["params"] <= 20_000 and wide["budget_utilisation"] > 0.9  # width: solve filled the budget
    assert trials[1].user_attrs["arch"]["width"] == 8 and trials[1].user_attrs["arch"]["blocks"] == [2]
    searched = [t for t in trials if BASELINE not in t.user_attrs]
    assert len([t for t in searched if t.state in (S.COMPLETE, S.PRUNED)]) == 2  # n_trials counts these only
    assert "baseline wide" in out and "baseline narrow" in out and "not counted in n_trials" in out
    assert run.main([str(path), "--results-dir", str(tmp_path / "results")]) == 0  # rerun: nothing new
    assert len(study.get_trials()) == len(trials)


def test_baseline_never_pruned() -> None:
    """A baseline reports its epochs to the pruner but is not stopped even when it is the worst."""
    from search.objective import report_epoch
    from search.trainer import EpochResult

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(0, 0))
    for acc in (0.9, 0.9):
        t = study.ask()
        t.report(acc, 1)
        study.tell(t, acc)
    for marked in (False, True):
        t = study.ask()
        if marked:
            t.set_user_attr(BASELINE, "b")
        r = EpochResult(1, 1.0, 0.1, 1.0, 0.1, 0.1, 16, 0.0)
        assert report_epoch(t, r, native_size=16, epochs=3) is (not marked)
        study.tell(t, state=S.PRUNED)


@pytest.mark.parametrize("baseline, message", [
    ({"name": "big", "blocks": [2, 2], "width": 256}, "'big' cannot be trained: params"),
    ({"name": "odd", "blocks": [1], "kernel": 4}, "'odd' cannot be trained: invalid architecture key 'kernel'"),
    ({"name": "x", "blocks": [1], "colour": 1}, "baselines[0].colour: unknown key"),
    ({"name": "x", "blocks": [1], "kernel": {"choice": [3, 5]}}, "a baseline is a fixed design"),
    ({"blocks": [1]}, "baselines[0]: expected a mapping with a name"),
])
def test_bad_baseline_is_one_line_before_any_study(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                    baseline: dict, message: str) -> None:
    space = copy.deepcopy(SPACE)
    space["baselines"] = [baseline]
    path = write_space(tmp_path, base=space)
    assert run.main([str(path), "--results-dir", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "results" / "space" / "study.db").exists()


def test_shipped_baselines_fill_their_budgets() -> None:
    """The seed designs of the shipped spaces build, obey the rules and use at least 97% of the budget (under
    cifar10_mcu's 78k, where 8 channels are a few % of it: widening any stage by 8 breaks a budget)."""
    expected = {"cifar10_5m": {"nyu": [5, 3, 2, 1], "resnet18": [2, 2, 2, 2]}, "tiny_26m": {"resnet18": [2, 2, 2, 2]},
                "cifar10_mcu": {"resnet8": [1, 1, 1], "resnet14": [2, 2, 2]}}
    for name, designs in expected.items():
        cfg = load_config(ROOT / "spaces" / f"{name}.yaml")
        info = dataset_info(cfg.data)
        assert {b.name: b.arch["blocks"] for b in cfg.baselines} == designs
        for b in cfg.baselines:
            verdict = resolve_baseline(cfg, b, middle, info.num_classes, info.image_size)
            assert isinstance(verdict, Resolved), verdict
            spec, params = verdict.spec, verdict.cx.params
            assert params <= cfg.budget.params
            if name == "cifar10_mcu":
                assert all(widening_breaks_a_budget(spec, i, cfg.budget) for i in range(spec.stages)), spec
            else:
                assert 0.97 * cfg.budget.params <= params
    mcu = load_config(ROOT / "spaces" / "cifar10_mcu.yaml")  # MLPerf Tiny's reference, exactly: 78,042 here
    verdict = resolve_baseline(mcu, mcu.baselines[0], middle, 10, 32)
    assert isinstance(verdict, Resolved) and verdict.spec.widths == (16, 32, 64) and verdict.cx.params == 78_042


# Searched training keys of every kind a baseline is enqueued with: a choice of lists (stored as JSON), a log
# range (its geometric middle), a stepped range, and a choice of augmentation policies.
NESTED_TRAIN = {"train": {"epochs": {"int": [2, 6], "step": 2}, "lr": {"float": [0.05, 0.2], "log": True},
                          "progressive": {"choice": [None, [[0, 6], [1, 12]]]}},
                "augment": {"policies": {"flip": [{"HorizontalFlip": {"p": 0.5}}], "none": []}},
                "baselines": [{"name": "a", "blocks": [1, 1]},
                              {"name": "b", "blocks": [1], "train": {"progressive": [[0, 6], [1, 12]]}}]}


def test_enqueued_baseline_trains_the_design_its_check_resolved(tmp_path: Path) -> None:
    """An enqueued baseline's trial suggests its stored values back: the same design and training the check
    (resolve_baseline with the middle of each range) passed, with one Optuna parameter per searched key."""
    cfg = load_config(write_space(tmp_path, base={**SPACE, **NESTED_TRAIN}))
    study = optuna.create_study(direction="maximize")
    assert enqueue_baselines(study, cfg) == ["a", "b"]
    for b in cfg.baselines:
        trial = study.ask()
        trained, checked = resolve_trial(trial, cfg, 4, 12), resolve_baseline(cfg, b, middle, 4, 12)
        assert isinstance(trained, Resolved) and trained == checked
        assert trial.params == train_params(cfg, b)
    assert train_params(cfg, cfg.baselines[0]) == pytest.approx(
        {"epochs": 4, "lr": 0.1, "progressive": "null", "augment_policy": "flip"})  # middles, a choice's first
    assert train_params(cfg, cfg.baselines[1])["progressive"] == "[[0, 6], [1, 12]]"  # its own, as Optuna stores it
    assert trained.train.progressive == ((0, 6), (1, 12))


def test_report_marks_baselines_on_every_trial_chart() -> None:
    """History, size trade-off, learning curves, budget and parallel coordinates each single out the baseline."""
    from search.review import report_figures as figs

    dist = optuna.distributions.FloatDistribution(0.01, 0.1)
    study = optuna.create_study(direction="maximize")
    for n, (acc, attrs) in enumerate([(0.5, {}), (0.4, {BASELINE: "nyu"})]):
        arch = {"blocks": [1 + n], "width": 8, "kernel": 3 + 2 * n}
        study.add_trial(optuna.trial.create_trial(
            value=acc, params={"lr": 0.05}, distributions={"lr": dist}, intermediate_values={1: acc},
            user_attrs={"params": 1000 * (n + 1), "flops": 5000, "arch": arch, "val_acc_curve": [acc], **attrs}))
    trials = study.get_trials()
    names = lambda fig: [t.name for t in fig.data]  # noqa: E731
    assert "baselines (1)" in names(figs.history(study))
    assert "baselines (1)" in names(figs.tradeoff(trials, "params", 2000))
    assert "baseline nyu" in names(figs.learning_curves(trials)[0])
    budget_fig = figs.budget_use(trials, 2000)[0]
    assert any("baseline nyu" in (a.text or "") for a in budget_fig.layout.annotations)
    axes = [d["label"] for d in figs.parallel(trials)[0].data[0].dimensions]
    assert "design" in axes
