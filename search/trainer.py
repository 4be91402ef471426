"""Train and evaluate one model for a fixed number of epochs (no Optuna in here)."""

from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoint as ckpt_io
from .checkpoint import UnreadableCheckpoint
from .config import TrainSpec
from .ema import make_ema
from .errors import StopRequested

BatchHook = Callable[[int, int, int, int], None]  # (epoch, batch i, batches N, images in the batch)
# CPU flags of native bf16 arithmetic (Linux /proc/cpuinfo names): AVX512-BF16 (Zen 4, Cooper Lake)
# and AMX-BF16 (Sapphire Rapids). Without them oneDNN emulates bf16 and autocast is slower than fp32.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


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


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """auto = CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        from .errors import UserError

        raise UserError(f"--device {name}: no CUDA device is available here (use --device cpu or auto)")
    return torch.device(name)


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo does not exist)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def native_bf16(device: torch.device, flags: set[str] | None = None) -> bool:
    """Whether `device` runs bf16 matmuls and convolutions natively (CUDA: Ampere or newer)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return bool(set(BF16_CPU_FLAGS) & (cpu_flags() if flags is None else flags))
    return False


def use_amp(amp: bool | str, device: torch.device) -> bool:
    """Resolve train.amp (auto | true | false) for `device`: auto = native bf16 only."""
    return native_bf16(device) if amp == "auto" else bool(amp)


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move a model to `device` in channels_last (NHWC) memory format, the fast layout for oneDNN and cuDNN."""
    return model.to(device=device, memory_format=torch.channels_last)


def make_optimizer(model: nn.Module, spec: TrainSpec) -> torch.optim.Optimizer:
    """SGD (Nesterov) / Adam / AdamW with no weight decay on BN and bias parameters."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if spec.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov)
    cls = torch.optim.Adam if spec.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=spec.lr)


