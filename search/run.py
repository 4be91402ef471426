"""`python -m search.run SPACE.yaml`: search the space under its hard budget; rerun to resume.

`--workers N` runs N worker processes on this machine; the same command with one `--storage URL`
on several machines makes them all work on one study (see docs/scale-and-faults.md).
"""

from __future__ import annotations

import signal
import sys


def _interrupted_at_start(signum: int, frame: object) -> None:
    """Ctrl-C while torch and Optuna are still being imported: the usual line, not an import traceback."""
    print("interrupted: rerun the same command to resume", file=sys.stderr)
    sys.exit(130)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, _interrupted_at_start)

# The imports below come after the handler on purpose: they take seconds.
import argparse
import shlex
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import yaml

from blocks.atomic import atomic_write_text
from blocks.text import version

from . import shipped_space, shipped_spaces
from .baselines import enqueue_baselines
from .checks import check_for_training
from .cli import main_guard, python_command, say
from .config import SearchConfig, load_config
from .device import resolve_device
from .dryrun import Clock, TrainingTimer, sample_designs, summarise, time_training
from .errors import UserError, clip
from .names import check_path
from .objective import Objective
from .review.summary import summary_table
from .storage import (
    GRACE_MAX_S,
    GRACE_S,
    HEARTBEAT_MAX_S,
    HEARTBEAT_S,
    check_url,
    close_storage,
    default_storage,
    redact_url,
)
from .study.identity import check_folder, data_identity
from .study.stop import Stop
from .study.study import StudyLock, open_study, requeue_interrupted
from .study.supervisor import Worker, describe_exit, launch
from .study.trial_loop import run_trials
from .threads import LoadMeter
from .trials import count_finished


class WorkerFailed(Exception):
    """A worker process crashed (not bad input) before the study reached its target."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; each one overrides its YAML key."""
    p = argparse.ArgumentParser(prog="python -m search.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("space", help="search-space YAML, e.g. spaces/cifar10_5m.yaml (or a shipped space's name: smoke, "
                                 "cifar10_5m, tiny_26m)")
    p.add_argument("--n-trials", type=int, help="target number of finished trials in the study (search.n_trials)")
    p.add_argument("--timeout", type=float, help="stop starting new trials after this many seconds")
    p.add_argument("--storage", help="SQLAlchemy URL (default: sqlite:///results/<study>/study.db); "
                                     "postgresql://USER:PASSWORD@HOST/DB for several machines")
    p.add_argument("--study-name", help="study name (default: search.study_name or the YAML's stem)")
    p.add_argument("--data-root", help="dataset folder (data.root)")
    p.add_argument("--results-dir", default="results", help="folder holding one sub-folder per study")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where trials train")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="worker processes on this machine sharing the study: one GPU each (round robin), "
                        "or a share of the CPU cores (default 1)")
    p.add_argument("--heartbeat", type=int, default=HEARTBEAT_S, metavar="S",
                   help=f"seconds between heartbeats of a running trial (default {HEARTBEAT_S})")
    p.add_argument("--grace", type=int, default=GRACE_S, metavar="S",
                   help=f"seconds without a heartbeat before a trial's worker counts as dead and the trial is "
                        f"failed and retried (default {GRACE_S}; use one value on every machine)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate, draw designs without training and print the space's summary and the expected "
                        "duration on this device (no study is created or touched)")
    p.add_argument("--dry-run-samples", type=int, default=1000, metavar="N", help="designs the dry run draws (1000)")
    p.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # set by --workers on its children
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override any YAML key, e.g. --set train.epochs=5 (repeatable)")
    p.add_argument("--version", action="version", version=f"resnet-budget-search {version()}")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def config_from_args(args: argparse.Namespace) -> SearchConfig:
    """Load the YAML with the command-line overrides applied."""
    if args.workers < 1:
        raise UserError(f"--workers {args.workers}: expected 1 or more")
    if not 1 <= args.heartbeat < args.grace or args.heartbeat > HEARTBEAT_MAX_S or args.grace > GRACE_MAX_S:
        raise UserError(f"--heartbeat {args.heartbeat} --grace {args.grace}: expected 1 <= heartbeat < grace "
                        f"(seconds), heartbeat at most {HEARTBEAT_MAX_S} and grace at most {GRACE_MAX_S}")
    overrides = list(args.overrides)
    if args.n_trials is not None:
        overrides.append(f"search.n_trials={args.n_trials}")
    if args.timeout is not None:
        overrides.append(f"search.timeout={args.timeout}")
    strings = []  # names and paths, taken as typed (`--study-name 2024` is a name, not a number)
    if args.study_name is not None:
        strings.append(f"search.study_name={args.study_name}")
    if args.data_root:
        strings.append(f"data.root={args.data_root}")
    if args.storage:
        strings.append(f"storage={args.storage}")
    check_path(args.space, "SPACE")
    check_path(args.results_dir, "--results-dir")
    space = shipped_space(args.space)
    if not Path(space).exists():
        names = ", ".join(p.stem for p in shipped_spaces())
        raise UserError(f"{clip(args.space)}: no such file, nor a shipped space (shipped: {names}; "
                        f"`resnet-search spaces` says where they are)")
    cfg = load_config(space, overrides, strings)
    check_path(Path(args.results_dir) / cfg.study_name, "the results folder")  # both fit; together they may not
    return cfg


