"""Train and evaluate one model for a fixed number of epochs (no Optuna in here)."""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from blocks.holds import Maybe, Number

from . import checkpoint as ckpt_io
from .checkpoint import UnreadableCheckpoint
from .config import TrainSpec
from .device import autocast, compiled, prepare_model, to_device
from .ema import EMA, make_ema
from .errors import StopRequested
from .malloc import keep_freed_memory
from .optim import make_optimizer, make_schedule

BatchHook = Callable[[int, int, int, int], None]  # (epoch, batch i, batches N, images in the batch)


@dataclass
class EpochResult:
    """What one epoch measured."""

    epoch: int  # 1-based
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float  # learning rate at the end of the epoch
    image_size: int  # training image side, px
    time_s: float  # wall time of train + eval
    images_per_s: float = 0.0  # training images per second of the epoch's training loop (eval excluded)
    threads: int = 0  # torch's CPU threads during the epoch (0: recorded before threads were)


@dataclass
class TrainState:
    """What one training run updates at every step, set up by `setup_training`."""

    model: nn.Module
    step_model: Any  # the model, or torch.compile's wrapper of it (the parameters are shared)
    opt: torch.optim.Optimizer
    schedule: LRScheduler  # stepped once per optimiser step
    ema: EMA | None  # the weight average validated instead of the model, with spec.ema
    loss_fn: nn.Module
    spec: TrainSpec
    device: torch.device


