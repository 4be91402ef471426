"""Workers on one study: the trial loop that never overshoots n_trials, clean Ctrl-C, and N local processes.

Exact count: every worker takes the study lock (study.StudyLock), counts finished + running trials,
and only then asks Optuna for a new trial, still under the lock; a running trial holds its place until
it ends. So finished + running never exceeds the target, and workers whose places are all taken wait
(failing stale trials of dead workers, whose retries then get the place) until the study is done.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna

from .objective import Objective, count_finished, count_running, mark_interrupted
from .study import StudyLock, fail_orphans

CATCH = (FloatingPointError,)  # a diverged trial fails and the search goes on; anything else stops the worker


class Interrupts:
    """SIGINT/SIGTERM become one KeyboardInterrupt, raised only where no trial is left half-recorded.

    Never inside the storage layer: an exception raised mid-way through SQLAlchemy can leave an
    SQLite connection holding the write lock, and the process's next write (recording the trial as
    interrupted) then waits for itself until `database is locked`. A signal that lands there is held
    and re-checked every RECHECK_S (SIGALRM) until the storage call has returned.
    """

    RECHECK_S = 0.05

    def __init__(self) -> None:
        self.deferring, self.pending, self.count, self.name = False, False, 0, "SIGINT"
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "Interrupts":
        if threading.current_thread() is threading.main_thread():  # handlers can only live there
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
            self._previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, self._recheck)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous:
            signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        """First signal: stop (now, or at the next safe point); second: ignored; third: stop now."""
        self.count += 1
        if self.count == 1:
            # Ctrl-C in a terminal reaches every worker and the parent forwards it too: one stop per press.
            self.name = signal.Signals(signum).name
            self.pending = True
            self._recheck(signum, frame)
        elif self.count >= 3:
            raise KeyboardInterrupt(self.name)

    def _recheck(self, signum: int, frame: Any) -> None:
        """Raise a held signal unless deferred (allow() raises it) or inside a storage call (check again soon)."""
        if not self.pending or self.deferring:
            return
        if in_storage(frame):
            signal.setitimer(signal.ITIMER_REAL, self.RECHECK_S)
            return
        self.pending = False
        raise KeyboardInterrupt(self.name)

    def defer(self) -> None:
        """Hold signals until allow() (around ask and tell, which must not be cut in half)."""
        self.deferring = True

    def allow(self) -> None:
        """Raise a signal that arrived while deferred; let the next ones raise at once."""
        self.deferring = False
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt(self.name)


STORAGE_MODULES = ("sqlalchemy.", "optuna.storages.", "sqlite3", "psycopg")


def in_storage(frame: Any) -> bool:
    """Whether the interrupted code (the frame and its callers) is inside the study's storage layer."""
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith(STORAGE_MODULES):
            return True
        frame = frame.f_back
    return False


def run_trials(study: optuna.Study, objective: Objective, target: int, lock: StudyLock, *,
               timeout: float | None = None, grace_s: int = 120, poll_s: float = 5.0,
               gc_after_trial: bool = True, log: Callable[[str], None] = print) -> int:
    """Run trials until the study holds `target` finished ones, the timeout passes or the space gives out."""
    t0, ran, waiting = time.monotonic(), 0, False
    with Interrupts() as sig:
        while True:
            sig.allow()
            if timeout is not None and time.monotonic() - t0 >= timeout:
                log(f"timeout: no new trial after {timeout:g}s")
                break
            if objective.gave_up:
                break
            sig.defer()
            lock.acquire()
            try:
                trials = study.get_trials(deepcopy=False)
                finished, running = count_finished(trials), count_running(trials)
                go = finished + running < target
                if go:  # ask (and fail stale trials) under the lock; the objective releases it
                    study.optimize(_released(objective, lock, sig), n_trials=1, catch=CATCH,
                                   gc_after_trial=gc_after_trial)
                    ran += 1
            finally:
                lock.release()
            if finished >= target:
                break
            if not go:
                if not waiting:
                    log(f"waiting: {finished} finished + {running} running cover the target of {target} "
                        f"(a trial without a heartbeat for {grace_s}s is failed and retried)")
                waiting = True
                optuna.storages.fail_stale_trials(study)  # a dead worker's trial: FAIL, then a retry in the queue
                fail_orphans(study, grace_s)
                sig.allow()
                time.sleep(poll_s)
            else:
                waiting = False
    return ran


def _released(objective: Objective, lock: StudyLock, sig: Interrupts) -> Callable[[optuna.Trial], Any]:
    """The objective, releasing the study lock once Optuna has asked for the trial."""
    def run_one(trial: optuna.Trial) -> Any:
        lock.release()
        try:
            sig.allow()  # a Ctrl-C that came during ask stops this trial here
            return objective(trial)
        except KeyboardInterrupt as e:  # the one place a stopped trial is recorded as interrupted
            mark_interrupted(trial, str(e) or "SIGINT")
            raise
        finally:
            sig.defer()  # until Optuna has told the storage how the trial ended
    return run_one


class QuietStops(logging.Filter):
    """Drop Optuna's traceback for a trial stopped by Ctrl-C or bad input: the worker says why in one line."""

    def __init__(self) -> None:
        super().__init__()
        self.numbers: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        match = re.match(r"Trial (\d+) failed with ", record.getMessage())
        if match is None:
            return True
        if "KeyboardInterrupt(" in record.getMessage() or "UserError(" in record.getMessage():
            self.numbers.add(match[1])
        return match[1] not in self.numbers


def quiet_stops() -> None:
    """Install QuietStops on the logger of Optuna's optimize loop (once)."""
    logger = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, QuietStops) for f in logger.filters):
        logger.addFilter(QuietStops())


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
    pumps = [threading.Thread(target=_pump, args=(w, echo), daemon=True) for w in workers]
    for t in pumps:
        t.start()
    interrupted = False
    main = threading.current_thread() is threading.main_thread()  # only it may set handlers
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if main else None
    try:
        while any(w.proc.poll() is None for w in workers):
            try:
                for w in workers:
                    w.proc.wait()
            except KeyboardInterrupt:
                interrupted = True
                for w in workers:
                    if w.proc.poll() is None:
                        w.proc.send_signal(signal.SIGINT)
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
    for t in pumps:
        t.join(timeout=5)
    return workers, interrupted


def _raise_interrupt(signum: int, frame: Any) -> None:
    """SIGTERM on the parent: stop the workers as Ctrl-C would."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _pump(worker: Worker, echo: Callable[[str], None]) -> None:
    """Copy a worker's output to its log file and, prefixed with `[wI]`, to ours."""
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
