"""Training batches gathered as uint8 and augmented on the training device (`data.augment_on`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .batch_augment import BatchAugment


class ArrayBatches(Dataset):
    """In-memory (or memory-mapped) images taken a batch of indices at a time, no per-image Python call."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> None:
        self.images, self.labels, self.indices = images, labels, np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitems__(self, batch: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (N, C, H, W) channels_last images and int64 labels of positions `batch` (DataLoader calls this)."""
        j = self.indices[np.asarray(batch, dtype=np.int64)]
        images = torch.from_numpy(np.ascontiguousarray(self.images[j]))  # (N, H, W, C): one fancy-index gather
        return images.permute(0, 3, 1, 2), torch.from_numpy(self.labels[j].astype(np.int64))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.__getitems__([i])


def as_is(batch: Any) -> Any:
    """collate_fn of ArrayBatches: the batch is already stacked."""
    return batch


def uint8_collate(samples: list[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """collate_fn for worker-augmented HWC uint8 images: (N, C, H, W) channels_last uint8 and int64 labels."""
    images = torch.from_numpy(np.stack([image for image, _ in samples]))
    return images.permute(0, 3, 1, 2), torch.tensor([label for _, label in samples], dtype=torch.int64)


class DeviceBatches:
    """A DataLoader of uint8 batches, each moved to `device`, augmented and normalised there as it is taken."""

    def __init__(self, loader: DataLoader, augment: BatchAugment, device: torch.device | str) -> None:
        self.loader, self.augment, self.device = loader, augment, torch.device(device)

    @property
    def generator(self) -> torch.Generator:
        """The loader's generator: reseeding it (as fit does per epoch) also reseeds the augmentation."""
        return self.loader.generator

    @property
    def batch_sampler(self) -> Any:
        """The loader's batch sampler (fit reseeds its generator each epoch, with the loader's)."""
        return self.loader.batch_sampler

    @property
    def dataset(self) -> Dataset:
        return self.loader.dataset

    @property
    def batch_size(self) -> int | None:
        return self.loader.batch_size

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # One augmentation stream per pass, drawn from the loader's generator: seeded runs repeat exactly.
        g = torch.Generator().manual_seed(int(torch.randint(2**62, (), generator=self.loader.generator)))
        for x, y in self.loader:
            x = x.to(self.device, non_blocking=True)
            yield self.augment(x, g), y.to(self.device, non_blocking=True)
