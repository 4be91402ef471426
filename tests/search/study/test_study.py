"""search/study/ samplers.py, lock.py, recovery.py: samplers that differ between workers, the study lock across
machines, and the trials of dead workers failed (and retried) once their grace period is over."""

from __future__ import annotations

import datetime
import threading
import uuid
from pathlib import Path

import optuna
import pytest

from search.config import load_config
from search.distributions import from_trial
from search.space import resolve
from search.storage import SCHEMA_LOCK_KEY, make_storage
from search.study.lock import StudyLock
from search.study.recovery import fail_orphans
from search.study.samplers import make_sampler
from search.trials import WORKER
from tests.helpers.spaces import write_space
from tests.helpers.studies import PG_URL, needs_postgres

S = optuna.trial.TrialState


@pytest.mark.parametrize("sampler", ["random", "tpe", "nsga2", "gp"])
def test_workers_with_one_seed_draw_different_trials(sampler: str, tmp_path: Path) -> None:
    """Each worker process builds its sampler from the same YAML seed; their draws must still differ."""
    cfg = load_config(write_space(tmp_path, {"search": {"sampler": sampler}}))
    storage = optuna.storages.InMemoryStorage()
    w0 = optuna.create_study(study_name="s", storage=storage, sampler=make_sampler(cfg), direction="maximize")
    w1 = optuna.load_study(study_name="s", storage=storage, sampler=make_sampler(cfg))

    def draw(study: optuna.Study) -> dict:
        trial = study.ask()
        resolve(cfg, from_trial(trial), 4, 8)
        study.tell(trial, float(trial.number))
        return trial.params

    drawn = [draw(w) for _ in range(3) for w in (w0, w1)]  # two workers taking turns
    drawn.append(draw(optuna.load_study(study_name="s", storage=storage, sampler=make_sampler(cfg))))  # a rerun
    assert all(a != b for i, a in enumerate(drawn) for b in drawn[i + 1:]), drawn
    again = optuna.create_study(sampler=make_sampler(cfg), direction="maximize")
    assert draw(again) == drawn[0], "a one-worker search is reproducible from its seed"


@needs_postgres
def test_study_lock_spans_machines_on_postgres(tmp_path: Path) -> None:
    """Two workers with their own results folders (two machines) exclude each other through the database."""
    name = f"lock-{uuid.uuid4().hex[:8]}"
    optuna.create_study(study_name=name, storage=make_storage(PG_URL))
    try:
        first, second = (StudyLock(optuna.load_study(study_name=name, storage=make_storage(PG_URL)),
                                   tmp_path / f"machine{i}.lock") for i in range(2))
        first.acquire()
        waiter = threading.Thread(target=second.acquire, daemon=True)
        waiter.start()
        waiter.join(timeout=1.0)
        assert waiter.is_alive(), "the second worker got the lock while the first held it"
        first.release()
        waiter.join(timeout=10)
        assert not waiter.is_alive()
        second.release()
    finally:
        optuna.delete_study(study_name=name, storage=PG_URL)


def test_advisory_lock_keys_are_those_earlier_releases_took() -> None:
    """A worker of this release and one of an earlier release share a study: they must take the same locks."""
    study = optuna.create_study(study_name="shared study")
    assert StudyLock(study, Path("unused.lock")).key == -6395850980887472410  # sha256("search.study:shared study")
    assert SCHEMA_LOCK_KEY == -7263523937808726713  # sha256("search.schema"), first 8 bytes, signed


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_trial_killed_before_its_first_heartbeat_is_retried(tmp_path: Path) -> None:
    """A worker can die after its trial started but before the heartbeat thread's first write landed."""
    storage = make_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_s=1, grace_s=2)
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    dead, alive = study.ask(), study.ask()
    dead.set_user_attr(WORKER, "host:1")  # the objective had started; then SIGKILL, no heartbeat row yet
    storage.record_heartbeat(alive._trial_id)
    assert fail_orphans(study, grace_s=2) == [], "nothing is failed within the grace period"
    later = datetime.datetime.now() + datetime.timedelta(seconds=3)  # a clock past the grace period
    assert fail_orphans(study, grace_s=2, now=later) == [dead.number]
    assert fail_orphans(study, grace_s=2, now=later) == [], "failed and retried once"
    states = {t.number: t.state for t in study.get_trials()}
    assert states[dead.number] == S.FAIL and states[alive.number] == S.RUNNING
    retry = [t for t in study.get_trials() if t.state == S.WAITING]
    assert len(retry) == 1 and retry[0].system_attrs["failed_trial"] == dead.number