def make_schedule(opt: torch.optim.Optimizer, spec: TrainSpec, steps_per_epoch: int) -> Any:
    """A per-step LR schedule over the whole run."""
    total = max(1, spec.epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler
    if spec.schedule == "onecycle":  # momentum stays train.momentum (Adam's beta1 its default): no cycling
        return sched.OneCycleLR(opt, max_lr=spec.lr, total_steps=total, cycle_momentum=False)
    if spec.schedule == "cyclic":
        return sched.LambdaLR(opt, lambda s: cyclic_factor(s, total, spec.cycles))
    warm = min(total - 1, int(spec.warmup_epochs * steps_per_epoch))
    if spec.schedule == "cosine":
        main = sched.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, total - warm)))))
    elif spec.schedule == "step":  # x0.1 at 50% and 75% of the run
        main = sched.MultiStepLR(opt, milestones=[(total - warm) // 2, 3 * (total - warm) // 4], gamma=0.1)
    else:
        main = sched.LambdaLR(opt, lambda s: 1.0)
    if warm <= 0:
        return main
    return sched.SequentialLR(opt, [sched.LinearLR(opt, 0.01, 1.0, total_iters=warm), main], milestones=[warm])


def cyclic_factor(step: int, total: int, cycles: int) -> float:
    """Triangular cycles between lr/10 and lr (Smith 2017), the last one annealing to 0 at the end of the run."""
    # CyclicLR ends a run at lr/10 or mid-upswing; a run scored or kept at its end should end annealed
    # (Smith 2018, the last phase of one-cycle: anneal well below the base rate).
    cycles = max(1, cycles)
    phase = min(step / total, 1.0) * cycles
    k = min(int(phase), cycles - 1)  # which cycle, 0-based
    u = phase - k  # position in it, 0..1
    if u < 0.5:
        return 0.1 + 0.9 * 2 * u
    floor = 0.0 if k == cycles - 1 else 0.1
    return floor + (1 - floor) * 2 * (1 - u)


def log_probs(model: nn.Module, x: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """Log-softmax of the model's output; with `tta`, of the mean softmax over x and its horizontal mirror."""
    out = model(x).float().log_softmax(1)
    if not tta:
        return out
    # Flip TTA: the standard CIFAR/ImageNet test-time augmentation (e.g. airbench, Keller Jordan 2024).
    mirrored = model(x.flip(3)).float().log_softmax(1)
    return torch.logaddexp(out, mirrored) - math.log(2.0)


def evaluate(model: nn.Module, loader: Iterable, device: torch.device, amp: bool | str = "auto",
             size: int | None = None, tta: bool = False) -> tuple[float, float]:
    """Mean cross-entropy loss and top-1 accuracy over `loader` (images resized to `size` px if given)."""
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    with torch.no_grad(), autocast(device, amp):
        for x, y in loader:
            x, y = _to(x, y, device)
            x = _resize(x, size)
            logp = log_probs(model, x, tta)
            loss_sum += F.nll_loss(logp, y, reduction="sum").item()
            correct += (logp.argmax(1) == y).sum().item()
            n += y.numel()
    return loss_sum / max(1, n), correct / max(1, n)


def predict(model: nn.Module, loader: Iterable, device: torch.device, amp: bool | str = "auto",
            tta: bool = False, on_batch: BatchHook | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities (N, classes) and labels (N,) over `loader`, on the CPU (flip-averaged with `tta`).

    `on_batch(0, i, N, images)` is called after every batch (e.g. a search.progress.Progress).
    """
    model.eval()
    probs, labels = [], []
    with torch.no_grad(), autocast(device, amp):
        for i, (x, y) in enumerate(loader, 1):
            x, y = _to(x, y, device)
            probs.append(log_probs(model, x, tta).exp().cpu())
            labels.append(y.cpu())
            if on_batch is not None:
                on_batch(0, i, len(loader), y.numel())
    return torch.cat(probs), torch.cat(labels)


def fit(model: nn.Module, train_loader: Any, val_loader: Any, spec: TrainSpec, device: torch.device, *,
        on_epoch: Callable[[EpochResult], None] | None = None, checkpoint: Path | None = None,
        native_size: int | None = None, seed: int | None = None,
        stop: Callable[[], bool] | None = None, on_batch: BatchHook | None = None) -> list[EpochResult]:
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
    """
    prepare_model(model, device)
    if device.type == "cuda":  # the one CUDA-only setting: let cuDNN time its kernels for these shapes
        torch.backends.cudnn.benchmark = True
    step_model = compiled(model, spec.compile)
    opt = make_optimizer(model, spec)
    steps = len(train_loader)
    schedule = make_schedule(opt, spec, steps)
    ema = make_ema(model, spec.ema) if spec.ema is not None else None
    history: list[EpochResult] = []
    start = 0
    if checkpoint is not None and checkpoint.exists():
        state, history = load_checkpoint(checkpoint, model, spec, device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["rng"].cpu())
        start = len(history)
        for result in history:  # replay to the caller (pruner reports) what was already done
            if on_epoch is not None:
                on_epoch(result)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=spec.label_smoothing)
    for epoch in range(start, spec.epochs):
        t0 = time.perf_counter()
        if seed is not None:
            torch.manual_seed(seed * 1000 + epoch)
            reseed_loader(train_loader, seed * 1000 + epoch)
        model.train()
        size = spec.size_at(epoch, native_size) if native_size else None
        loss_sum = torch.zeros((), device=device)  # summed on the device: no sync per step
        correct = torch.zeros((), device=device, dtype=torch.long)
        n = 0
        for i, (x, y) in enumerate(train_loader, 1):
            if stop is not None and stop():
                raise StopRequested("stop requested")
            x, y = _to(x, y, device)
            x = _resize(x, size)
            with autocast(device, spec.amp):
                logits = step_model(x)
                loss = loss_fn(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            if ema is not None:
                ema.update_parameters(model)
            loss_sum += loss.detach() * y.numel()
            correct += (logits.argmax(1) == y).sum()
            n += y.numel()
            if on_batch is not None:
                on_batch(epoch + 1, i, steps, y.numel())
        loss_sum, correct = loss_sum.item(), correct.item()  # waits for the device: the loop's time is complete
        speed = n / max(1e-9, time.perf_counter() - t0)
        if not math.isfinite(loss_sum):
            raise FloatingPointError(f"training loss became {loss_sum} at epoch {epoch + 1}")
        # Validation at the epoch's training size (cheap at 16/32 px); only native-size epochs reach
        # the pruner (objective.report_epoch), and the last stage is always native size.
        scored = model if ema is None else ema.module
        val_loss, val_acc = (evaluate(scored, val_loader, device, spec.amp, size, spec.tta) if val_loader is not None
                             else (math.nan, math.nan))
        result = EpochResult(epoch + 1, loss_sum / max(1, n), correct / max(1, n), val_loss, val_acc,
                             opt.param_groups[0]["lr"], size or int(x.shape[-1]), time.perf_counter() - t0, speed)
        history.append(result)
        if checkpoint is not None:
            _save(checkpoint, model, opt, schedule, history, ema)
        if on_epoch is not None:
            on_epoch(result)
    if ema is not None:
        model.load_state_dict(ema.module.state_dict())  # the model handed back is the one validated
    return history


def reseed_loader(loader: Any, seed: int) -> None:
    """Reseed a DataLoader's generators: its own (worker base seeds) and its batch sampler's (order, augmentation)."""
    for owner in (loader, getattr(loader, "batch_sampler", None)):
        if isinstance(getattr(owner, "generator", None), torch.Generator):
            owner.generator.manual_seed(seed)


def _save(path: Path, model: nn.Module, opt: Any, schedule: Any, history: list[EpochResult],
          ema: nn.Module | None = None) -> None:
    """Write the resumable state atomically, in types torch.load(weights_only=True) reads back."""
    ckpt_io.save(path, {"model": model.state_dict(), "optimizer": opt.state_dict(), "schedule": schedule.state_dict(),
                        "history": [dataclasses.asdict(h) for h in history], "rng": torch.get_rng_state(),
                        **({"ema": ema.state_dict()} if ema is not None else {})})


def load_checkpoint(path: Path, model: nn.Module, spec: TrainSpec,
                    device: torch.device | str = "cpu") -> tuple[dict[str, Any], list[EpochResult]]:
    """The state fit saved at `path` and its epochs, checked to resume `model` under `spec`; UnreadableCheckpoint else."""
    state = ckpt_io.read(path, model, spec.ema is not None, device)
    try:
        return state, [EpochResult(**h) for h in state["history"]]
    except TypeError:  # fields missing or unknown
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


def _to(x: torch.Tensor, y: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Move a batch to `device` in channels_last (non-blocking: a copy from pinned memory overlaps compute)."""
    return x.to(device, non_blocking=True, memory_format=torch.channels_last), y.to(device, non_blocking=True)


def autocast(device: torch.device, amp: bool | str) -> Any:
    """bf16 autocast on any device when train.amp resolves to true there; fp32 otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp(amp, device))


def compiled(model: nn.Module, on: bool) -> Any:
    """torch.compile(model) when `on` (the parameters stay shared, so checkpoints hold the plain model)."""
    return torch.compile(model) if on else model
