"""Test-set metrics from predicted probabilities: top-k, per-class accuracy, confusion matrix, ensembles."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..files import atomic_text

TOP5_MIN_CLASSES = 100  # top-5 is reported where it is informative (Tiny ImageNet's 200 classes), not for 10


def topk_accuracy(probs: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Share of rows whose label is among the k highest probabilities."""
    k = min(k, probs.shape[1])
    top = probs.topk(k, dim=1).indices
    return int((top == labels.view(-1, 1)).any(dim=1).sum()) / len(labels) if len(labels) else math.nan


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> np.ndarray:
    """(classes, classes) int64 counts: row = true class, column = predicted class."""
    idx = labels.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes).numpy()


def per_class(cm: np.ndarray, names: Sequence[str]) -> list[dict[str, Any]]:
    """One row per class: support, correct, accuracy (recall), precision, from a confusion matrix."""
    rows = []
    for k in range(cm.shape[0]):
        support, correct, predicted = int(cm[k].sum()), int(cm[k, k]), int(cm[:, k].sum())
        rows.append({"class": k, "name": names[k] if k < len(names) else str(k), "support": support,
                     "correct": correct, "accuracy": correct / support if support else math.nan,
                     "precision": correct / predicted if predicted else math.nan})
    return rows


def classification_metrics(probs: torch.Tensor, labels: torch.Tensor, names: Sequence[str]) -> dict[str, Any]:
    """top-1 (top-5 from TOP5_MIN_CLASSES classes), NLL loss, confusion matrix and per-class rows."""
    num_classes = probs.shape[1]
    cm = confusion_matrix(probs.argmax(1), labels, num_classes)
    nll = -torch.log(probs.gather(1, labels.view(-1, 1).long()).clamp_min(1e-12)).mean().item()
    out: dict[str, Any] = {"n": int(len(labels)), "top1": topk_accuracy(probs, labels, 1), "loss": nll}
    if num_classes >= TOP5_MIN_CLASSES:
        out["top5"] = topk_accuracy(probs, labels, 5)
    out["confusion"] = cm
    out["per_class"] = per_class(cm, names)
    return out


def ensemble_probs(members: Sequence[torch.Tensor]) -> torch.Tensor:
    """Average of the members' softmax probabilities (all over the same images in the same order)."""
    if not members:
        raise ValueError("an ensemble needs at least one member")
    return torch.stack(list(members)).mean(0)


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (None for a single value) of per-seed results."""
    arr = np.asarray(values, dtype=float)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else None
    return {"mean": float(arr.mean()) if len(arr) else math.nan, "std": std, "values": [float(v) for v in arr]}


def summarise_seeds(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std over seeds of every scalar test metric the runs share (top1, top5, loss)."""
    keys = [k for k in ("top1", "top5", "loss") if all(k in r for r in runs)]
    return {k: mean_std([r[k] for r in runs]) for k in keys}


def write_per_class_csv(path: Path, tables: Sequence[list[dict[str, Any]]]) -> None:
    """Per-class accuracy as CSV; with several tables (seeds), the mean and std of accuracy across them."""
    first = tables[0]
    fields = ["class", "name", "support", "correct", "accuracy", "precision"]
    if len(tables) > 1:
        fields = ["class", "name", "support", "accuracy", "accuracy_std"]
    with atomic_text(path) as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for k, row in enumerate(first):
            if len(tables) == 1:
                w.writerow({key: _fmt(row[key]) for key in fields})
                continue
            stats = mean_std([t[k]["accuracy"] for t in tables])
            w.writerow({"class": row["class"], "name": row["name"], "support": row["support"],
                        "accuracy": _fmt(stats["mean"]), "accuracy_std": _fmt(stats["std"])})


def write_confusion_csv(path: Path, cm: np.ndarray, names: Sequence[str]) -> None:
    """The confusion matrix as CSV: a header of predicted class names, one row per true class."""
    with atomic_text(path) as f:
        w = csv.writer(f)
        w.writerow(["true \\ predicted", *names])
        for name, row in zip(names, cm, strict=True):
            w.writerow([name, *(int(v) for v in row)])


def read_confusion_csv(path: Path) -> np.ndarray:
    """The matrix written by write_confusion_csv."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))[1:]
    return np.asarray([[int(v) for v in r[1:]] for r in rows], dtype=np.int64)


def write_curves_csv(path: Path, history: Sequence[dict[str, Any]]) -> None:
    """One row per epoch: losses, accuracies, learning rate, image size, seconds."""
    fields = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "image_size", "time_s"]
    with atomic_text(path) as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for h in history:
            w.writerow({k: _fmt(h[k]) for k in fields})


def jsonable(metrics: dict[str, Any]) -> dict[str, Any]:
    """A metrics dict with the confusion matrix as lists and NaN as None (strict JSON)."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, np.ndarray):
            v = v.tolist()
        elif isinstance(v, float) and not math.isfinite(v):
            v = None
        elif isinstance(v, list):
            v = [jsonable(x) if isinstance(x, dict) else x for x in v]
        elif isinstance(v, dict):
            v = jsonable(v)
        out[k] = v
    return out


def _fmt(v: Any) -> Any:
    """Floats to 6 significant digits and NaN/None to an empty cell, for CSV."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.6g}" if isinstance(v, float) else v
