"""Sampler, pruner and study creation; the study-wide lock and retry of dead or interrupted trials."""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.study import StudyDirection

from blocks.atomic import open_lock_file
from blocks.text import one_line

from ..config import SearchConfig, max_train_epochs
from ..dashboard import name_metrics
from ..errors import UserError
from ..storage import (
    GRACE_S,
    HEARTBEAT_S,
    MAX_RETRY,
    RetryCallback,
    make_storage,
    rdb_storage,
    readable_trials,
    redact_url,
    trial_id,
    with_heartbeat,
)
from ..trials import INTERRUPTED
from .identity import check_and_record

S = optuna.trial.TrialState


def make_sampler(cfg: SearchConfig) -> optuna.samplers.BaseSampler:
    """The configured sampler; trial n draws with seed `search.seed + n` (see TrialSeededSampler)."""
    s = cfg.search

    def make(seed: int) -> optuna.samplers.BaseSampler:
        if s.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if s.sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed)
        if s.sampler == "gp":
            return optuna.samplers.GPSampler(seed=seed)
        # multivariate and grouped for the conditional stage keys; constant_liar keeps parallel workers apart
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=5,
                                          constant_liar=True)

    return TrialSeededSampler(make, s.seed)


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """A sampler whose draws for trial n come from a fresh copy seeded with `seed + n`.

    Optuna seeds a sampler once per process, so workers started with one seed draw the same
    parameters (optuna/optuna#4714) and a rerun that resumes a study replays its first draws.
    Trial numbers are unique in a study, so seeding by trial number avoids both, and a one-worker
    search stays reproducible from its seed. The samplers keep their state in the study, not in
    the object (TPE, random, NSGA-II); GP only loses its warm start between trials.
    """

    def __init__(self, make: Callable[[int], optuna.samplers.BaseSampler], seed: int):
        self._make, self._seed = make, seed
        self._inner = make(seed)

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Reseed by trial number, then let the sampler prepare."""
        self._inner = self._make((self._seed + trial.number) % 2**32)  # numpy seeds are below 2**32
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        """The wrapped sampler's relative search space."""
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                        search_space: dict[str, Any]) -> dict[str, Any]:
        """The wrapped sampler's joint draw."""
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, param_name: str,
                           param_distribution: Any) -> Any:
        """The wrapped sampler's draw of one parameter."""
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: optuna.trial.TrialState,
                    values: Any) -> None:
        """The wrapped sampler's bookkeeping at the end of a trial."""
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Reseed the wrapped sampler (Optuna calls this for n_jobs > 1)."""
        self._inner.reseed_rng()


def make_pruner(cfg: SearchConfig) -> optuna.pruners.BasePruner:
    """The configured pruner, in epochs."""
    s = cfg.search
    if s.pruner == "none" or len(s.objectives) > 1:
        return optuna.pruners.NopPruner()
    max_epochs = max_train_epochs(cfg)
    if s.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, s.pruner_warmup_epochs), max_resource=max_epochs)
    if s.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, s.pruner_warmup_epochs))
    return optuna.pruners.MedianPruner(n_startup_trials=s.pruner_startup_trials,
                                       n_warmup_steps=s.pruner_warmup_epochs)


def open_study(cfg: SearchConfig, storage_url: str, heartbeat_s: int = HEARTBEAT_S,
               grace_s: int = GRACE_S, data: Mapping[str, Any] | None = None) -> optuna.Study:
    """Create the study, or load it to resume; refuse one made from another space or other `data` (identity.py)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    storage = make_storage(storage_url, heartbeat_s, grace_s)
    directions = [StudyDirection.MAXIMIZE] + [StudyDirection.MINIMIZE] * (len(cfg.search.objectives) - 1)
    try:
        study = optuna.create_study(study_name=cfg.study_name, storage=storage, sampler=make_sampler(cfg),
                                    pruner=make_pruner(cfg), directions=directions, load_if_exists=True)
    except ValueError as e:  # e.g. directions differ from the stored study
        raise UserError(f"study {cfg.study_name!r} in {redact_url(storage_url)}: {e}") from None
    except sqlalchemy.exc.SQLAlchemyError as e:  # e.g. a read-only database file
        raise UserError(f"storage {redact_url(storage_url)!r}: {one_line(e)}") from None
    if study.user_attrs.get("fingerprint") is None:  # a new study
        study.set_user_attr("config_path", cfg.path)
        study.set_user_attr("budget_params", cfg.budget.params)
        study.set_user_attr("budget_flops", cfg.budget.flops)
        study.set_user_attr("budget_peak_activations", cfg.budget.peak_activations)
        if cfg.budget.arena is not None:  # bytes; a study without one keeps the attributes it always had
            study.set_user_attr("budget_arena", cfg.budget.arena)
        study.set_user_attr("objectives", list(cfg.search.objectives))
        name_metrics(study, cfg.search.objectives)
    readable_trials(study, storage_url)  # a damaged row is one line here, before anything is written to the study
    check_and_record(study, cfg, redact_url(storage_url), data)
    return study