def prepare_results(cfg: SearchConfig, results_root: str) -> Path:
    """Create results/<study>/ and check that it can be written, before any study is touched."""
    results = Path(results_root) / cfg.study_name
    check_folder(results, cfg.study_name)  # e.g. a link to another study's folder: nothing of it is overwritten
    try:
        results.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=results) as probe:  # a new file of a random name: never a planted link
            probe.write(b"ok")
    except OSError as e:
        raise UserError(f"results folder {results}: cannot write: {e.strerror or e}") from None
    return results


def save_config(cfg: SearchConfig, results: Path) -> None:
    """Save the resolved config beside the study (atomically: workers write it at the same time)."""
    raw = {**cfg.raw, "search": {**(cfg.raw.get("search") or {}), "study_name": cfg.study_name}}  # whose folder this is
    try:
        atomic_write_text(results / "config.yaml", yaml.safe_dump(raw, sort_keys=False))
    except OSError as e:
        raise UserError(f"results folder {results}: cannot write config.yaml: {e.strerror or e}") from None


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> optuna.Study | None:
    """Run (or resume) the search the arguments describe and print its summary; the study (None for a dry run)."""
    cfg = config_from_args(args)
    if cfg.storage:  # a URL the run would refuse is refused by the dry run too, before anything is written
        check_url(cfg.storage)
    if args.dry_run:
        dry_run(args, cfg, log)
        return None
    info = check_for_training(cfg).info  # the dataset loads (or downloads) before any folder or study exists
    results = prepare_results(cfg, args.results_dir)
    storage = cfg.storage or default_storage(results)
    data = data_identity(cfg.data.dataset, info)
    study = open_study(cfg, storage, args.heartbeat, args.grace, data)
    try:
        save_config(cfg, results)  # only once the study has accepted this YAML
        if args.workers > 1 and args.worker_index is None:
            return _run_workers(args, cfg, study, results, storage, log)
        return _run_here(args, cfg, study, results, storage, log)
    finally:
        close_storage(study)  # an SQLite study.db is whole again (its write-ahead log folded in)


def dry_run(args: argparse.Namespace, cfg: SearchConfig, log: Callable[[str], None] = print,
            probe: TrainingTimer = time_training, clock: Clock = time.monotonic,
            meter: LoadMeter | None = None) -> None:
    """Validate, draw designs and print what the space holds and how long its search would take here (`meter`:
    reads the machine's load; this process's by default)."""
    if args.dry_run_samples < 1:
        raise UserError(f"--dry-run-samples {args.dry_run_samples}: expected 1 or more")
    found = check_for_training(cfg, images="count")  # counts the images: nothing decoded, downloaded or written
    designs, rejected = sample_designs(cfg, args.dry_run_samples, found.info.num_classes, found.info.image_size,
                                       clock=clock)
    notes = [found.skipped] if found.skipped else []
    n_train, n_val = found.counts()
    for line in summarise(cfg, designs, rejected, n_train, n_val, resolve_device(args.device), probe, notes,
                          asked=args.dry_run_samples, workers=args.workers, meter=meter):
        log(line)


