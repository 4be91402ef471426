"""A tiny network and generated data that train in a second on a CPU, for the trainer's tests; a trial trained again."""

from __future__ import annotations

from pathlib import Path

import torch

from blocks import ArchSpec, build
from search.config import DataConfig, TrainSpec, load_config
from search.data.augment import DEFAULT_POLICY, policy_steps
from search.data.datasets import dataset_info, make_loaders
from search.trainer import fit, seed_everything

SPEC = ArchSpec.from_dict({"stages": 2, "blocks": [1, 1], "width": 8, "num_classes": 4, "input_size": 16})
DATA = DataConfig(dataset="synthetic", synthetic_train=160, synthetic_test=40, synthetic_classes=4,
                  synthetic_size=16, num_workers=0)


def reproduce(space: Path, record: dict) -> list:
    """Train a trial's recorded arch and train spec again with its seed and each epoch's threads on the CPU (the
    objective's order)."""
    cfg = load_config(space)
    train = TrainSpec.from_dict(record["train"])
    seed_everything(record["seed"])  # seed, build, loaders, fit: as search.objective does
    model = build(ArchSpec.from_dict(record["arch"]))
    steps = policy_steps(cfg.augment, train.augment_policy or DEFAULT_POLICY)
    loaders = make_loaders(cfg.data, steps, train.batch_size, seed=record["seed"], device="cpu")
    return fit(model, loaders.train, loaders.val, train, torch.device("cpu"),
               native_size=dataset_info(cfg.data).image_size, seed=record["seed"],
               threads=lambda epoch: record["epochs"][epoch]["threads"])


def same_metrics(history: list, record: dict) -> bool:
    """Identical per-epoch validation accuracy and training loss."""
    return ([(h.val_acc, h.train_loss) for h in history]
            == [(e["val_acc"], e["train_loss"]) for e in record["epochs"]])
