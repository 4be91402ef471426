"""The final retrain's recipe and data: what a trial trains with and on once the search is over."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..config import DataConfig, RetrainConfig, TrainSpec
from ..describe import plural
from ..errors import UserError

if TYPE_CHECKING:
    from ..data.datasets import Loaders

RETRAIN_SETTABLE = ("data.", "retrain.")  # what `resnet-search retrain --set` may change (not what was searched)


def check_overrides(overrides: list[str]) -> None:
    """Refuse `--set` keys that would change the search problem rather than the retrain."""
    for item in overrides:
        key = item.split("=", 1)[0]
        if not key.startswith(RETRAIN_SETTABLE) or key == "data.dataset":
            raise UserError(f"--set {item!r}: retrain can set data.* (not data.dataset) and retrain.* keys; "
                            f"the search's own sections are fixed (change the recipe with retrain.*)")


def final_train(train: TrainSpec, retrain: RetrainConfig) -> TrainSpec:
    """The trial's training settings with the retrain section's recipe laid over them (lr scaled to the batch)."""
    changes = retrain.recipe()
    if "lr" in changes:  # linear scaling rule (Goyal et al. 2017): lr per lr_batch images
        changes["lr"] = changes["lr"] * train.batch_size / retrain.lr_batch
    if "warmup_epochs" in changes:  # a short run (a test, a CPU check) is not all warm-up
        changes["warmup_epochs"] = min(changes["warmup_epochs"], train.epochs / 10)
    return dataclasses.replace(train, **changes)


def final_data(data: DataConfig, overrides: list[str], log: Callable[[str], None]) -> DataConfig:
    """The search's data settings without its `subset` (unless --set data.subset asks for one)."""
    if data.subset is None or any(o.startswith("data.subset=") for o in overrides):
        return data
    log(f"data.subset={data.subset} of the search is dropped: the final model trains on the full training set")
    return dataclasses.replace(data, subset=None)


def trained_on(loaders: Loaders, data: DataConfig, on_val: bool) -> dict[str, Any]:
    """What a run actually trains on: dataset, number of training images, image size, splits."""
    from ..data.datasets import image_count

    return {"dataset": data.dataset, "train_images": image_count(loaders.train),
            "images": "train + val" if on_val else "train", "subset": data.subset,
            "image_size": loaders.info.image_size}


def describe(train: TrainSpec, augment: list, facts: dict[str, Any]) -> str:
    """One line: the data and the recipe of a run, as the log and the summary table show it."""
    opt = train.optimizer + (" nesterov" if train.optimizer == "sgd" and train.nesterov else "")
    warm = f" +{train.warmup_epochs:g} warm-up" if train.warmup_epochs and train.schedule in ("cosine", "step") else ""
    ema = f", EMA {train.ema:g}" if train.ema is not None else ", no EMA"
    smoothing = f", label smoothing {train.label_smoothing:g}" if train.label_smoothing else ""
    names = ", ".join(next(iter(s)) if isinstance(s, dict) else str(s) for s in augment) or "none"
    return (f"{facts['dataset']}: {facts['train_images']:,} images ({facts['images']}) at {facts['image_size']}px; "
            f"{plural(train.epochs, 'epoch')} {opt} lr {train.lr:g} wd {train.weight_decay:g} {train.schedule}{warm}, "
            f"batch {train.batch_size}{ema}{smoothing}; augment: {names}")
