"""Measure scale-out: storage overhead per trial (SQLite, journal file, PostgreSQL) and search throughput.

    python -m benchmarks.bench_workers storage [--postgres URL] [--trials 40]
    python -m benchmarks.bench_workers search [--workers 1 2 4] [--trials 12] [--set KEY=VALUE]
    python -m benchmarks.bench_workers ctrl-c [--rounds 40] [--unsafe]

`storage` runs 1 and 4 processes through the real worker loop (search.study.trial_loop.run_trials: study lock,
heartbeat thread, stale-trial check, ask/tell) with an objective that only does the storage calls a
real trial makes (8 params, 12 user attributes, 3 epoch reports), so the time per trial is the storage
overhead. `search` times `python -m search.run SPACE --workers N` end to end on the CPU (`--space`, default smoke).
`ctrl-c` is a stress check: one worker process at a time runs the real loop with a trial that mostly
talks to SQLite and checks the stop flag between its "batches" (as search.trainer.fit does), gets SIGINT
at a random moment, and must record the trial as interrupted and exit; it also prints the time from the
signal to the exit. `--unsafe` lets the signal raise anywhere (Python's default handler) instead of
setting the flag, as before search.study.stop. Each records its table in
benchmarks/results/bench_workers_<command>-<commit>.json (benchmarks.harness).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.harness import ROOT, describe, machine, record


class StorageOnly:
    """An objective making a trial's storage calls and nothing else."""

    gave_up = False

    def __call__(self, trial: Any) -> float:
        trial.set_user_attr("worker", f"bench:{os.getpid()}")
        values = [trial.suggest_float(f"p{i}", 0.0, 1.0) for i in range(8)]
        for key in ("arch", "train", "params", "flops", "receptive_field", "budget_utilisation", "seed",
                    "device", "resumed_from_epoch"):
            trial.set_user_attr(key, values[:3])
        for epoch in range(1, 4):
            trial.set_user_attr("epoch_times_s", [0.1] * epoch)
            trial.set_user_attr("val_acc_curve", values[:epoch])
            trial.report(sum(values) / 8, epoch)
            trial.should_prune()
        return sum(values)


def open_storage(kind: str, where: str) -> Any:
    """The storage `kind` at `where` (a folder, or a PostgreSQL URL), as this project opens it."""
    import optuna
    from optuna.storages import RDBStorage
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    from search.storage import make_storage

    if kind == "journal":  # no heartbeats: Optuna implements them for RDB storages only
        return JournalStorage(JournalFileBackend(str(Path(where) / "journal.log")))
    if kind == "sqlite-plain":  # Optuna's defaults: rollback journal, deferred transactions, 5 s busy timeout
        return RDBStorage(f"sqlite:///{Path(where) / 'plain.db'}", heartbeat_interval=30, grace_period=120)
    if kind == "sqlite":  # this project's: WAL, synchronous=NORMAL, BEGIN IMMEDIATE, 60 s busy timeout
        return make_storage(f"sqlite:///{Path(where) / 'study.db'}")
    assert kind == "postgresql", kind
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return make_storage(where)


def _worker(kind: str, where: str, name: str, target: int, out: Any) -> None:
    """One process: run the loop until the study has `target` trials; report its trial times and errors."""
    import optuna

    from search.study.lock import StudyLock
    from search.study.stop import Stop
    from search.study.trial_loop import run_trials

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    t0 = time.perf_counter()
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(kind, where),
                                  sampler=optuna.samplers.RandomSampler(seed=os.getpid()))
        lock = StudyLock(study, Path(tempfile.gettempdir()) / f"{name}.lock")
        ran = run_trials(study, StorageOnly(), target, lock, Stop(), log=lambda s: None, poll_s=0.05)
        out.put((ran, time.perf_counter() - t0, ""))
    except Exception as e:  # a storage that does not hold under concurrency shows here
        out.put((0, time.perf_counter() - t0, f"{type(e).__name__}: {str(e).splitlines()[0][:90]}"))


