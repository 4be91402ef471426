"""Retrain chosen trials of a study to full epochs, then test them once (`resnet-search retrain`: search/commands.py)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checks import check_for_training
from ..config import MAX_EPOCHS, SearchConfig, TrainSpec
from ..contained import inside
from ..dashboard import attach_retrain
from ..data.custom import DatasetSplits, given_dataset
from ..describe import plural
from ..device import resolve_device
from ..errors import UserError
from ..study.stop import Stop
from . import recipe
from .folder_lock import clear_folder, lock_folder
from .plan import Plan
from .results import StudyResults, open_results
from .retrain_outputs import SeedRun, brief, need_onnx, summary_lines, write_ensemble, write_trial_summary
from .retrain_seed import SeedJob, train_and_test


def full_length(train: TrainSpec, epochs: int) -> TrainSpec:
    """The trial's training settings for `epochs`; progressive-resizing steps keep their share of the run."""
    progressive = train.progressive
    if progressive:
        scale = epochs / train.epochs
        progressive = tuple((int(round(start * scale)), size) for start, size in progressive)
    return dataclasses.replace(train, epochs=epochs, progressive=progressive)


def make_plans(res: StudyResults, numbers: list[int], epochs: int) -> list[Plan]:
    """Rebuild and verify every chosen trial before anything trains; the retrain recipe is laid over its settings."""
    from ..rules import train_violation

    plans = []
    for n in numbers:
        spec, record = res.verified_spec(n)
        try:
            train = full_length(TrainSpec.from_dict(res.trial(n).user_attrs["train"]), epochs)
            train = recipe.final_train(train, res.cfg.retrain)
        except (KeyError, ValueError, TypeError) as e:
            raise UserError(f"trial {n}: cannot read its training settings: {e}") from None
        if (why := train_violation(spec, train, res.cfg)) is not None:
            raise UserError(f"--epochs {epochs}: {why} (in {res.cfg.path})")
        seed = res.trial(n).user_attrs.get("seed", res.cfg.search.seed + n)
        plans.append(Plan(n, spec, train, int(seed), record))
    res.check_data([p.spec for p in plans])  # before anything trains or is written
    return plans


@dataclass(frozen=True)
class Retrained:
    """What a retrain wrote: the summary (test metrics per trial, the ensemble's), its folder and the models."""

    summary: dict[str, Any]  # as retrain/summary.json per trial: {"trials": {n: metrics}, "ensemble": ...}
    folder: Path  # results/<study>/retrain
    models: dict[int, list[Path]]  # trial number -> model.pt of each seed run


def retrain(results: str | Path, *, trials: Sequence[int] | None = None, top: int | None = None,
            epochs: int | None = None, seeds: int | None = None, train_on_val: bool | None = None,
            overrides: Sequence[str] = (), device: str = "auto", storage: str | None = None,
            study_name: str | None = None, data_root: str | None = None, onnx: bool = False,
            predict: bool = False, fresh: bool = False, dataset: DatasetSplits | None = None,
            log: Callable[[str], None] = print) -> Retrained:
    """Retrain the chosen trials of a study to full length (`trials`, or the `top` K; default the best), test
    and ensemble them; unset values come from the YAML's retrain section. `dataset`: the object a search given
    one in Python trained on. Each keyword is the retrain command's option of the same name."""
    if trials is not None and top is not None:
        raise UserError("--trial and --top choose the trials two ways: give one of them")
    overrides = list(overrides)
    recipe.check_overrides(overrides)
    if epochs is not None and not 1 <= epochs <= MAX_EPOCHS:
        raise UserError(f"--epochs {epochs:,}: expected 1 to {MAX_EPOCHS:,}")
    res = open_results(Path(results), storage, data_root, overrides, study_name)
    data = given_dataset(res.cfg.data, dataset) if dataset is not None else res.cfg.data
    res.cfg = cfg = dataclasses.replace(res.cfg, data=recipe.final_data(data, overrides, log))
    check_for_training(cfg, images="none")  # before anything is planned or written; loaders come with each run
    epochs = epochs if epochs is not None else cfg.retrain.epochs
    seeds = seeds if seeds is not None else cfg.retrain.seeds
    on_val = cfg.retrain.train_on_val if train_on_val is None else train_on_val
    if epochs < 1 or seeds < 1:
        raise UserError(f"--epochs and --seeds must be at least 1, got {epochs} and {seeds}")
    numbers = res.choose(list(trials) if trials is not None else None, top)
    plans = make_plans(res, numbers, epochs)
    unlabeled = _unlabeled_paths(cfg) if predict else None
    if onnx:
        need_onnx()
    where = resolve_device(device)
    out = res.folder / "retrain"
    log(f"retraining trial{'s' if len(plans) > 1 else ''} {', '.join(map(str, numbers))} of study "
        f"{res.name!r}: {plural(epochs, 'epoch')}, {plural(seeds, 'seed')}, "
        f"{'train + val' if on_val else 'train'} images, on {where} -> {out}")
    runs: dict[int, list[SeedRun]] = {}
    with contextlib.ExitStack() as locks, Stop() as stop:  # SIGINT/SIGTERM: stop between batches, resumable
        folders = {plan.number: inside(res.folder, out / f"{plan.number:05d}") for plan in plans}  # before any lock
        for plan in plans:  # every trial's folder before any training: a clash is refused at once, not hours in
            lock_folder(folders[plan.number], locks)
        for i, plan in enumerate(plans):
            folder = folders[plan.number]
            if fresh:
                clear_folder(folder)
            runs[plan.number] = []
            for k in range(seeds):
                stop.check()  # a stop that came while the last seed was tested: the next one does not start
                job = SeedJob(res, plan, k, on_val, where, folder, unlabeled, onnx, log,
                              later_runs=(len(plans) - i) * seeds - k - 1, stop=stop)
                runs[plan.number].append(train_and_test(job))
            write_trial_summary(res, plan, runs[plan.number], on_val, folder)
            attach_retrain(res.study, plan.number, res.folder, folder)  # optuna-dashboard opens them from the trial
    summary: dict[str, Any] = {"trials": {n: brief(r) for n, r in runs.items()}}
    if len(plans) > 1:
        summary["ensemble"] = write_ensemble(res, runs, out, unlabeled)
    log(summary_lines(res, plans, runs, summary.get("ensemble")))
    return Retrained(summary, out, {n: [r.folder / "model.pt" for r in rs] for n, rs in runs.items()})


def _unlabeled_paths(cfg: SearchConfig) -> list[Path]:
    """The unlabeled test images for --predict (Tiny ImageNet's test/images), or a UserError."""
    from ..data.sources import tiny_imagenet_unlabeled_test

    if cfg.data.dataset != "tiny_imagenet":
        raise UserError(f"--predict: dataset {cfg.data.dataset!r} has no unlabeled test split (only "
                        f"tiny_imagenet's test/images); its labelled test set is evaluated anyway")
    return tiny_imagenet_unlabeled_test(cfg.data.root)
