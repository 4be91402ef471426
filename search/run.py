"""`resnet-search run SPACE.yaml` (or `python -m search run SPACE.yaml`): search the space under its hard budget;
rerun to resume.

`--workers N` runs N worker processes on this machine; the same command with one `--storage URL`
on several machines makes them all work on one study (see docs/scale-and-faults.md).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable


def _interrupted_at_start(signum: int, frame: object) -> None:
    """Ctrl-C while torch and Optuna are still being imported: the usual line, not an import traceback."""
    print("interrupted: rerun the same command to resume", file=sys.stderr)
    sys.exit(130)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, _interrupted_at_start)

# The imports below come after the handler on purpose: they take seconds.
import argparse
import threading

from blocks.text import version

from .cli import ArgumentParser, main_guard, say
from .config import SearchConfig
from .runner import DRY_RUN_SAMPLES, SearchOptions, WorkerFailed, dry_run, load_space, named, search
from .storage import GRACE_S, HEARTBEAT_S


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; each one overrides its YAML key."""
    p = ArgumentParser(prog="resnet-search run", description=__doc__,
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
    p.add_argument("--dry-run-samples", type=int, default=DRY_RUN_SAMPLES, metavar="N",
                   help=f"designs the dry run draws ({DRY_RUN_SAMPLES})")
    p.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # set by --workers on its children
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override any YAML key, e.g. --set train.epochs=5 (repeatable)")
    p.add_argument("--version", action="version", version=f"resnet-budget-search {version()}")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def options(args: argparse.Namespace) -> SearchOptions:
    """The run's options from the command line (the workers rerun it)."""
    return SearchOptions(results_dir=args.results_dir, device=args.device, workers=args.workers,
                         heartbeat=args.heartbeat, grace=args.grace, storage_given=bool(args.storage),
                         argv=tuple(args.argv), worker_index=args.worker_index)


def config_from_args(args: argparse.Namespace) -> SearchConfig:
    """Load the YAML with the command-line overrides applied."""
    options(args).check()
    overrides = list(args.overrides)
    if args.n_trials is not None:
        overrides.append(f"search.n_trials={args.n_trials}")
    if args.timeout is not None:
        overrides.append(f"search.timeout={args.timeout}")
    names = named(args.study_name, args.data_root or None, args.storage or None)
    return load_space(args.space, overrides, names, args.results_dir)


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> None:
    """Run (or resume) the search the arguments describe, or its dry run, and print its summary."""
    cfg = config_from_args(args)
    if args.dry_run:
        dry_run(cfg, options(args), args.dry_run_samples, log)
    else:
        search(cfg, options(args), log)


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
