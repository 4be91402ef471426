"""CIFAR-10's batch files read without running anything in them: numpy arrays and plain containers only.

The official `cifar-10-batches-py/*` files are pickles (Python 2's cPickle, protocol 2), and an unrestricted
pickle.load runs whatever a planted file asks for. So they are read here, and only here, through an
Unpickler whose find_class admits the few numpy globals a real batch names (the Python docs' "Restricting
Globals"), then checked to hold what a batch holds; torchvision's CIFAR10 is used to download, never to read.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from blocks.text import one_line
from search.errors import UserError

# The globals a pickled uint8 array names (numpy 1 writes numpy.core, numpy 2 numpy._core; protocol 5 uses
# _frombuffer); nothing else is loaded. Python 3 writes bytes at protocol 2 as _codecs.encode(text, "latin1").
ALLOWED = {(f"numpy.{core}.{module}", name) for core in ("core", "_core")
           for module, name in (("multiarray", "_reconstruct"), ("numeric", "_frombuffer"))}
ALLOWED |= {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}
ROW = 3 * 32 * 32  # bytes of one image in a batch's `data`: 1024 red, then 1024 green, then 1024 blue
CLASSES = 10


class _Refused(pickle.UnpicklingError):
    """The file asked for a global outside ALLOWED: its module.name."""


class _ArraysOnly(pickle.Unpickler):
    """An Unpickler that builds numpy arrays and plain containers, and refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        """The allowed numpy globals only (containers, strings and numbers need none)."""
        if (module, name) not in ALLOWED:
            raise _Refused(f"{module}.{name}")
        if module == "_codecs":
            return _latin1
        return super().find_class(module, name)


def _latin1(text: str, encoding: str) -> bytes:
    """_codecs.encode as Python 3's protocol-2 pickles call it for bytes, and for nothing else."""
    if encoding != "latin1":
        raise _Refused(f"_codecs.encode(..., {encoding[:40]!r})")
    return text.encode("latin1")


def load(path: Path) -> Any:
    """The unpickled content of a CIFAR-10 file (str keys, as torchvision's encoding='latin1'); UserError else."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read cifar10 file '{path}': {e.strerror or e}") from None
    try:
        return _ArraysOnly(io.BytesIO(raw), encoding="latin1").load()
    except _Refused as e:
        raise UserError(f"cannot read cifar10 file '{path}': it asks for {e}, which could run code, "
                        f"so it was not loaded (a batch holds numpy arrays and lists only)") from None
    except Exception as e:  # UnpicklingError, EOFError (truncated), ValueError, MemoryError ...
        raise UserError(f"cannot read cifar10 file '{path}': not a CIFAR-10 pickle ({one_line(e)[:200]})") from None


def read_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    """A data or test batch: its images ((N, 3072) uint8, as stored) and their labels; UserError when malformed."""
    batch = load(path)
    why = _batch_problem(batch)
    if why is not None:
        raise UserError(f"cannot read cifar10 file '{path}': {why}")
    return batch["data"], batch["labels"]


def check_meta(path: Path) -> None:
    """batches.meta holds the 10 class names; UserError else."""
    meta = load(path)
    names = meta.get("label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != CLASSES or not all(isinstance(n, str) for n in names):
        raise UserError(f"cannot read cifar10 file '{path}': expected a dict whose label_names lists "
                        f"{CLASSES} class names")


def _batch_problem(batch: Any) -> str | None:
    """What makes an unpickled batch unlike an official one, or None."""
    if not isinstance(batch, dict) or not {"data", "labels"} <= batch.keys():
        found = sorted(map(str, batch))[:8] if isinstance(batch, dict) else type(batch).__name__
        return f"expected a dict with 'data' and 'labels', found {found}"
    data, labels = batch["data"], batch["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != ROW:
        shape = (data.dtype, data.shape) if isinstance(data, np.ndarray) else type(data).__name__
        return f"its data is not an (N, {ROW}) uint8 array ({shape})"
    if not isinstance(labels, list) or not all(type(y) is int and 0 <= y < CLASSES for y in labels):
        return f"its labels are not a list of class numbers 0-{CLASSES - 1}"
    if len(labels) != len(data):
        return f"it has {len(labels)} labels for {len(data)} images"
    return None
