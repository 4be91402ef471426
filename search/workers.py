"""Workers on one study: the trial loop that never overshoots n_trials, clean Ctrl-C, and N local processes.

Exact count: every worker takes the study lock (study.StudyLock), counts finished + running trials,
and only then asks Optuna for a new trial, still under the lock; a running trial holds its place until
it ends. So finished + running never exceeds the target, and workers whose places are all taken wait
(failing stale trials of dead workers, whose retries then get the place) until the study is done.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna

from .objective import Objective, mark_interrupted
from .stop import Signals, Stop
from .storage import STORAGE_ERRORS, ask, heartbeat
from .study import StudyLock, fail_orphans
from .trials import count_finished, count_running

S = optuna.trial.TrialState

CATCH = (FloatingPointError,)  # a diverged trial fails and the search goes on; anything else stops the worker
TELL_ATTEMPTS = 3  # a trial's end is written this many times before the storage error is let through
TELL_RETRY_S = 10.0  # seconds between those attempts (a database briefly locked or restarting)
POLL_S = 1.0  # the parent looks at its workers at least this often (a signal or a worker's exit wakes it)


def run_trials(study: optuna.Study, objective: Objective, target: int, lock: StudyLock, stop: Stop, *,
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


def run_one(study: optuna.Study, trial: optuna.Trial, objective: Objective, stop: Stop,
            log: Callable[[str], None] = print, retry_s: float = TELL_RETRY_S) -> None:
    """Run the objective on an asked trial and write how it ended; the trial is never left RUNNING.

    A stop (or Ctrl-C) ends it as `interrupted` (a rerun resumes it); a diverged trial (CATCH) is
    logged and the search goes on; any other error is raised once the trial's end is written.
    """
    state, values, error = S.FAIL, None, None
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


@dataclass
class Worker:
    """One worker process started by `launch`."""

    index: int
    proc: subprocess.Popen
    log_path: Path
    last_error: str = ""  # its last `error: ...` line


def visible_gpus(device: str) -> list[str]:
    """The GPU ids workers are spread over (CUDA_VISIBLE_DEVICES when set); empty on the CPU."""
    if device == "cpu":
        return []
    import torch

    if not torch.cuda.is_available():
        return []
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given:
        return [g.strip() for g in given.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def worker_env(index: int, n: int, gpus: list[str]) -> dict[str, str]:
    """Environment of worker `index`: its own GPU (round robin), or a share of the CPU cores."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    elif "OMP_NUM_THREADS" not in os.environ:  # N workers each using every core slow each other down
        env["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // n))
    return env


def _die_with_parent() -> None:
    """Linux: a worker gets SIGTERM (a clean stop) when the process that started it dies."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def launch(argv: list[str], n: int, results: Path, device: str,
           echo: Callable[[str], None] = print) -> tuple[list[Worker], bool]:
    """Run `python -m search.run ARGV --worker-index i` for i < n; prefix and log their output; wait.

    Returns the workers and whether this process was interrupted (Ctrl-C is forwarded to them).
    """
    gpus = visible_gpus(device)
    workers = []
    for i in range(n):
        log_path = results / f"worker{i}.log"
        cmd = [sys.executable, "-m", "search.run", *argv, "--worker-index", str(i)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                env=worker_env(i, n, gpus), preexec_fn=_die_with_parent)
        workers.append(Worker(i, proc, log_path))
        where = f"GPU {gpus[i % len(gpus)]}" if gpus else "CPU"
        echo(f"worker {i}: pid {proc.pid} on {where}, log {log_path}")
    with Signals() as signals:  # Ctrl-C / SIGTERM here are forwarded to the workers as SIGINT, once each
        pumps = [threading.Thread(target=_pump, args=(w, echo, signals.wake), daemon=True) for w in workers]
        for t in pumps:
            t.start()
        forwarded = 0
        while any(w.proc.poll() is None for w in workers):
            signals.wait(POLL_S)  # a signal, or a worker's output ending, wakes it early
            while forwarded < signals.count:
                forwarded += 1
                for w in workers:
                    if w.proc.poll() is None:
                        w.proc.send_signal(signal.SIGINT)
    for t in pumps:
        t.join(timeout=5)
    return workers, signals.count > 0


def _pump(worker: Worker, echo: Callable[[str], None], done: Callable[[], None]) -> None:
    """Copy a worker's output to its log file and, prefixed with `[wI]`, to ours; call `done` at its end."""
    try:
        _copy_output(worker, echo)
    finally:
        done()


def _copy_output(worker: Worker, echo: Callable[[str], None]) -> None:
    """Copy a worker's output, line by line, until the worker closes it (it exits)."""
    with open(worker.log_path, "a") as f:
        f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} pid {worker.proc.pid}\n")
        for line in worker.proc.stdout:
            f.write(line)
            f.flush()
            line = line.rstrip("\n")
            if line.startswith("error: "):
                worker.last_error = line[len("error: "):]
            echo(f"[w{worker.index}] {line}")


def describe_exit(worker: Worker) -> str:
    """`exited with status 2: <its error>` / `was killed by SIGKILL`."""
    rc = worker.proc.returncode
    if rc is not None and rc < 0:
        return f"was killed by {signal.Signals(-rc).name}"
    return f"exited with status {rc}" + (f": {worker.last_error}" if worker.last_error else "")
