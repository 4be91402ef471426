"""One trial to retrain, as the retrain command, its seed runs and their outputs all see it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from blocks import ArchSpec

from ..config import TrainSpec


@dataclass
class Plan:
    """One trial to retrain: its number, verified spec, full-length TrainSpec and search results."""

    number: int
    spec: ArchSpec
    train: TrainSpec
    seed: int
    record: dict[str, Any]  # search-time facts: val_acc, params, flops, receptive_field
