"""Crash recovery: interrupted trials requeued, and RUNNING trials whose worker died before its first heartbeat
failed and retried."""

from __future__ import annotations

import datetime

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback

from ..storage import MAX_RETRY, RetryCallback, rdb_storage, trial_id, with_heartbeat
from ..trials import INTERRUPTED

S = optuna.trial.TrialState


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
