"""The Python API: everything a command does, as a typed function (`resnet-search COMMAND` is a thin layer over
these). Errors are one search.UserError, whose message is the line the command prints before exiting with 2.

    import search
    study = search.run_search("smoke", overrides={"search.n_trials": 4}, results_dir="results")
    done = search.retrain("results/smoke", epochs=2)
    page = search.report("results/smoke")

docs/python-api.md shows each function, and a search on your own data.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna

from .config import GIVEN_DATASET, SearchConfig, load_config
from .data.custom import DatasetSplits, given_dataset
from .errors import UserError
from .review.export import Exported, export
from .review.predict import Predictions, predict_images
from .review.report import report
from .review.retrain import Retrained, retrain
from .runner import DRY_RUN_SAMPLES, SearchOptions, command_line, load_space, named, search
from .runner import dry_run as _dry_run
from .storage import GRACE_S, HEARTBEAT_S

__all__ = ["DatasetSplits", "Exported", "Predictions", "Retrained", "SearchConfig", "UserError", "dry_run", "export",
           "load_config", "predict", "report", "retrain", "run_search"]

Overrides = Mapping[str, Any] | Sequence[str]  # {"train.epochs": 5} or ["train.epochs=5"], as --set takes them
predict = predict_images  # `search.predict(models, images)`; the trainer's own `predict` runs one model


def run_search(space: str | Path | SearchConfig, *, overrides: Overrides | None = None,
               dataset: str | DatasetSplits | None = None, n_trials: int | None = None, timeout: float | None = None,
               storage: str | None = None, study_name: str | None = None, data_root: str | None = None,
               results_dir: str | Path = "results", device: str = "auto", workers: int = 1,
               heartbeat: int = HEARTBEAT_S, grace: int = GRACE_S, log: Callable[[str], None] = print) -> optuna.Study:
    """Run (or resume: the same call again) the search of `space`, a YAML path, a shipped space's name or a
    SearchConfig; returns its Optuna study. `dataset` replaces data.dataset: a `module:function` import path or a
    DatasetSplits object. Every other keyword is the run command's option of the same name."""
    opts = SearchOptions(results_dir=str(results_dir), device=device, workers=workers, heartbeat=heartbeat,
                         grace=grace, storage_given=storage is not None)
    opts.check()
    sets = [*_as_sets(overrides), *(f"search.{k}={v}" for k, v in (("n_trials", n_trials), ("timeout", timeout))
                                     if v is not None)]
    names = named(study_name, data_root, storage)
    cfg = _config(space, sets, names, dataset, opts.results_dir)
    if workers > 1 and cfg.data.splits is None and not isinstance(space, SearchConfig):
        sets += [f"data.dataset={json.dumps(dataset)}"] if isinstance(dataset, str) else []
        opts = dataclasses.replace(opts, argv=command_line(space, sets, names, opts))  # what each worker reruns
    return search(cfg, opts, log)


def dry_run(space: str | Path | SearchConfig, *, overrides: Overrides | None = None,
            dataset: str | DatasetSplits | None = None, samples: int = DRY_RUN_SAMPLES, device: str = "auto",
            workers: int = 1, data_root: str | None = None, log: Callable[[str], None] = print) -> list[str]:
    """Validate the space, draw `samples` designs without training and return the summary the run command's
    --dry-run prints (what the space holds, how long its search would take here); no study is touched."""
    opts = SearchOptions(device=device, workers=workers)
    opts.check()
    cfg = _config(space, _as_sets(overrides), named(data_root=data_root), dataset, opts.results_dir)
    lines: list[str] = []

    def keep(line: str) -> None:
        lines.append(line)
        log(line)

    _dry_run(cfg, opts, samples, keep)
    return lines


def _config(space: str | Path | SearchConfig, sets: list[str], names: dict[str, str],
            dataset: str | DatasetSplits | None, results_dir: str) -> SearchConfig:
    """The space with its overrides, its names and the dataset (an import path, or an object, which config.yaml
    records as `dataset: object`)."""
    if isinstance(dataset, str):
        sets = [*sets, f"data.dataset={json.dumps(dataset)}"]
    cfg = load_space(space, sets, names, results_dir)
    if dataset is None or isinstance(dataset, str):
        return cfg
    raw = {**cfg.raw, "data": {**(cfg.raw.get("data") or {}), "dataset": GIVEN_DATASET}}
    return dataclasses.replace(cfg, data=given_dataset(cfg.data, dataset), raw=raw)


def _as_sets(overrides: Overrides | None) -> list[str]:
    """Overrides as `key.path=value` strings (a mapping's values written as JSON, which YAML reads back as given)."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        raise UserError(f"overrides: expected a mapping or a list of 'key.path=value' strings, got {overrides!r}")
    if isinstance(overrides, Mapping):
        return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    return list(overrides)
