"""End-to-end search on generated data, resume, and one-line config errors."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml

from blocks import ArchSpec, complexity
from search import run
from search.space import MIN_WIDTH
from search.trials import REJECTED
from tests.helpers.spaces import PRUNING_SPACE, write_space

S = optuna.trial.TrialState


@pytest.fixture(scope="module")
def pruning_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, optuna.Study]:
    """A finished smoke search of 5 trials in a temporary results folder."""
    tmp = tmp_path_factory.mktemp("search")
    path = write_space(tmp, base=PRUNING_SPACE)
    assert run.main([str(path), "--results-dir", str(tmp / "results")]) == 0
    results = tmp / "results" / "space"
    assert not (results / "study.db-wal").exists(), "the search closed its connections: study.db is whole"
    study = optuna.load_study(study_name="space", storage=f"sqlite:///{results / 'study.db'}")
    return results, study


def test_search_end_to_end(pruning_study: tuple[Path, optuna.Study]) -> None:
    results, study = pruning_study
    trials = study.get_trials()
    finished = [t for t in trials if t.state in (S.COMPLETE, S.PRUNED) and REJECTED not in t.user_attrs]
    assert len(finished) == 5
    complete = [t for t in trials if t.state == S.COMPLETE]
    pruned = [t for t in trials if t.state == S.PRUNED and REJECTED not in t.user_attrs]
    assert complete and pruned, "the space is built so that some trials complete and some are pruned"
    assert max(t.value for t in complete) > 0.3  # synthetic data is learnable: well above 10% chance
    for t in complete + pruned:
        a = t.user_attrs
        assert 0 < a["params"] <= 20_000
        spec = ArchSpec.from_dict(a["arch"])
        cx = complexity(spec)
        assert (cx.params, cx.flops, cx.receptive_field) == (a["params"], a["flops"], a["receptive_field"])
        assert spec.width % MIN_WIDTH == 0
        record = json.loads((results / "trials" / f"{t.number:05d}.json").read_text())
        assert record["arch"] == a["arch"] and record["seed"] == a["seed"]
        assert [e["val_acc"] for e in record["epochs"]] == pytest.approx(a["val_acc_curve"], abs=1e-5)
        assert len(record["epochs"]) == len(t.intermediate_values)
    for t in pruned:
        assert len(t.intermediate_values) < 3  # stopped before its last epoch
    assert (results / "study.db").is_file()
    assert yaml.safe_load((results / "config.yaml").read_text())["budget"]["params"] == 20_000
    assert not list((results / "checkpoints").glob("*.pt")), "finished trials leave no checkpoint"


def test_rerun_resumes_and_only_runs_what_is_left(pruning_study: tuple[Path, optuna.Study], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    results, study = pruning_study
    before = {t.number: (t.state, t.values) for t in study.get_trials()}
    path = write_space(results.parent.parent, base=PRUNING_SPACE)
    assert run.main([str(path), "--results-dir", str(results.parent)]) == 0
    assert "nothing to run" in capsys.readouterr().out
    assert len(study.get_trials()) == len(before)
    assert run.main([str(path), "--results-dir", str(results.parent), "--n-trials", "6"]) == 0
    after = study.get_trials()
    counted = [t for t in after if t.state in (S.COMPLETE, S.PRUNED) and REJECTED not in t.user_attrs]
    assert len(counted) == 6
    assert {t.number: (t.state, t.values) for t in after if t.number in before} == before
    assert not [t for t in after if t.state == S.RUNNING]