class StudyLock:
    """One mutex for every worker of a study: a PostgreSQL advisory lock, else a lock file on this machine."""

    def __init__(self, study: optuna.Study, fallback: Path):
        storage = rdb_storage(study)
        engine = storage.engine if storage is not None else None
        self.engine = engine if engine is not None and engine.dialect.name == "postgresql" else None
        digest = hashlib.sha256(f"search.study:{study.study_name}".encode()).digest()
        self.key = int.from_bytes(digest[:8], "big", signed=True)  # pg_advisory_lock takes one bigint
        database = engine.url.database if engine is not None and engine.dialect.name == "sqlite" else None
        self.path = Path(database + ".lock") if database and database != ":memory:" else fallback
        self._held: Any = None

    def acquire(self) -> None:
        """Block until this process holds the lock (a dead holder's lock is freed by the OS or the server)."""
        if self._held is not None:
            return
        if self.engine is not None:
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
            self._held = conn
        else:
            try:
                f = open_lock_file(self.path)  # a link planted at its name is refused, never opened
            except OSError as e:
                raise UserError(f"cannot open the study lock {self.path}: {e.strerror or e}") from None
            fcntl.flock(f, fcntl.LOCK_EX)
            self._held = f

    def release(self) -> None:
        """Release the lock if held (safe to call twice)."""
        held, self._held = self._held, None
        if held is None:
            return
        if self.engine is not None:
            try:
                held.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            finally:
                held.close()
        else:
            fcntl.flock(held, fcntl.LOCK_UN)
            held.close()

    def __enter__(self) -> StudyLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def requeue_interrupted(study: optuna.Study) -> list[int]:
    """Enqueue the params of interrupted trials not yet retried, linked to them; returns their numbers."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)}
    out = []
    for t in trials:
        if t.state == S.FAIL and t.user_attrs.get(INTERRUPTED) and t.number not in retried:
            RetryCallback(max_retry=None)(study, t)  # a user's Ctrl-C is not a crash: no retry limit
            out.append(t.number)
    return out


def fail_orphans(study: optuna.Study, grace_s: int, now: datetime.datetime | None = None) -> list[int]:
    """Fail and retry RUNNING trials older than the grace period that never wrote a heartbeat.

    Optuna's stale check skips them (it only compares heartbeats that exist), yet a worker can die
    before its heartbeat thread's first write lands: between ask and the objective, or in the first
    moments of a trial while another process holds the database lock. A live trial writes its first
    heartbeat as it starts, so one still without it after the grace period has lost its worker.
    """
    storage = rdb_storage(study)
    if storage is None or storage.get_heartbeat_interval() is None:
        return []
    running = study.get_trials(deepcopy=False, states=(S.RUNNING,))
    if not running:
        return []
    beating = with_heartbeat(storage, [trial_id(t) for t in running])
    now = now or datetime.datetime.now()  # Optuna stores local times without a zone
    out = []
    for t in running:
        started = t.datetime_start
        if trial_id(t) in beating or started is None or (now - started).total_seconds() < grace_s:
            continue
        try:
            if not storage.set_trial_state_values(trial_id(t), state=S.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        RetryCallback(max_retry=MAX_RETRY)(study, storage.get_trial(trial_id(t)))
        out.append(t.number)
    return out