class Batches(Protocol):
    """What training and evaluation read: (images, labels) batches and how many (a DataLoader, DeviceBatches)."""

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def __len__(self) -> int: ...


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def log_probs(model: nn.Module, x: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """Log-softmax of the model's output; with `tta`, of the mean softmax over x and its horizontal mirror."""
    out = model(x).float().log_softmax(1)
    if not tta:
        return out
    # Flip TTA: the standard CIFAR/ImageNet test-time augmentation (e.g. airbench, Keller Jordan 2024).
    mirrored = model(x.flip(3)).float().log_softmax(1)
    return torch.logaddexp(out, mirrored) - math.log(2.0)


def evaluate(model: nn.Module, loader: Batches, device: torch.device, amp: bool | str = "auto",
             size: int | None = None, tta: bool = False) -> tuple[float, float]:
    """Mean cross-entropy loss and top-1 accuracy over `loader` (images resized to `size` px if given)."""
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    with torch.no_grad(), autocast(device, amp):
        for x, y in loader:
            x, y = to_device(x, y, device)
            x = _resize(x, size)
            logp = log_probs(model, x, tta)
            loss_sum += F.nll_loss(logp, y, reduction="sum").item()
            correct += int((logp.argmax(1) == y).sum())
            n += y.numel()
    return loss_sum / max(1, n), correct / max(1, n)


def predict(model: nn.Module, loader: Batches, device: torch.device, amp: bool | str = "auto",
            tta: bool = False, on_batch: BatchHook | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities (N, classes) and labels (N,) over `loader`, on the CPU (flip-averaged with `tta`).

    `on_batch(0, i, N, images)` is called after every batch (e.g. a search.progress.Progress).
    """
    model.eval()
    probs, labels = [], []
    with torch.no_grad(), autocast(device, amp):
        for i, (x, y) in enumerate(loader, 1):
            x, y = to_device(x, y, device)
            probs.append(log_probs(model, x, tta).exp().cpu())
            labels.append(y.cpu())
            if on_batch is not None:
                on_batch(0, i, len(loader), y.numel())
    return torch.cat(probs), torch.cat(labels)


def fit(model: nn.Module, train_loader: Batches, val_loader: Batches | None, spec: TrainSpec, device: torch.device, *,
        on_epoch: Callable[[EpochResult], None] | None = None, checkpoint: Path | None = None,
        native_size: int | None = None, seed: int | None = None,
        stop: Callable[[], bool] | None = None, on_batch: BatchHook | None = None,
        threads: Callable[[int], int] | None = None) -> list[EpochResult]:
    """Train for spec.epochs, evaluating every epoch; `on_epoch` may raise to stop (e.g. pruning).

    With spec.ema, validation scores the EMA weights, and the model ends holding them.

    `stop` is asked between batches; once it says yes, fit raises StopRequested (the checkpoint of
    the last finished epoch is kept, so the run resumes from there).

    `on_batch(epoch, i, N, images)` is called after every training step (1-based epoch and batch i of N),
    e.g. a search.progress.Progress that shows speed and time estimates.
    With `checkpoint`, the state is saved after every epoch and a rerun resumes from it (one that cannot
    be read or does not fit raises UnreadableCheckpoint before anything is loaded: resumable_epochs
    checks it first, setting it aside). With
    `seed`, every epoch reseeds torch and the loader's shuffling and augmentation from (seed, epoch),
    so a resumed run sees the same batches as an uninterrupted one.

    `threads(epoch)` is asked before every epoch (0-based) for torch's CPU threads, e.g. a
    search.threads.EpochThreads that picks them from the free cores; without it they stay as they are.
    """
    state = setup_training(model, spec, device, len(train_loader))
    history = resume(state, checkpoint) if checkpoint is not None and checkpoint.exists() else []
    for result in history:  # replay to the caller (pruner reports) what was already done
        if on_epoch is not None:
            on_epoch(result)
    for epoch in range(len(history), spec.epochs):
        if threads is not None:
            torch.set_num_threads(threads(epoch))
        if seed is not None:
            torch.manual_seed(seed * 1000 + epoch)
            reseed_loader(train_loader, seed * 1000 + epoch)
        history.append(run_epoch(state, train_loader, val_loader, epoch, native_size, stop, on_batch))
        if checkpoint is not None:  # the run's state after each epoch (search.checkpoint: atomic, no pickle)
            ckpt_io.save_training(checkpoint, model, state.opt, state.schedule, state.ema,
                                  [dataclasses.asdict(h) for h in history])
        if on_epoch is not None:
            on_epoch(history[-1])
    if state.ema is not None:
        model.load_state_dict(state.ema.module.state_dict())  # the model handed back is the one validated
    return history


def setup_training(model: nn.Module, spec: TrainSpec, device: torch.device, steps_per_epoch: int) -> TrainState:
    """`model` on `device` in channels_last (compiled with spec.compile), with its optimiser, schedule, EMA and loss."""
    prepare_model(model, device)
    if device.type == "cpu":  # each step's freed tensors reused, not faulted in again (search/malloc.py)
        keep_freed_memory()
    if device.type == "cuda":  # the one CUDA-only setting: let cuDNN time its kernels for these shapes
        torch.backends.cudnn.benchmark = True
    step_model = compiled(model, spec.compile)
    opt = make_optimizer(model, spec)
    schedule = make_schedule(opt, spec, steps_per_epoch)
    ema = make_ema(model, spec.ema) if spec.ema is not None else None
    return TrainState(model, step_model, opt, schedule, ema,
                      nn.CrossEntropyLoss(label_smoothing=spec.label_smoothing), spec, device)


def train_step(state: TrainState, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on a batch on the device (forward under autocast): its logits and loss."""
    with autocast(state.device, state.spec.amp):
        logits = state.step_model(x)
        loss = state.loss_fn(logits.float(), y)
    state.opt.zero_grad(set_to_none=True)
    loss.backward()
    state.opt.step()
    state.schedule.step()
    if state.ema is not None:
        state.ema.update_parameters(state.model)
    return logits, loss


def run_epoch(state: TrainState, train_loader: Batches, val_loader: Batches | None, epoch: int, native_size: int | None,
              stop: Callable[[], bool] | None, on_batch: BatchHook | None) -> EpochResult:
    """Train 0-based `epoch` at its image size, then validate (the EMA weights with spec.ema)."""
    t0 = time.perf_counter()
    spec, device = state.spec, state.device
    size = spec.size_at(epoch, native_size) if native_size else None
    loss_sum, correct, n, side = train_epoch(state, train_loader, epoch, size, stop, on_batch)
    speed = n / max(1e-9, time.perf_counter() - t0)
    if not math.isfinite(loss_sum):
        raise FloatingPointError(f"training loss became {loss_sum} at epoch {epoch + 1}")
    # Validation at the epoch's training size (cheap at 16/32 px); only native-size epochs reach
    # the pruner (objective.report_epoch), and the last stage is always native size.
    scored = state.model if state.ema is None else state.ema.module
    val_loss, val_acc = (evaluate(scored, val_loader, device, spec.amp, size, spec.tta) if val_loader is not None
                         else (math.nan, math.nan))
    return EpochResult(epoch + 1, loss_sum / max(1, n), correct / max(1, n), val_loss, val_acc,
                       state.opt.param_groups[0]["lr"], size or side, time.perf_counter() - t0, speed,
                       torch.get_num_threads())


def train_epoch(state: TrainState, loader: Batches, epoch: int, size: int | None, stop: Callable[[], bool] | None,
                on_batch: BatchHook | None) -> tuple[float, int, int, int]:
    """One pass of train_step over `loader` (images resized to `size`): summed loss, correct, images, last side px."""
    state.model.train()
    loss_sum = torch.zeros((), device=state.device)  # summed on the device: no sync per step
    correct = torch.zeros((), device=state.device, dtype=torch.long)
    n, steps, side = 0, len(loader), 0
    for i, (x, y) in enumerate(loader, 1):
        if stop is not None and stop():
            raise StopRequested("stop requested")
        x, y = to_device(x, y, state.device)
        x = _resize(x, size)
        logits, loss = train_step(state, x, y)
        loss_sum += loss.detach() * y.numel()
        correct += (logits.argmax(1) == y).sum()
        n, side = n + y.numel(), int(x.shape[-1])
        if on_batch is not None:
            on_batch(epoch + 1, i, steps, y.numel())
    return float(loss_sum), int(correct), n, side  # these wait for the device: the loop's time is complete


def reseed_loader(loader: Batches, seed: int) -> None:
    """Reseed a DataLoader's generators: its own (worker base seeds) and its batch sampler's (order, augmentation)."""
    for owner in (loader, getattr(loader, "batch_sampler", None)):
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator):
            generator.manual_seed(seed)


def resume(state: TrainState, path: Path) -> list[EpochResult]:
    """Load the checkpoint at `path` into the run and torch's RNG; the epochs it already trained."""
    saved, history = load_checkpoint(path, state.model, state.spec, state.device)
    ckpt_io.restore_training(saved, state.model, state.opt, state.schedule, state.ema)
    return history


# What each epoch of a checkpoint's history holds: EpochResult's numbers (images_per_s came later).
EPOCH = {f.name: Maybe(Number) if f.default is not dataclasses.MISSING else Number
         for f in dataclasses.fields(EpochResult)}


def load_checkpoint(path: Path, model: nn.Module, spec: TrainSpec,
                    device: torch.device | str = "cpu") -> tuple[dict[str, Any], list[EpochResult]]:
    """The state fit saved at `path` and its epochs, checked to resume `model` under `spec`; UnreadableCheckpoint else."""
    opt = make_optimizer(model, spec)  # fresh ones, whose states show what a saved one must hold; the schedule
    # has a warmup phase only when an epoch has enough batches for one: the two it can be
    schedules = [make_schedule(opt, spec, steps) for steps in (1, 1_000_000)]
    shape = ckpt_io.training_shape(model, opt, schedules, spec.ema is not None, EPOCH, spec.epochs)
    state = ckpt_io.read(path, shape, device)
    try:
        return state, [EpochResult(**h) for h in state["history"]]
    except TypeError:  # fields unknown
        raise UnreadableCheckpoint(f"cannot resume from checkpoint {path}: its history is not fit's") from None


def resumable_epochs(path: Path, model: nn.Module, spec: TrainSpec, note: Callable[[str], None]) -> int:
    """Epochs the checkpoint at `path` resumes (0 without one); an unreadable one is set aside after one `note` line."""
    if not path.exists():
        return 0
    try:
        return len(load_checkpoint(path, model, spec)[1])
    except UnreadableCheckpoint as e:
        note(f"{e}; kept as {ckpt_io.set_aside(path).name}")
        return 0


def _resize(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """Bilinear (antialiased) resize of a batch to size x size, when it differs."""
    if size is None or x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
