"""The --workers parent: start N worker processes of this command, relay their output, forward Ctrl-C.

Each worker is `python -m search.run ... --workers N --worker-index i`, with its own GPU (round robin) or,
on the CPU, its share of the free cores (search.threads, re-picked every epoch); its output goes to
results/<study>/worker<i>.log and, prefixed `[wI]`, to ours.
A Ctrl-C or SIGTERM to the parent reaches the workers as SIGINT (each stops at its next safe point).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .stop import Signals

POLL_S = 1.0  # the parent looks at its workers at least this often (a signal or a worker's exit wakes it)


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


def worker_env(index: int, gpus: list[str]) -> dict[str, str]:
    """Environment of worker `index`: its own GPU (round robin); on the CPU it picks its threads itself."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    return env


def _die_with_parent() -> None:
    """Linux: a worker gets SIGTERM (a clean stop) when the process that started it dies."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: no such call
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


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
                                env=worker_env(i, gpus), preexec_fn=_die_with_parent)
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
        for line in worker.proc.stdout or ():  # (started with stdout=PIPE: never empty)
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
