"""One seed run of a retrained trial: train it (or resume, or reuse the saved model), test it once, write its files."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

import blocks
from blocks import build
from blocks.atomic import atomic_write
from blocks.holds import Check, problem
from blocks.io import UnreadableFile, read_json, safe_load

from ..checkpoint import CheckpointWriteError
from ..contained import inside
from ..describe import arch_brief
from ..errors import ResultsWriteError, UserError
from ..files import atomic_write_text
from ..progress import Progress
from ..threads import epoch_threads
from ..trainer import EPOCH, EpochResult, fit, predict, resumable_epochs, seed_everything
from . import evaluate as ev
from . import recipe
from .plan import Plan
from .results import StudyResults
from .retrain_outputs import SeedRun, export_onnx, test_set_name, write_predictions, write_run_files

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from ..data.datasets import Loaders

SEED_STRIDE = 1000  # retrain seed k of a trial trains with the trial's search seed + k * SEED_STRIDE
Log = Callable[[str], None]


@dataclass(frozen=True)
class SeedJob:
    """Seed run k of one retrained trial: what it trains, where it writes, how it reports and when it stops."""

    res: StudyResults
    plan: Plan
    k: int  # the seed run's index within the trial (0, 1, ...)
    on_val: bool  # train on train + val (nothing left to validate on)
    device: torch.device
    folder: Path  # the trial's retrain/<trial>/ folder
    unlabeled: list[Path] | None  # --predict's unlabeled test images (None without --predict)
    onnx: bool  # also export model.onnx
    log: Log
    later_runs: int = 0  # seed runs still to come after this one (every trial's), for the total ETA
    # asked between training batches; once it says yes, training raises StopRequested and the last
    # finished epoch's train_state.pt is kept for a rerun to resume
    stop: Callable[[], bool] | None = None

    @property
    def seed(self) -> int:
        """The seed this run trains with: the trial's search seed + k * SEED_STRIDE."""
        return self.plan.seed + self.k * SEED_STRIDE

    @cached_property
    def run_dir(self) -> Path:
        """retrain/<trial>/seed_<k>, checked to lead nowhere outside the results folder."""
        return inside(self.res.folder, self.folder / f"seed_{self.k}")

    @property
    def tag(self) -> str:
        """The log lines' prefix, `[trial N seed K]`."""
        return f"[trial {self.plan.number} seed {self.k}]"

    @property
    def about(self) -> dict[str, Any]:
        """What every file of the run records first: study, trial, seed, epochs and whether val was trained on."""
        return {"study": self.res.name, "trial": self.plan.number, "seed": self.seed,
                "epochs": self.plan.train.epochs, "train_on_val": self.on_val}


def train_and_test(job: SeedJob) -> SeedRun:
    """Train (or resume, or reuse) the job's seed run, test it and write its files."""
    from ..data.augment import DEFAULT_POLICY, policy_steps
    from ..data.datasets import make_loaders

    cfg, spec, train, run_dir = job.res.cfg, job.plan.spec, job.plan.train, job.run_dir
    steps = cfg.retrain.augment if cfg.retrain.augment is not None else policy_steps(
        cfg.augment, train.augment_policy or DEFAULT_POLICY)
    loaders = make_loaders(cfg.data, steps, train.batch_size, seed=job.seed, device=job.device.type, test=True,
                           train_on_val=job.on_val, where=f"{cfg.path}: augment")
    facts = recipe.trained_on(loaders, cfg.data, job.on_val)
    _claim(run_dir, {**job.about, **facts, "augment": steps, "arch": spec.to_dict(), "train": train.to_dict()})
    job.log(f"{job.tag} {recipe.describe(train, steps, facts)}")
    model, history = _trained_model(job, loaders)
    run = _tested(job, model, loaders)
    run.history = history
    names = loaders.info.class_names or tuple(str(c) for c in range(run.probs.shape[1]))
    write_run_files(run, names, {**job.about, "trained_on": facts, "augment": steps,
                                 "recipe": recipe.describe(train, steps, facts), "train": train.to_dict(),
                                 "weights": "EMA" if train.ema is not None else "last step",
                                 "test_set": test_set_name(cfg, len(run.labels))})
    if job.unlabeled is not None:
        run.unlabeled = _predict_unlabeled(job, model)
        write_predictions(run_dir / "predictions.csv", job.unlabeled, run.unlabeled, names)
    if job.onnx:
        export_onnx(model, spec, run_dir / "model.onnx")
    metrics = run.metrics
    top5 = f" top-5 {metrics['top5']:.4f}" if "top5" in metrics else ""
    tta = f"; flip TTA top-1 {run.tta['top1']:.4f}" if run.tta else ""
    job.log(f"{job.tag} test top-1 (plain) {metrics['top1']:.4f}{top5}{tta} -> {run_dir}")
    return run


