"""search/study/trial_loop.py: a trial's end is written even when the database refuses it once, and a trial
another worker ended is let go."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import sqlalchemy

from search.storage import ask, make_storage
from search.study import trial_loop
from search.study.stop import Stop

S = optuna.trial.TrialState


def test_a_failing_tell_is_written_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The database refuses a trial's end once: it is written on the next attempt, never left RUNNING."""
    study = optuna.create_study(study_name="s", storage=make_storage(f"sqlite:///{tmp_path / 'study.db'}"),
                                direction="maximize")
    tell = optuna.Study.tell
    calls: list[int] = []

    def flaky_tell(self: optuna.Study, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 1:
            raise sqlalchemy.exc.OperationalError("UPDATE", {}, Exception("database is locked"))
        return tell(self, *args, **kwargs)

    monkeypatch.setattr(optuna.Study, "tell", flaky_tell)
    objective = type("Half", (), {"__call__": lambda self, trial: 0.5, "gave_up": False})()
    trial_loop.run_one(study, ask(study, []), objective, Stop(), retry_s=0.0)
    assert len(calls) == 2 and study.trials[0].state == S.COMPLETE and study.trials[0].value == 0.5


def test_a_trial_ended_by_another_worker_is_let_go(tmp_path: Path) -> None:
    """A worker paused past --grace finds its trial failed by another: one line, no `Cannot tell a FAIL trial`."""
    study = optuna.create_study(study_name="s", storage=make_storage(f"sqlite:///{tmp_path / 'study.db'}"))
    lines: list[str] = []

    def paused_then_resumed(trial: optuna.Trial) -> float:
        study._storage.set_trial_state_values(trial._trial_id, state=S.FAIL)  # another worker's stale check
        trial.set_user_attr("val_acc_curve", [0.5])  # the resumed worker's next write
        return 0.5

    objective = type("Paused", (), {"__call__": lambda self, t: paused_then_resumed(t), "gave_up": False})()
    trial_loop.run_one(study, ask(study, []), objective, Stop(), log=lines.append)
    assert study.trials[0].state == S.FAIL and lines == [
        "[trial 0] was ended by another worker (no heartbeat for the grace period); its retry continues it"]
