"""A training run's resumable state on disk: written atomically, read back without running anything in it."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from blocks.atomic import atomic_write
from blocks.holds import Check, like, problem, tensor
from blocks.io import UnreadableFile, safe_load

# What fit saves after every epoch (training_shape says what each holds): tensors, numbers, strings, lists and
# dicts only (torch.load's weights_only accepts nothing else), "ema" too when the run averages its weights.
SET_ASIDE = ".unreadable"  # suffix given to a checkpoint that could not be read, kept for a look
ASIDE_NAMES = 100  # .unreadable, .unreadable.1 ...: names tried when a folder (never replaced) holds one


class CheckpointWriteError(OSError):
    """The checkpoint could not be written (a full or read-only disk): not the trial's fault."""


class UnreadableCheckpoint(ValueError):
    """A checkpoint that cannot be resumed from (empty, truncated, another model's, or holding code): one line."""


def save(path: Path, state: dict[str, Any]) -> None:
    """Write `state` atomically: a kill mid-write leaves the previous checkpoint, a full disk no partial file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: torch.save(state, f))
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError of its zip writer
        raise CheckpointWriteError(f"cannot write checkpoint {path}: {getattr(e, 'strerror', None) or e}") from None


def save_training(path: Path, model: nn.Module, opt: torch.optim.Optimizer, schedule: LRScheduler,
                  ema: nn.Module | None, history: list[dict[str, Any]]) -> None:
    """Save a run's resumable state after an epoch: its weights, optimiser, schedule, EMA, epochs and torch's RNG."""
    save(path, {"model": model.state_dict(), "optimizer": opt.state_dict(), "schedule": schedule.state_dict(),
                "history": history, "rng": torch.get_rng_state(),
                **({"ema": ema.state_dict()} if ema is not None else {})})


def restore_training(state: dict[str, Any], model: nn.Module, opt: torch.optim.Optimizer, schedule: LRScheduler,
                     ema: nn.Module | None) -> None:
    """Load a state `read` returned into the run's objects and torch's RNG, as they were when it was saved."""
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    if ema is not None:
        ema.load_state_dict(state["ema"])
    torch.set_rng_state(state["rng"].cpu())


def read(path: Path, shape: Any, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The state saved at `path`, checked to hold `shape` (training_shape's); UnreadableCheckpoint else."""
    try:
        state = safe_load(path, map_location)
    except (UnreadableFile, OSError) as e:
        raise UnreadableCheckpoint(f"cannot read checkpoint {path}: {getattr(e, 'strerror', None) or e}") from None
    why = problem(state, shape)
    if why is not None:
        raise UnreadableCheckpoint(f"cannot resume from checkpoint {path}: {why}")
    return state


def training_shape(model: nn.Module, opt: torch.optim.Optimizer, schedules: list[Any], ema: bool, epoch: Any,
                   epochs: int) -> dict[str, Any]:
    """What a checkpoint must hold to resume `model` with `opt` and one of `schedules` (fresh ones of the run's
    spec): their states in the same layout, torch's RNG state, and at most `epochs` epochs each holding `epoch`."""
    weights = {k: v.shape for k, v in model.state_dict().items()}
    shape = {"model": _weights(weights, "the weights of this architecture"),
             "optimizer": _optimizer(opt), "schedule": _schedule([s.state_dict() for s in schedules]),
             "history": Check([epoch], lambda h: [e["epoch"] for e in h] == list(range(1, len(h) + 1))
                              and len(h) <= epochs, f"at most {epochs} epochs numbered from 1"),
             "rng": tensor(torch.get_rng_state().shape, torch.uint8)}  # a wrong size fails set_rng_state
    if ema:  # AveragedModel's state: the model's under "module.", and its update count
        averaged = {**{f"module.{k}": v for k, v in weights.items()}, "n_averaged": torch.Size([])}
        shape["ema"] = _weights(averaged, "the averaged weights of this architecture")
    return shape


def _weights(shapes: dict[str, torch.Size], what: str) -> Check:
    """A state_dict of exactly these tensors (load_state_dict is strict)."""
    return Check(dict, lambda w: all(isinstance(v, torch.Tensor) for v in w.values())
                 and {k: v.shape for k, v in w.items()} == shapes, what)


def _optimizer(opt: torch.optim.Optimizer) -> dict[str, Any]:
    """An optimiser state over the same parameters, in the same groups, as `opt`'s (its per-parameter tensors
    of the parameter's shape, or scalars such as Adam's step): load_state_dict checks only the group sizes."""
    fresh = opt.state_dict()
    sizes = {i: p.shape for i, p in enumerate(p for g in opt.param_groups for p in g["params"])}
    groups = [g["params"] for g in fresh["param_groups"]]
    per_param = Check(dict, lambda s: all(
        k in sizes and isinstance(v, dict) and all(not isinstance(t, torch.Tensor) or t.shape in (sizes[k], ())
                                                   for t in v.values()) for k, v in s.items()),
        "a state of this model's parameters")
    group = like(fresh["param_groups"][0], need=("params", "lr"))
    return {"state": per_param, "param_groups": Check([group], lambda gs: [g["params"] for g in gs] == groups,
                                                      f"{len(groups)} groups over this model's {len(sizes)} parameters")}


def _schedule(fresh: list[dict[str, Any]]) -> Check:
    """A schedule state like one of `fresh` (its private keys may differ between PyTorch versions)."""
    def like_one(s: dict[str, Any]) -> bool:
        return any(problem(s, like(f, need=tuple(k for k in f if not k.startswith("_")))) is None
                   and len(s.get("base_lrs", ())) == len(f.get("base_lrs", ())) for f in fresh)

    return Check(dict, like_one, "the state of this run's schedule")


def set_aside(path: Path) -> Path:
    """Rename an unreadable checkpoint to `<name>.unreadable` (replacing an older one), so nothing resumes from it.

    A folder at that name cannot be replaced by a rename (EISDIR), and is kept: `.unreadable.1` ... is used then.
    """
    for n in range(ASIDE_NAMES):
        aside = path.with_name(path.name + SET_ASIDE + (f".{n}" if n else ""))
        try:
            path.replace(aside)
            return aside
        except IsADirectoryError:
            continue
    raise IsADirectoryError(errno.EISDIR, f"{ASIDE_NAMES} folders hold the names to set it aside", str(path))