def _trained_model(job: SeedJob, loaders: Loaders) -> tuple[torch.nn.Module, list[dict]]:
    """The seed run's model and training history: the saved model.pt when there is one, else trained now."""
    plan, model_path = job.plan, job.run_dir / "model.pt"
    if not model_path.is_file():
        return _train(job, loaders)
    job.log(f"{job.tag} already trained ({model_path}); testing the saved model")
    again = f"delete it (or rerun with --fresh) to train seed {job.k} of trial {plan.number} again"
    try:
        model = blocks.load(model_path, job.device)
    except ValueError as e:
        raise UserError(f"{e}; {again}") from None
    why = problem(model.extra, _saved_shape(job), "extra") or (
        None if model.spec == plan.spec else f"it holds another design ({arch_brief(model.spec.to_dict())})")
    if why:  # a model.pt copied from another run, or saved by blocks.save without what retrain records
        raise UserError(f"'{model_path}' is not seed {job.k} of trial {plan.number}: {why}; {again}")
    (job.run_dir / "train_state.pt").unlink(missing_ok=True)  # left by a stop between saving and cleaning up
    return model, model.extra["history"]


def _saved_shape(job: SeedJob) -> dict[str, Any]:
    """What a seed run's model.pt records in its `extra` (as _train saves it): this trial, this seed, every epoch."""
    number, seed, epochs = job.plan.number, job.seed, job.plan.train.epochs
    return {"trial": Check(int, lambda n: n == number, f"{number}"),
            "seed": Check(int, lambda s: s == seed, f"{seed}"),
            "history": Check([EPOCH], lambda h: len(h) == epochs, f"{epochs} epochs")}


def _train(job: SeedJob, loaders: Loaders) -> tuple[torch.nn.Module, list[dict]]:
    """Train the seed run to its end (resuming train_state.pt), save it as model.pt; the model and its history."""
    spec, train, tag, log = job.plan.spec, job.plan.train, job.tag, job.log
    seed_everything(job.seed)
    model = build(spec)
    state = job.run_dir / "train_state.pt"
    done = resumable_epochs(state, model, train, lambda why: log(f"{tag} {why}; training restarts from epoch 1"))
    if done:
        log(f"{tag} resuming from epoch {done} of {train.epochs} ({state})")

    def on_epoch(r: EpochResult) -> None:
        progress.close()
        if r.epoch <= done:
            return  # fit replays the epochs it resumed past; they were logged when they ran
        val = "" if job.on_val else f" val_acc {r.val_acc:.4f}"
        log(f"{tag} epoch {r.epoch}/{train.epochs} loss {r.train_loss:.4f} train_acc {r.train_acc:.4f}{val} "
            f"({r.image_size}px, {r.time_s:.1f}s)")

    progress = Progress(tag[1:-1], train.epochs, run_name="run", total_name="retrain", later_runs=job.later_runs,
                        log=log)
    try:
        results = fit(model, loaders.train, None if job.on_val else loaders.val, train, job.device,
                      on_epoch=on_epoch, checkpoint=state, native_size=loaders.info.image_size, seed=job.seed,
                      stop=job.stop, on_batch=progress, threads=epoch_threads(job.device, log=log))
    except FloatingPointError as e:  # fit raises before saving the epoch: train_state.pt keeps the last good one
        kept = f"; the last good epoch's state is kept in {state}" if state.is_file() else ""
        raise UserError(f"{tag} {e}{kept}; try a lower retrain.lr (--set retrain.lr=...) with --fresh") from None
    except CheckpointWriteError as e:  # a full or read-only disk: the previous train_state.pt is still whole
        raise ResultsWriteError(f"results folder {job.res.folder}: {e}; rerun the same command to resume") from None
    history = [dataclasses.asdict(h) for h in results]
    info = loaders.info
    blocks.save(job.run_dir / "model.pt", model, spec, extra={
        **job.about, "train": train.to_dict(), "dataset": job.res.cfg.data.dataset,
        "class_names": list(info.class_names), "mean": list(info.mean), "std": list(info.std),
        "image_size": info.image_size, "history": history})
    state.unlink(missing_ok=True)  # the finished model is the result; the optimizer state is not needed
    return model, history


