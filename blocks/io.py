"""Save a built ResNet with its ArchSpec in one file, and load it back with one call."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .resnet import ResNet, build
from .spec import ArchSpec

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
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"format": FORMAT, "arch": spec.to_dict(), "state_dict": state, "extra": dict(extra or {})}, tmp)
    tmp.replace(path)  # a kill mid-write leaves the previous file, never half of one
    return path


def read(path: str | os.PathLike) -> dict[str, Any]:
    """The raw checkpoint dict (format, arch, state_dict, extra), checked to be one of ours."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at '{path}'")
    try:
        # weights_only: tensors and plain data only, so loading a file never runs code from it
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError (truncated zip) ...
        raise ValueError(f"'{path}' is not a readable checkpoint: {str(e).splitlines()[0]}") from None
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
