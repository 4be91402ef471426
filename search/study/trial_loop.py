"""The trial loop of one worker: trials asked under the study lock, so n_trials is never overshot.

Exact count: every worker takes the study lock (lock.StudyLock), counts finished + running trials,
and only then asks Optuna for a new trial, still under the lock; a running trial holds its place until
it ends. So finished + running never exceeds the target, and workers whose places are all taken wait
(failing stale trials of dead workers, whose retries then get the place) until the study is done.
A stop request (stop.py) is checked between trials and while waiting; a trial it cuts short ends
as `interrupted`, and no trial is ever left RUNNING by an error this process survives.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import optuna

from ..cli import STORAGE_ERRORS
from ..objective import mark_interrupted
from ..storage import ask, heartbeat
from ..trials import count_finished, count_running
from .lock import StudyLock
from .recovery import fail_orphans
from .stop import Stop

S = optuna.trial.TrialState

CATCH = (FloatingPointError,)  # a diverged trial fails and the search goes on; anything else stops the worker
TELL_ATTEMPTS = 3  # a trial's end is written this many times before the storage error is let through
TELL_RETRY_S = 10.0  # seconds between those attempts (a database briefly locked or restarting)


class TrialObjective(Protocol):
    """What the loop needs of an objective (search.objective.Objective, or a benchmark's stand-in)."""

    gave_up: bool  # set when the space gives out: the loop asks for no new trial

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]: ...


def run_trials(study: optuna.Study, objective: TrialObjective, target: int, lock: StudyLock, stop: Stop, *,
               timeout: float | None = None, grace_s: int = 120, poll_s: float = 5.0,
               log: Callable[[str], None] = print, clock: Callable[[], float] = time.monotonic) -> int:
    """Run trials until the study holds `target` finished ones, the timeout passes or the space gives out.

    `stop` is checked between trials and while waiting (and by training between batches); once it is
    set, the trial in flight ends as interrupted and StopRequested is raised.
    """
    t0, ran, waiting = clock(), 0, False
    while not stop:
        if timeout is not None and clock() - t0 >= timeout:
            log(f"timeout: no new trial after {timeout:g}s")
            break
        if objective.gave_up:
            break
        trial = None
        with lock:  # count and ask under the lock: finished + running never passes the target
            trials = study.get_trials(deepcopy=False)
            finished, running = count_finished(trials), count_running(trials)
            if finished + running < target and not stop:
                optuna.storages.fail_stale_trials(study)  # a dead worker's trial: FAIL, its retry asked first
                trial = ask(study, trials)
        if trial is not None:
            run_one(study, trial, objective, stop, log)
            ran, waiting = ran + 1, False
            continue
        if finished >= target:
            break
        if not waiting:
            log(f"waiting: {finished} finished + {running} running cover the target of {target} "
                f"(a trial without a heartbeat for {grace_s}s is failed and retried)")
        waiting = True
        optuna.storages.fail_stale_trials(study)
        fail_orphans(study, grace_s)
        stop.wait(poll_s)
    stop.check()
    return ran


def run_one(study: optuna.Study, trial: optuna.Trial, objective: TrialObjective, stop: Stop,
            log: Callable[[str], None] = print, retry_s: float = TELL_RETRY_S) -> None:
    """Run the objective on an asked trial and write how it ended; the trial is never left RUNNING.

    A stop (or Ctrl-C) ends it as `interrupted` (a rerun resumes it); a diverged trial (CATCH) is
    logged and the search goes on; any other error is raised once the trial's end is written.
    """
    state, values = S.FAIL, None
    error: BaseException | None = None
    with heartbeat(study, trial):
        try:
            stop.check()  # a stop that came while the trial was asked ends it before it starts
            values, state = objective(trial), S.COMPLETE
        except optuna.TrialPruned:
            state = S.PRUNED
        except optuna.exceptions.UpdateFinishedTrialError:  # e.g. this process was paused for longer than --grace
            log(f"[trial {trial.number}] was ended by another worker (no heartbeat for the grace period); "
                f"its retry continues it")
            return
        except KeyboardInterrupt as e:  # the one place a stopped trial is recorded as interrupted
            mark_interrupted(trial, stop.reason or str(e) or "SIGINT")
            error = e
        except BaseException as e:
            error = e
    tell(study, trial, state, values, retry_s)
    if isinstance(error, CATCH):
        log(f"[trial {trial.number}] failed: {error}")
    elif error is not None:
        raise error


def tell(study: optuna.Study, trial: optuna.Trial, state: S, values: Any, retry_s: float = TELL_RETRY_S) -> None:
    """Write a trial's end, trying again when the database fails (it may be locked or restarting)."""
    for attempt in range(TELL_ATTEMPTS):
        try:
            study.tell(trial, values if state == S.COMPLETE else None, state=state, skip_if_finished=True)
            return
        except STORAGE_ERRORS:
            if attempt == TELL_ATTEMPTS - 1:
                raise  # left RUNNING: its heartbeat stops, so a rerun fails and retries it after the grace period
            time.sleep(retry_s)