def _run_here(args: argparse.Namespace, cfg: SearchConfig, study: optuna.Study, results: Path, storage: str,
              log: Callable[[str], None]) -> optuna.Study:
    """Be one worker: run trials in this process until the study reaches its target."""
    target = cfg.search.n_trials
    lock = StudyLock(study, results / ".study.lock")
    done = count_finished(study.get_trials(deepcopy=False))
    if done < target:
        with lock:  # one worker re-enqueues each interrupted trial and each baseline
            resumed = requeue_interrupted(study)
            baselines = enqueue_baselines(study, cfg)
        if resumed:
            log(f"resuming interrupted trial(s) {', '.join(map(str, resumed))} from their checkpoints")
        if baselines:
            log(f"baselines first (not counted in n_trials): {', '.join(baselines)}")
    if done >= target:
        log(f"study {cfg.study_name!r} already has {done} finished trials (target {target}); nothing to run")
    else:
        log(f"study {cfg.study_name!r}: {done} finished, running {target - done} more "
            f"(budget {cfg.budget.params:,} params{_flops(cfg)}) -> {results}")
        t0 = time.time()
        with Stop() as stop:  # from here on Ctrl-C / SIGTERM only ask the loops to stop at a safe point
            objective = Objective(cfg, results, args.device, log=log, stop=stop, workers=args.workers)
            run_trials(study, objective, target, lock, stop, timeout=cfg.search.timeout, grace_s=args.grace,
                       poll_s=min(5.0, args.heartbeat), log=log)
        log(f"ran for {time.time() - t0:.0f}s")
    if args.worker_index is None:
        log(summary_table(study, cfg))
        log(next_commands(args, results, storage))
    return study


def _run_workers(args: argparse.Namespace, cfg: SearchConfig, study: optuna.Study, results: Path, storage: str,
                 log: Callable[[str], None]) -> optuna.Study:
    """Start --workers processes of this command, wait for them, and print one summary."""
    target = cfg.search.n_trials
    done = count_finished(study.get_trials(deepcopy=False))
    workers: list[Worker] = []
    interrupted = False
    if done >= target:
        log(f"study {cfg.study_name!r} already has {done} finished trials (target {target}); nothing to run")
    else:
        log(f"study {cfg.study_name!r}: {done} finished, running {target - done} more with {args.workers} workers "
            f"(budget {cfg.budget.params:,} params{_flops(cfg)}) -> {results}")
        t0 = time.time()
        # each child keeps --workers N: it takes its share of the free cores (a --worker-index makes it one worker)
        workers, interrupted = launch(args.argv, args.workers, results, args.device, echo=log)
        log(f"ran for {time.time() - t0:.0f}s")
    failed = [w for w in workers if w.proc.returncode != 0]
    for w in failed:
        log(f"worker {w.index} {describe_exit(w)} (log: {w.log_path})")
    log(summary_table(study, cfg))
    log(next_commands(args, results, storage))
    if count_finished(study.get_trials(deepcopy=False)) >= target or not (failed or interrupted):
        return study
    if interrupted or any(w.proc.returncode == 130 for w in failed):
        raise KeyboardInterrupt
    bad = next((w for w in failed if w.proc.returncode == 2), None)
    if bad is not None:
        raise UserError(f"worker {bad.index}: {bad.last_error or describe_exit(bad)}")
    why = describe_exit(failed[0])
    hint = "" if "rerun the same command" in why else "; rerun the same command to resume"
    raise WorkerFailed(f"worker {failed[0].index} {why}{hint} (log: {failed[0].log_path})")


def next_commands(args: argparse.Namespace, results: Path, storage: str) -> str:
    """The three commands that follow a search, quoted for a POSIX shell and run by this interpreter: the report,
    the dashboard, the retrain."""
    on_server = f" --storage {shlex.quote(redact_url(storage))}" if args.storage else ""
    folder, py = shlex.quote(str(results)), python_command()
    return "\n".join(["next:",
                      f"  {py} -m search report {folder}{on_server}        # one HTML page of charts",
                      f"  {py} -m search dashboard {folder}{on_server}     # browse trials and artifacts",
                      f"  {py} -m search retrain {folder}{on_server}       # train the best trial to full epochs, then test"])


def _flops(cfg: SearchConfig) -> str:
    """`, N FLOPs` when there is a FLOPs budget."""
    return f", {cfg.budget.flops:,} FLOPs" if cfg.budget.flops else ""


def main(argv: list[str] | None = None) -> int:
    """Entry point: one-line errors, exit status 2 for bad input, 1 for a crashed worker, 130 for Ctrl-C."""
    if threading.current_thread() is threading.main_thread():  # from here main_guard makes Ctrl-C one line
        signal.signal(signal.SIGINT, signal.default_int_handler)
    args = parse_args(argv)
    try:
        return main_guard(lambda: run(args, log=say))
    except WorkerFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    status = main()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # all is written: a late Ctrl-C must not print a traceback
    sys.exit(status)
