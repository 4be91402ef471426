"""Running (or resuming) a search as a library call: the space loaded with its overrides, the results folder, the
study, this process's trials or N worker processes, the summary. No argv here: search/run.py parses it."""

from __future__ import annotations

import shlex
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
import yaml

from . import shipped_space, shipped_spaces
from .baselines import enqueue_baselines
from .checks import check_for_training
from .cli import python_command
from .config import SearchConfig, apply_overrides, load_config, parse_config
from .device import resolve_device
from .dryrun import Clock, TrainingTimer, sample_designs, summarise, time_training
from .errors import UserError, clip
from .files import atomic_write_text
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
from .study.lock import StudyLock
from .study.recovery import requeue_interrupted
from .study.stop import Stop
from .study.study import open_study
from .study.supervisor import Worker, describe_exit, launch
from .study.trial_loop import run_trials
from .threads import LoadMeter
from .trials import count_finished

DRY_RUN_SAMPLES = 1000  # designs a dry run draws by default


class WorkerFailed(Exception):
    """A worker process crashed (not bad input) before the study reached its target."""


@dataclass(frozen=True)
class SearchOptions:
    """How a search runs, beside what its YAML says; each field is the command-line option of the same name."""

    results_dir: str = "results"  # folder holding one sub-folder per study
    device: str = "auto"  # auto | cpu | cuda: where trials train
    workers: int = 1  # worker processes on this machine sharing the study
    heartbeat: int = HEARTBEAT_S  # seconds between heartbeats of a running trial
    grace: int = GRACE_S  # seconds without a heartbeat before a trial counts as dead and is retried
    storage_given: bool = False  # the storage URL was given for this run: the next commands repeat it
    argv: tuple[str, ...] = ()  # the command line each of `workers` processes reruns (with --worker-index)
    worker_index: int | None = None  # set on a worker process started by `workers` > 1

    def check(self) -> None:
        """Raise a UserError for a worker count or heartbeat no run can use."""
        if self.workers < 1:
            raise UserError(f"--workers {self.workers}: expected 1 or more")
        if not 1 <= self.heartbeat < self.grace or self.heartbeat > HEARTBEAT_MAX_S or self.grace > GRACE_MAX_S:
            raise UserError(f"--heartbeat {self.heartbeat} --grace {self.grace}: expected 1 <= heartbeat < grace "
                            f"(seconds), heartbeat at most {HEARTBEAT_MAX_S} and grace at most {GRACE_MAX_S}")
        check_path(self.results_dir, "--results-dir")


# Keys whose values are taken as typed (`--study-name 2024` is a name, not a number), with the option setting each.
NAMED = {"search.study_name": "--study-name", "data.root": "--data-root", "storage": "--storage"}


def named(study_name: str | None = None, data_root: str | None = None, storage: str | None = None) -> dict[str, str]:
    """The names, paths and URLs given for a run, by the YAML key each replaces."""
    values = dict(zip(NAMED, (study_name, data_root, storage), strict=True))
    return {key: value for key, value in values.items() if value is not None}


def command_line(space: str | Path, overrides: Sequence[str], names: Mapping[str, str],
                 opts: SearchOptions) -> tuple[str, ...]:
    """The `resnet-search run` arguments that load this space with these overrides and run with `opts`: what
    each worker process reruns."""
    return (str(space), *(a for o in overrides for a in ("--set", o)), *(a for k, v in names.items()
                                                                        for a in (NAMED[k], v)),
            "--results-dir", opts.results_dir, "--device", opts.device, "--workers", str(opts.workers),
            "--heartbeat", str(opts.heartbeat), "--grace", str(opts.grace))


def load_space(space: str | Path | SearchConfig, overrides: Sequence[str] = (), names: Mapping[str, str] | None = None,
               results_dir: str = "results") -> SearchConfig:
    """The space (a YAML path, a shipped space's name or a loaded config) with `key.path=value` overrides applied
    (`names`: values of NAMED keys, taken as typed)."""
    strings = [f"{key}={value}" for key, value in (names or {}).items()]
    if isinstance(space, SearchConfig):
        raw = apply_overrides(yaml.safe_load(yaml.safe_dump(space.raw)), list(overrides), space.path)  # a copy
        cfg = parse_config(apply_overrides(raw, strings, space.path, parse=False), space.path)
    else:
        check_path(str(space), "SPACE")
        path = shipped_space(str(space))
        if not Path(path).exists():
            shipped = ", ".join(p.stem for p in shipped_spaces())
            raise UserError(f"{clip(str(space))}: no such file, nor a shipped space (shipped: {shipped}; "
                            f"`resnet-search spaces` says where they are)")
        cfg = load_config(path, list(overrides), strings)
    check_path(Path(results_dir) / cfg.study_name, "the results folder")  # both fit; together they may not
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


