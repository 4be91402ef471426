"""`python -m search.run SPACE.yaml`: search the space under its hard budget; rerun to resume."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import optuna
import yaml

from .cli import main_guard
from .config import SearchConfig, load_config
from .errors import UserError
from .objective import Objective, count_finished
from .study import default_storage, open_study
from .summary import summary_table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; each one overrides its YAML key."""
    p = argparse.ArgumentParser(prog="python -m search.run", description=__doc__)
    p.add_argument("space", help="search-space YAML, e.g. spaces/cifar10_5m.yaml")
    p.add_argument("--n-trials", type=int, help="target number of finished trials in the study (search.n_trials)")
    p.add_argument("--timeout", type=float, help="stop starting new trials after this many seconds")
    p.add_argument("--storage", help="SQLAlchemy URL (default: sqlite:///results/<study>/study.db)")
    p.add_argument("--study-name", help="study name (default: search.study_name or the YAML's stem)")
    p.add_argument("--data-root", help="dataset folder (data.root)")
    p.add_argument("--results-dir", default="results", help="folder holding one sub-folder per study")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where trials train")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override any YAML key, e.g. --set train.epochs=5 (repeatable)")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> SearchConfig:
    """Load the YAML with the command-line overrides applied."""
    overrides = list(args.overrides)
    if args.n_trials is not None:
        overrides.append(f"search.n_trials={args.n_trials}")
    if args.timeout is not None:
        overrides.append(f"search.timeout={args.timeout}")
    if args.study_name:
        overrides.append(f"search.study_name={args.study_name}")
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    if args.storage:
        overrides.append(f"storage={args.storage}")
    return load_config(args.space, overrides)


def prepare_results(cfg: SearchConfig, results_root: str) -> Path:
    """Create results/<study>/ and save the resolved config beside the study."""
    results = Path(results_root) / cfg.study_name
    try:
        results.mkdir(parents=True, exist_ok=True)
        (results / "config.yaml").write_text(yaml.safe_dump(cfg.raw, sort_keys=False))
    except OSError as e:
        raise UserError(f"results folder {results}: cannot write: {e.strerror or e}") from None
    return results


def run(args: argparse.Namespace, log=print) -> optuna.Study:
    """Run (or resume) the search the arguments describe and print its summary."""
    cfg = config_from_args(args)
    results = prepare_results(cfg, args.results_dir)
    storage = cfg.storage or default_storage(results)
    from .data import check_config as check_data, make_loaders

    check_data(cfg.data, f"{cfg.path}: data")
    make_loaders(cfg.data, [], 2, seed=0)  # a missing dataset fails (or downloads) here, before the study is touched
    study = open_study(cfg, storage)
    target = cfg.search.n_trials
    done = count_finished(study.get_trials(deepcopy=False))
    if done >= target:
        log(f"study {cfg.study_name!r} already has {done} finished trials (target {target}); nothing to run")
    else:
        log(f"study {cfg.study_name!r}: {done} finished, running {target - done} more "
            f"(budget {cfg.budget.params:,} params{_flops(cfg)}) -> {results}")
        objective = Objective(cfg, results, args.device, log=log)
        t0 = time.time()
        study.optimize(objective, timeout=cfg.search.timeout, callbacks=[StopAtTarget(target)],
                       catch=(FloatingPointError,), gc_after_trial=True)
        log(f"ran for {time.time() - t0:.0f}s")
    log(summary_table(study, cfg))
    log(f"review: optuna-dashboard {storage}")
    return study


class StopAtTarget:
    """Stop the study once the finished (non-rejected) trials reach the target."""

    def __init__(self, target: int):
        self.target = target

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if count_finished(study.get_trials(deepcopy=False)) >= self.target:
            study.stop()


def _flops(cfg: SearchConfig) -> str:
    """`, N FLOPs` when there is a FLOPs budget."""
    return f", {cfg.budget.flops:,} FLOPs" if cfg.budget.flops else ""


def main(argv: list[str] | None = None) -> int:
    """Entry point: one-line errors, exit status 2 for bad input, 130 for Ctrl-C."""
    args = parse_args(argv)
    return main_guard(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