def bench_storage(kind: str, where: str, processes: int, trials: int) -> dict[str, Any]:
    """Per-trial wall time with `processes` concurrent workers sharing `trials` trials."""
    import optuna

    name = f"bench-{uuid.uuid4().hex[:8]}"
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    optuna.create_study(study_name=name, storage=open_storage(kind, where), direction="maximize")
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(kind, where, name, trials, out)) for _ in range(processes)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    results = [out.get(timeout=900) for _ in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    study = optuna.load_study(study_name=name, storage=open_storage(kind, where))
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    errors = [e for _, _, e in results if e]
    slowest = max(s for _, s, _ in results)
    return {"storage": kind, "processes": processes, "complete": states.count("COMPLETE"), "trials": trials,
            "ms_per_trial": 1000 * slowest / max(1, states.count("COMPLETE")), "wall_s": wall,
            "errors": errors}


def run_storage(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Print a markdown table of storage overhead per trial for 1 and 4 processes; its rows."""
    kinds = ["sqlite-plain", "sqlite", "journal"] + (["postgresql"] if args.postgres else [])
    print("| storage | processes | trials complete | ms per trial (wall / trials) | errors |")
    print("|---|---|---|---|---|")
    rows = []
    for kind in kinds:
        for processes in (1, 4):
            with tempfile.TemporaryDirectory() as tmp:
                r = bench_storage(kind, args.postgres if kind == "postgresql" else tmp, processes, args.trials)
            errors = "; ".join(sorted(set(r["errors"]))) or "none"
            print(f"| {kind} | {processes} | {r['complete']}/{r['trials']} | {r['ms_per_trial']:.0f} | {errors} |",
                  flush=True)
            rows.append(r)
    return rows


def run_search(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Print a markdown table of end-to-end trials per minute on a space (the smoke space) with N CPU workers;
    its rows."""
    print("| workers | trials | wall s | trials per minute | study at the end |")
    print("|---|---|---|---|---|")
    sets = [a for kv in args.sets for a in ("--set", kv)]
    rows: list[dict[str, Any]] = []
    for n in [n for n in args.workers for _ in range(args.repeats)]:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "search.run", args.space, "--results-dir", tmp,
                   "--n-trials", str(args.trials), "--workers", str(n), "--device", "cpu", *sets]
            t0 = time.perf_counter()
            done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                  capture_output=True, text=True)
            wall = time.perf_counter() - t0
        if done.returncode != 0:
            print(f"| {n} | failed: {done.stderr.strip().splitlines()[-1:]} | | | |")
            rows.append({"workers": n, "failed": done.stderr.strip().splitlines()[-1:]})
            continue
        states = next((ln.split(": ", 1)[1] for ln in done.stdout.splitlines() if ln.startswith("study '")
                       and ("complete" in ln or "pruned" in ln)), "?")
        print(f"| {n} | {args.trials} | {wall:.0f} | {60 * args.trials / wall:.1f} | {states} |", flush=True)
        rows.append({"workers": n, "trials": args.trials, "wall_s": wall, "study": states})
    return rows


class StorageHeavy(StorageOnly):
    """A trial that never ends and spends most of its time in storage calls (the worst case for Ctrl-C)."""

    def __init__(self, stop: Any) -> None:
        self.stop = stop

    def __call__(self, trial: Any) -> float:
        from search.errors import StopRequested

        print("ready", flush=True)
        epoch = 0
        while True:
            if self.stop():  # where fit() checks: between batches
                raise StopRequested(self.stop.reason)
            epoch += 1
            trial.set_user_attr("val_acc_curve", [0.5] * epoch)
            trial.report(0.5, epoch)
            trial.should_prune()
            trial.study.get_trials(deepcopy=False)
            sum(range(20_000))  # a little compute between the calls, as a training step would have


def _ctrl_c_child(db: str, unsafe: bool) -> None:
    """One worker process for `ctrl-c`: run a StorageHeavy trial until SIGINT; exit 130 once it is recorded."""
    import optuna

    import search.storage
    from search.study.lock import StudyLock
    from search.study.stop import Stop
    from search.study.trial_loop import run_trials

    optuna.logging.set_verbosity(optuna.logging.CRITICAL)
    search.storage.SQLITE_TIMEOUT_S = 3  # a lock left behind shows in 3 s instead of 60
    study = optuna.create_study(storage=search.storage.make_storage(f"sqlite:///{db}"), study_name="s")
    stop = Stop()
    try:
        if unsafe:  # the signal raises KeyboardInterrupt wherever it lands
            run_trials(study, StorageHeavy(stop), 1, StudyLock(study, Path(db + ".lock")), stop, log=lambda s: None)
        else:
            with stop:
                run_trials(study, StorageHeavy(stop), 1, StudyLock(study, Path(db + ".lock")), stop,
                           log=lambda s: None)
    except KeyboardInterrupt:
        sys.exit(130)