def search(cfg: SearchConfig, opts: SearchOptions, log: Callable[[str], None] = print) -> optuna.Study:
    """Run (or resume) the search of `cfg` and print its summary; returns the study."""
    opts.check()
    if cfg.storage:  # a URL the run would refuse is refused before anything is written
        check_url(cfg.storage)
    if opts.workers > 1 and opts.worker_index is None and not opts.argv:
        raise UserError(f"workers {opts.workers}: each worker reruns the search from its YAML file; give the space "
                        f"as a path and the dataset by import path (a config or dataset object stays in this process)")
    info = check_for_training(cfg).info  # the dataset loads (or downloads) before any folder or study exists
    results = prepare_results(cfg, opts.results_dir)
    storage = cfg.storage or default_storage(results)
    study = open_study(cfg, storage, opts.heartbeat, opts.grace, data_identity(cfg.data.dataset, info))
    try:
        save_config(cfg, results)  # only once the study has accepted this YAML
        if opts.workers > 1 and opts.worker_index is None:
            return _run_workers(cfg, opts, study, results, storage, log)
        return _run_here(cfg, opts, study, results, storage, log)
    finally:
        close_storage(study)  # an SQLite study.db is whole again (its write-ahead log folded in)


def dry_run(cfg: SearchConfig, opts: SearchOptions, samples: int = DRY_RUN_SAMPLES,
            log: Callable[[str], None] = print, probe: TrainingTimer = time_training, clock: Clock = time.monotonic,
            meter: LoadMeter | None = None) -> None:
    """Validate, draw `samples` designs and print what the space holds and how long its search would take here
    (`meter`: reads the machine's load; this process's by default). No study is created or touched."""
    opts.check()
    if cfg.storage:
        check_url(cfg.storage)
    if samples < 1:
        raise UserError(f"--dry-run-samples {samples}: expected 1 or more")
    found = check_for_training(cfg, images="count")  # counts the images: nothing decoded, downloaded or written
    designs, rejected = sample_designs(cfg, samples, found.info.num_classes, found.info.image_size, clock=clock)
    notes = [found.skipped] if found.skipped else []
    n_train, n_val = found.counts()
    for line in summarise(cfg, designs, rejected, n_train, n_val, resolve_device(opts.device), probe, notes,
                          asked=samples, workers=opts.workers, meter=meter):
        log(line)


def _run_here(cfg: SearchConfig, opts: SearchOptions, study: optuna.Study, results: Path, storage: str,
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
    if _starting(cfg, done, results, log):
        t0 = time.time()
        with Stop() as stop:  # from here on Ctrl-C / SIGTERM only ask the loops to stop at a safe point
            objective = Objective(cfg, results, opts.device, log=log, stop=stop, workers=opts.workers)
            run_trials(study, objective, target, lock, stop, timeout=cfg.search.timeout, grace_s=opts.grace,
                       poll_s=min(5.0, opts.heartbeat), log=log)
        log(f"ran for {time.time() - t0:.0f}s")
    if opts.worker_index is None:
        log(summary_table(study, cfg))
        log(next_commands(results, storage, opts.storage_given))
    return study


def _run_workers(cfg: SearchConfig, opts: SearchOptions, study: optuna.Study, results: Path, storage: str,
                 log: Callable[[str], None]) -> optuna.Study:
    """Start `workers` processes of this command, wait for them, and print one summary."""
    target = cfg.search.n_trials
    done = count_finished(study.get_trials(deepcopy=False))
    workers: list[Worker] = []
    interrupted = False
    if _starting(cfg, done, results, log, f" with {opts.workers} workers"):
        t0 = time.time()
        # each child keeps --workers N: it takes its share of the free cores (a --worker-index makes it one worker)
        workers, interrupted = launch(list(opts.argv), opts.workers, results, opts.device, echo=log)
        log(f"ran for {time.time() - t0:.0f}s")
    failed = [w for w in workers if w.proc.returncode != 0]
    for w in failed:
        log(f"worker {w.index} {describe_exit(w)} (log: {w.log_path})")
    log(summary_table(study, cfg))
    log(next_commands(results, storage, opts.storage_given))
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


def next_commands(results: Path, storage: str, on_server: bool) -> str:
    """The three commands that follow a search, quoted for a POSIX shell and run by this interpreter: the report,
    the dashboard, the retrain (`on_server`: with the storage URL, password hidden)."""
    where = f" --storage {shlex.quote(redact_url(storage))}" if on_server else ""
    folder, py = shlex.quote(str(results)), python_command()
    return "\n".join(["next:",
                      f"  {py} -m search report {folder}{where}        # one HTML page of charts",
                      f"  {py} -m search dashboard {folder}{where}     # browse trials and artifacts",
                      f"  {py} -m search retrain {folder}{where}       # train the best trial to full epochs, then test"])


def _starting(cfg: SearchConfig, done: int, results: Path, log: Callable[[str], None], how: str = "") -> bool:
    """Say what the run will do; whether the study has trials left to run."""
    target = cfg.search.n_trials
    if done >= target:
        log(f"study {cfg.study_name!r} already has {done} finished trials (target {target}); nothing to run")
        return False
    flops = f", {cfg.budget.flops:,} FLOPs" if cfg.budget.flops else ""
    log(f"study {cfg.study_name!r}: {done} finished, running {target - done} more{how} "
        f"(budget {cfg.budget.params:,} params{flops}) -> {results}")
    return True