def _tested(job: SeedJob, model: torch.nn.Module, loaders: Loaders) -> SeedRun:
    """The seed run tested once on the test split: plain, and flip-averaged with retrain.tta (no history yet)."""
    if loaders.test is None:
        raise ValueError("the seed run's loaders were made without the test split")
    amp = job.plan.train.amp
    probs, labels = _test(job, model, loaders.test)
    names = loaders.info.class_names
    run = SeedRun(job.run_dir, job.seed, ev.classification_metrics(probs, labels, names), probs, labels)
    if job.res.cfg.retrain.tta:
        run.probs_tta = predict(model, loaders.test, job.device, amp, tta=True)[0]
        run.tta = ev.classification_metrics(run.probs_tta, labels, names)
    return run


def _predict_unlabeled(job: SeedJob, model: torch.nn.Module) -> torch.Tensor:
    """Softmax over the unlabeled test images (--predict)."""
    from ..data.datasets import make_predict_loader

    files, train = job.unlabeled or [], job.plan.train
    loader = make_predict_loader(job.res.cfg.data, files, 2 * train.batch_size, device=job.device.type)
    return predict(model, loader, job.device, train.amp)[0]


def _test(job: SeedJob, model: torch.nn.Module, loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    """Test-set softmax and labels; reused from test_probs.pt when it is newer than model.pt (nothing new to test)."""
    from ..data.datasets import image_count

    tag, log, amp = job.tag, job.log, job.plan.train.amp
    cache, model_path = job.run_dir / "test_probs.pt", job.run_dir / "model.pt"
    if cache.is_file() and model_path.is_file() and cache.stat().st_mtime >= model_path.stat().st_mtime:
        try:
            stored = safe_load(cache)
            probs, labels = stored["probs"], stored["labels"]
            usable = isinstance(probs, torch.Tensor) and isinstance(labels, torch.Tensor)
        except (UnreadableFile, OSError, TypeError, KeyError) as e:
            log(f"{tag} cannot read the stored test results {cache} ({e}); testing the model again")
            usable = False
        if usable and len(labels) == image_count(loader):
            log(f"{tag} reusing the stored test results ({cache})")
            return probs, labels
    probs, labels = predict(model, loader, job.device, amp, on_batch=Progress(tag[1:-1], 0, log=log))
    atomic_write(cache, lambda f: torch.save({"probs": probs, "labels": labels}, f))
    return probs, labels


def _claim(run_dir: Path, settings: dict[str, Any]) -> None:
    """Record what this run folder trains; refuse to resume or reuse one made with other settings."""
    path = run_dir / "run.json"
    if path.is_file():
        try:
            old = read_json(path, {"trial": int, "seed": int})
        except (UnreadableFile, OSError) as e:
            raise UserError(f"{path} is not a retrain record: {getattr(e, 'strerror', None) or e}; rerun with --fresh "
                            f"to start this folder over") from None
        diff = [k for k in settings if old.get(k) != json.loads(json.dumps(settings[k]))]
        if diff:
            was = ", ".join(f"{k}={old.get(k)!r}" for k in diff if k not in ("arch", "train")) or ", ".join(diff)
            raise UserError(f"{run_dir} was retrained with other settings ({was}); rerun with those options to "
                            f"resume or reuse it, or pass --fresh to start over")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(settings, indent=1))
