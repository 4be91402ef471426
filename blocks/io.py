"""Save a built ResNet with its ArchSpec in one file, and load it back with one call."""

from __future__ import annotations

import json
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import atomic_write, open_regular
from .holds import problem
from .resnet import ResNet, build
from .spec import ArchSpec
from .text import one_line

FORMAT = "blocks.resnet/1"  # bumped when the file layout changes


def save(path: str | os.PathLike, model: nn.Module, spec: ArchSpec | None = None,
         extra: dict[str, Any] | None = None) -> Path:
    """Write weights, spec and JSON-like `extra` (metrics, normalisation...) atomically; returns the path."""
    spec = spec if spec is not None else getattr(model, "spec", None)
    if not isinstance(spec, ArchSpec):
        raise ValueError("save needs the model's ArchSpec (pass spec=, or a model built by blocks.build)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    data = {"format": FORMAT, "arch": spec.to_dict(), "state_dict": state, "extra": dict(extra or {})}
    return atomic_write(path, lambda f: torch.save(data, f))  # a kill mid-write leaves the previous file


class UnreadableFile(ValueError):
    """A file torch.load cannot read safely: its one-line reason (empty, truncated, or holding code)."""


def safe_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """torch.load of tensors and plain data only, so loading a file never runs code from it; UnreadableFile else."""
    path = Path(path)
    try:
        with open_regular(path) as f, warnings.catch_warnings():  # a FIFO is refused, never waited on
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": the one line below says it all
            return torch.load(f, map_location=map_location, weights_only=True)
    except OSError:
        raise  # the disk's error (permission, I/O, not a regular file), not the file's content: the caller names it
    except Exception as e:  # UnpicklingError, RuntimeError (a truncated zip), EOFError (empty), KeyError ...
        raise UnreadableFile(_why(e, path)) from None


def read_json(path: str | os.PathLike, shape: Any) -> Any:
    """The JSON document at `path`, checked to hold `shape` (blocks.holds); UnreadableFile, in one line, else.

    A record the tool wrote may come back truncated, binary or edited into another kind of document: it is
    refused here, never met later as a JSON, Unicode or AttributeError.
    """
    with open_regular(path) as f:  # OSError (the disk, a FIFO) is the caller's to name
        text = f.read()
    try:
        data = json.loads(text.decode("utf-8"))
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError both are
        why = "the file is empty" if not text else f"it is truncated or not JSON ({one_line(e)[:200]})"
        raise UnreadableFile(why) from None
    mismatch = problem(data, shape)
    if mismatch:
        raise UnreadableFile(f"it does not hold what it should: {mismatch}")
    return data


def _why(e: Exception, path: Path) -> str:
    """Why torch.load refused `path`, in one short line."""
    if isinstance(e, pickle.UnpicklingError) and "Weights only load failed" in str(e):
        what = re.search(r"GLOBAL (\S+)", str(e))  # the class or function the file asked to call
        return (f"it holds objects other than tensors and plain data{f' ({what[1]})' if what else ''}, "
                f"which could run code, so it was not loaded")
    if path.stat().st_size == 0:
        return "the file is empty"
    first = one_line(e).split(". ")[0][:200]  # PyTorch's first sentence; the rest is advice for developers
    return f"it is truncated or not a PyTorch file ({type(e).__name__}: {first})"


def read(path: str | os.PathLike) -> dict[str, Any]:
    """The raw checkpoint dict (format, arch, state_dict, extra), checked to be one of ours."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at '{path}'")
    try:
        data = safe_load(path)
    except (UnreadableFile, OSError) as e:
        raise ValueError(f"'{path}' is not a readable checkpoint: {getattr(e, 'strerror', None) or e}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"'{path}' is not a blocks checkpoint (format {found!r}, expected {FORMAT!r})")
    return data


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> ResNet:
    """The model saved at `path`, in eval mode, with `.spec` (ArchSpec) and `.extra` (dict) attached."""
    data = read(path)
    spec = ArchSpec.from_dict(data["arch"])
    model = build(spec)
    try:
        model.load_state_dict(data["state_dict"])  # strict: weights that do not fit the spec fail here
    except RuntimeError as e:
        raise ValueError(f"'{path}': the weights do not fit its architecture: {str(e).splitlines()[0]}") from None
    model.extra = data["extra"]
    return model.to(map_location).eval()
