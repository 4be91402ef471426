"""search/trial_record.py: trials/<n>.json keeps the keys, their order and the layout older studies were written in."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from blocks import ArchSpec, complexity
from search.errors import ResultsWriteError
from search.space import Resolved
from search.trainer import EpochResult
from search.trial_record import TrialRecord, read_record, record_path

# Every key of a complete trial's record, in the order the objective has always written them (reports, resumes and
# the tests of older studies read these files).
COMPLETE_KEYS = ["number", "study", "state", "arch", "train", "seed", "params", "flops", "peak_activations",
                 "receptive_field", "budget_params", "device", "threads", "host", "worker", "started", "epochs",
                 "retry_of", "resumed_from_epoch", "epoch_times_s", "val_acc", "best_val_acc", "latency_ms"]


def started(results: Path) -> tuple[optuna.Trial, TrialRecord]:
    """A trial that retries trial 0, and its record as it starts to train."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study().ask()
    trial.set_user_attr("retry_of", 0)
    spec = ArchSpec.from_dict({"stages": 1, "blocks": [1], "width": 8, "input_size": 16, "num_classes": 10})
    cfg = SimpleNamespace(study_name="s", budget=SimpleNamespace(params=10_000))
    design = Resolved(spec, SimpleNamespace(to_dict=lambda: {"epochs": 2}), complexity(spec))
    return trial, TrialRecord.start(results, trial, cfg, design, seed=7, device="cpu")


def test_a_complete_record_is_written_in_its_historic_shape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("search.trial_record.upload", lambda trial, path, results: "id")  # no artifact store here
    trial, record = started(tmp_path)
    record.resumed_from(2)
    for epoch, acc in ((1, 0.25), (2, 0.5)):
        times = record.add_epoch(EpochResult(epoch, 1.0, acc, 1.0, acc, 0.1, 16, 0.12345))
        record.write()
    assert times == [0.123, 0.123] and record.val_acc_curve() == [0.25, 0.5]
    record.ended(trial, "complete", val_acc=0.5, best_val_acc=0.5, latency_ms=1.5)
    path = tmp_path / "trials" / f"{trial.number:05d}.json"
    assert record_path(tmp_path, trial.number) == path
    text = path.read_text()
    assert text == json.dumps(record.doc, indent=1) and list(json.loads(text)) == COMPLETE_KEYS
    doc = read_record(path, trial.number)
    assert doc["state"] == "complete" and doc["epochs"][1]["val_acc"] == 0.5 and doc["params"] == record.doc["params"]


def test_a_retry_marks_a_dead_run_failed_and_points_at_itself(tmp_path: Path) -> None:
    trial, record = started(tmp_path)
    record.write()  # as after its first epoch; then its worker died
    TrialRecord.read(tmp_path, trial.number).retried_as(5)
    doc = json.loads(record.path.read_text())
    assert doc["state"] == "failed" and doc["retried_as"] == 5 and list(doc)[-1] == "retried_as"


def test_a_failed_write_is_an_error_unless_the_trial_already_stops(tmp_path: Path) -> None:
    (tmp_path / "trials").write_text("a file where the folder goes")
    _, record = started(tmp_path)
    with pytest.raises(ResultsWriteError, match=r"cannot write 00000\.json"):
        record.write()
    record.stopped("interrupted")  # quiet: the trial is stopping for another reason already
    assert record.doc["state"] == "interrupted"