def run_ctrl_c(args: argparse.Namespace) -> dict[str, Any]:
    """Print how often a random Ctrl-C left the trial recorded and the worker exited, out of --rounds; the
    counts and the seconds to exit."""
    import optuna

    counts = {"clean": 0, "database is locked": 0, "trial not marked": 0, "hung": 0}
    latency = []  # seconds from SIGINT to the worker's exit
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            db = str(Path(tmp) / "study.db")
            cmd = [sys.executable, "-m", "benchmarks.bench_workers", "_ctrl-c-child", db, *["--unsafe"] * args.unsafe]
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            assert proc.stdout is not None  # stdout=PIPE
            for line in proc.stdout:  # until the trial has started
                if line.strip() == "ready":
                    break
            time.sleep(random.uniform(0.2, 1.5))
            proc.send_signal(signal.SIGINT)
            sent = time.perf_counter()
            try:
                out = proc.communicate(timeout=30)[0]
                latency.append(time.perf_counter() - sent)
            except subprocess.TimeoutExpired:
                proc.kill()
                out = proc.communicate()[0]
                counts["hung"] += 1
                continue
            trial = optuna.load_study(study_name="s", storage=f"sqlite:///{db}").trials[0]
            if "database is locked" in out:
                counts["database is locked"] += 1
            elif trial.state.name != "FAIL" or "interrupted" not in trial.user_attrs or proc.returncode != 130:
                counts["trial not marked"] += 1
            else:
                counts["clean"] += 1
    latency.sort()
    lat = f"{latency[len(latency) // 2]:.2f} / {latency[-1]:.2f}" if latency else "-"
    print("| Ctrl-C | rounds | " + " | ".join(counts) + " | s to exit (median / worst) |")
    print("|---|---|" + "---|" * (len(counts) + 1))
    print(f"| {'raised anywhere (--unsafe)' if args.unsafe else 'stop flag'} | {args.rounds} | "
          + " | ".join(str(v) for v in counts.values()) + f" | {lat} |")
    return {"unsafe": args.unsafe, "rounds": args.rounds, "counts": counts, "s_to_exit": latency}


def main() -> None:
    """Parse the command and run one benchmark."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("storage", help="storage overhead per trial")
    s.add_argument("--postgres", default=os.environ.get("TEST_POSTGRES_URL"), help="PostgreSQL URL (optional)")
    s.add_argument("--trials", type=int, default=40)
    w = sub.add_parser("search", help="end-to-end trials per minute with N workers")
    w.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    w.add_argument("--trials", type=int, default=12)
    w.add_argument("--space", default=str(ROOT / "spaces" / "smoke.yaml"), help="the space searched")
    w.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="passed on to search.run, e.g. --set search.pruner=none (repeatable)")
    w.add_argument("--repeats", type=int, default=1, help="runs of each worker count (the machine may be shared)")
    c = sub.add_parser("ctrl-c", help="stress check: SIGINT at random moments of storage-heavy trials")
    c.add_argument("--rounds", type=int, default=40)
    c.add_argument("--unsafe", action="store_true", help="let the signal raise inside storage calls too")
    child = sub.add_parser("_ctrl-c-child")
    child.add_argument("db")
    child.add_argument("--unsafe", action="store_true")
    args = p.parse_args()
    random.seed(0)
    if args.what == "_ctrl-c-child":
        _ctrl_c_child(args.db, args.unsafe)
        return
    facts = machine()
    print(describe(facts))
    figures = {"storage": run_storage, "search": run_search, "ctrl-c": run_ctrl_c}[args.what](args)
    name = f"bench_workers_{args.what.replace('-', '_')}"
    record(name, {args.what: figures}, facts)


if __name__ == "__main__":
    main()
