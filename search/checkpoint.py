"""A training run's resumable state on disk: written atomically, read back without running anything in it."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import torch
from torch import nn

from blocks.atomic import atomic_write
from blocks.io import UnreadableFile, safe_load

# What fit saves after every epoch: tensors, numbers, strings, lists and dicts only (torch.load's
# weights_only accepts nothing else), "ema" too when the run averages its weights.
KEYS = ("model", "optimizer", "schedule", "history", "rng")
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


def save_training(path: Path, model: nn.Module, opt: Any, schedule: Any, ema: nn.Module | None,
                  history: list[dict[str, Any]]) -> None:
    """Save a run's resumable state after an epoch: its weights, optimiser, schedule, EMA, epochs and torch's RNG."""
    save(path, {"model": model.state_dict(), "optimizer": opt.state_dict(), "schedule": schedule.state_dict(),
                "history": history, "rng": torch.get_rng_state(),
                **({"ema": ema.state_dict()} if ema is not None else {})})


def restore_training(state: dict[str, Any], model: nn.Module, opt: Any, schedule: Any, ema: nn.Module | None) -> None:
    """Load a state `read` returned into the run's objects and torch's RNG, as they were when it was saved."""
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    if ema is not None:
        ema.load_state_dict(state["ema"])
    torch.set_rng_state(state["rng"].cpu())


def read(path: Path, model: nn.Module, ema: bool, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The state saved at `path`, checked to be a whole one for `model` (and its EMA); UnreadableCheckpoint else."""
    try:
        state = safe_load(path, map_location)
    except (UnreadableFile, OSError) as e:
        raise UnreadableCheckpoint(f"cannot read checkpoint {path}: {getattr(e, 'strerror', None) or e}") from None
    why = _problem(state, model, ema)
    if why is not None:
        raise UnreadableCheckpoint(f"cannot resume from checkpoint {path}: {why}")
    return state


def _problem(state: Any, model: nn.Module, ema: bool) -> str | None:
    """What makes `state` unusable to resume `model`, or None."""
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a training state"
    missing = [k for k in KEYS + (("ema",) if ema else ()) if k not in state]
    if missing:
        return f"it has no {', '.join(missing)}"
    if not all(isinstance(state[k], dict) for k in ("model", "optimizer", "schedule") + (("ema",) if ema else ())):
        return "its model, optimiser, schedule or EMA entry is not a saved state"
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    if _shapes(state["model"]) != shapes:
        return "it holds the weights of another architecture"
    # AveragedModel's state: the model's under "module.", and its update count
    if ema and _shapes(state["ema"]) != {**{f"module.{k}": v for k, v in shapes.items()}, "n_averaged": torch.Size([])}:
        return "its EMA holds the weights of another architecture"
    if not isinstance(state["history"], list) or not all(isinstance(h, dict) for h in state["history"]):
        return "its history is not a list of epochs"
    rng = state["rng"]
    if not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8:
        return "its random-number state is not a byte tensor"
    return None


def _shapes(weights: dict[str, Any]) -> dict[str, Any] | None:
    """Each tensor's shape by name, or None when an entry is not a tensor."""
    if not all(isinstance(v, torch.Tensor) for v in weights.values()):
        return None
    return {k: v.shape for k, v in weights.items()}


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
