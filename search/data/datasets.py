"""DataLoaders for the search over the images search.data.sources reads: what a dataset is (classes, size,
normalisation), its seeded train/val split, augmentation in workers or on the device, and seeded batches."""

from __future__ import annotations

import hashlib
import os
import random
import sys
from collections.abc import Callable, Iterator, Sized
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets.folder import find_classes

from blocks.text import one_line
from search.config import IMAGE_SIZE_MIN, DataConfig, check_data_values
from search.device import cpu_cores
from search.errors import UserError

from . import augment, batch_augment, batches, custom, decode_cache, sources
from .sources import Split

# Per-channel mean/std of pixels in [0, 1]. CIFAR-10: over its 50k training images (as in airbench).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
# ImageNet's training set (torchvision's pretrained weights); used for Tiny ImageNet and image folders.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SYNTHETIC_MEAN, SYNTHETIC_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
NORMALISATION = {"cifar10": (CIFAR10_MEAN, CIFAR10_STD), "tiny_imagenet": (IMAGENET_MEAN, IMAGENET_STD),
                 "imagefolder": (IMAGENET_MEAN, IMAGENET_STD), "synthetic": (SYNTHETIC_MEAN, SYNTHETIC_STD)}


@dataclass(frozen=True)
class DatasetInfo:
    """What the model needs to know about a dataset, found without decoding the images."""

    num_classes: int
    image_size: int  # square side in pixels of the images before augmentation
    mean: tuple[float, float, float]  # per channel, pixels in [0, 1]
    std: tuple[float, float, float]
    class_names: tuple[str, ...]  # label -> name (Tiny ImageNet: the wnid)


@dataclass
class Loaders:
    """The DataLoaders of one run; `val` is None with train_on_val (or val_fraction 0), `test` unless asked."""

    train: DataLoader | batches.DeviceBatches  # batches augmented on the device, or by DataLoader workers
    val: DataLoader | None
    test: DataLoader | None
    info: DatasetInfo


def image_count(loader: DataLoader | batches.DeviceBatches | None) -> int:
    """The images a loader reads in one pass (0 for no loader): its dataset's length."""
    if loader is None:
        return 0
    if not isinstance(loader.dataset, Sized):  # every dataset made here has a length
        raise TypeError(f"{type(loader.dataset).__name__} has no length")
    return len(loader.dataset)


class ImageDataset(Dataset):
    """Some images of a split through an albumentations pipeline; items are (HWC uint8 array, label)."""

    def __init__(self, split: Split, transform: Callable, indices: np.ndarray | None = None) -> None:
        self.split, self.transform = split, transform
        self.indices = np.arange(len(split.labels)) if indices is None else np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        j = int(self.indices[i])
        return self.transform(image=self.split.read(j))["image"], int(self.split.labels[j])

    def __getitems__(self, batch: list[int]) -> list[tuple[np.ndarray, int]]:
        """One batch (DataLoader's batched fetch); a SeededBatch reseeds the augmentation first."""
        seed = getattr(batch, "seed", None)
        if seed is not None and isinstance(self.transform, A.Compose):
            augment.reseed(self.transform, seed)
        return [self[i] for i in batch]


class SeededBatch(list):
    """Indices of one training batch, with the seed its augmentation draws from (survives pickling to workers)."""

    seed: int


class SeededBatchSampler(torch.utils.data.Sampler):
    """Shuffled batches, each carrying an augmentation seed drawn with its order from the loader's generator."""

    # Seeding per batch, in the main process, makes the augmentation a function of the generator alone: a
    # reseed of the generator (each epoch, by fit) reaches it whether the workers are persistent, fresh or
    # absent, so a resumed run augments exactly like an uninterrupted one.
    def __init__(self, n: int, batch_size: int, drop_last: bool, generator: torch.Generator) -> None:
        self.n, self.batch_size, self.drop_last, self.generator = n, batch_size, drop_last, generator

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[SeededBatch]:
        order = torch.randperm(self.n, generator=self.generator).tolist()
        seeds = torch.randint(0, 2**62, (len(self),), generator=self.generator).tolist()
        for b, seed in enumerate(seeds):
            batch = SeededBatch(order[b * self.batch_size:(b + 1) * self.batch_size])
            batch.seed = seed
            yield batch


def dataset_info(cfg: DataConfig) -> DatasetInfo:
    """Classes, image size and normalisation of the configured dataset, from metadata only."""
    check_data_values(cfg)
    if cfg.dataset == "cifar10":
        return DatasetInfo(10, 32, CIFAR10_MEAN, CIFAR10_STD, sources.CIFAR10_CLASSES)
    if custom.is_custom(cfg):  # the user's function is called and its images read (once per process)
        read = custom.arrays(cfg)
        return DatasetInfo(len(read.class_names), read.image_size, read.mean, read.std, read.class_names)
    if cfg.dataset == "synthetic":
        names = tuple(f"class_{k}" for k in range(cfg.synthetic_classes))
        return DatasetInfo(cfg.synthetic_classes, cfg.synthetic_size, SYNTHETIC_MEAN, SYNTHETIC_STD, names)
    if cfg.dataset == "tiny_imagenet":  # 200 classes until downloaded, then wnids.txt decides
        folder = sources.tiny_folder(cfg.root)
        names = tuple(sources.tiny_wnids(folder)) if (folder / "wnids.txt").is_file() else ()
        return DatasetInfo(len(names) or 200, 64, IMAGENET_MEAN, IMAGENET_STD, names)
    train = Path(cfg.root) / "train"
    if not train.is_dir() or not any(e.is_dir() for e in os.scandir(train)):
        raise UserError(f"imagefolder: no class folders in '{train}' (expected {train}/<class>/<image>)")
    classes = find_classes(str(train))[0]
    size = cfg.image_size
    if size is None:
        first = next((f for c in classes for f in sources.images_in(train / c)), None)
        if first is None:
            raise UserError(f"imagefolder: no images in the class folders of '{train}'")
        try:
            with sources.open_image(first) as img:
                size = min(img.size)
        except Exception as exc:
            raise UserError(f"cannot read image '{first}': {one_line(exc)}") from None
        if size < IMAGE_SIZE_MIN:  # a thumbnail first would make every trial train at that size
            raise UserError(f"imagefolder: the first image '{first}' is {size} px on its shorter side, under the "
                            f"{IMAGE_SIZE_MIN} px minimum; set data.image_size")
    return DatasetInfo(len(classes), size, IMAGENET_MEAN, IMAGENET_STD, tuple(classes))


@dataclass(frozen=True)
class Survey:
    """What a dry run needs of a dataset: its shape and image counts, found without decoding or writing."""

    info: DatasetInfo
    n_train: int  # after the validation split and data.subset
    n_val: int
    skipped: str | None = None  # the checks left out, when a built-in dataset is not on disk


def survey(cfg: DataConfig, info: DatasetInfo | None = None) -> Survey:
    """The dataset's shape and counts, its layout checked; a built-in one not on disk is never downloaded."""
    info = info or dataset_info(cfg)
    # without download, a dataset not on disk is "not found" (by load_splits below)
    if cfg.dataset in sources.OFFICIAL_TRAIN and cfg.download and not sources.on_disk(cfg):
        n = sources.OFFICIAL_TRAIN[cfg.dataset]
        val_start = None
        skipped = (f"{cfg.dataset} is not in '{cfg.root}' (a search downloads it; a dry run downloads nothing): "
                   f"its official shape is used ({info.num_classes} classes at {info.image_size} px, {n:,} "
                   f"training images); skipped: the files' presence and readability")
    else:
        split, skipped = sources.load_splits(replace(cfg, download=False), test=False)[0], None
        n, val_start = len(split.labels), split.val_start
    train, val = split_indices(n, cfg.val_fraction, cfg.split_seed, cfg.subset, val_start)
    return Survey(info, len(train), len(val), skipped)


def split_indices(n: int, val_fraction: float, seed: int, subset: int | None = None,
                  val_start: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Seeded sorted (train, val) indices of n images; `subset` keeps that many training images (and val in
    proportion); `val_start`: the images from there on are the dataset's own validation split."""
    if val_start is None:
        perm = np.random.default_rng(seed).permutation(n)
        n_val = int(round(n * val_fraction))
        val, train = perm[:n_val], perm[n_val:]
    else:
        train, val = np.arange(val_start), np.arange(val_start, n)
        val_fraction = (n - val_start) / n
    if subset is not None:
        if subset > len(train):
            raise UserError(f"data.subset: {subset} is more than the {len(train)} training images left after the split")
        train = np.random.default_rng([seed, 1]).choice(train, size=subset, replace=False)
        # validation shrinks in proportion: 500 training images should not be judged on 5,000
        n_val = min(len(val), max(1, round(subset * val_fraction / (1 - val_fraction)))) if len(val) else 0
        val = np.random.default_rng([seed, 2]).choice(val, size=n_val, replace=False)
    return np.sort(train), np.sort(val)


def _seed_worker(worker_id: int) -> None:
    """Seed numpy, random and the albumentations pipeline of a DataLoader worker from torch's seed."""
    info = torch.utils.data.get_worker_info()
    if info is None:  # not in a worker: nothing to seed
        return
    seed = info.seed % 2**32  # torch derives it from the loader's generator (new each epoch) and the worker id
    np.random.seed(seed)
    random.seed(seed)
    if isinstance(info.dataset, ImageDataset) and isinstance(info.dataset.transform, A.Compose):
        augment.reseed(info.dataset.transform, seed)


def loader_workers(requested: int | str) -> int:
    """DataLoader workers for data.num_workers: auto = the CPU cores this process may use, and never more.

    More workers than cores only compete for them, and PyTorch then warns twice per loader (three loaders
    per trial); we lower the value and say so once per process instead.
    """
    cores = cpu_cores()
    if requested == "auto":
        return cores
    n = int(requested)
    if n > cores:
        if n not in _LOWERED:
            _LOWERED.add(n)
            print(f"note: data.num_workers {n} is more than the {cores} CPU cores here; using {cores}",
                  file=sys.stderr)
        return cores
    return n


_LOWERED: set[int] = set()  # num_workers values already reported as lowered (one line per process)


def drops_little(n: int, batch_size: int) -> bool:
    """Whether to drop the last partial training batch: only when it holds under DROP_AT_MOST of the images.

    Full batches keep BatchNorm statistics and step times steady, but with a subset (500 images, batch
    256) dropping the rest would throw away half of the data every epoch.
    """
    return n > batch_size and n % batch_size < DROP_AT_MOST * n


DROP_AT_MOST = 0.1  # share of the training images an epoch may leave out to keep every batch full


def _loader(ds: ImageDataset | batches.ArrayBatches, batch_size: int, info: DatasetInfo, *, train: bool, seed: int,
            device: str, workers: int | str, collate: Callable | None = None) -> DataLoader:
    """A DataLoader of normalised batches with seeded order and workers; pinned memory on CUDA."""
    cuda = str(device).startswith("cuda")
    workers = loader_workers(workers)
    # Full training batches (BatchNorm, steady step times), unless that leaves out much (drops_little).
    # The sampler has a generator of its own: the loader draws its workers' base seed from `generator`
    # only when it starts workers, which persistent workers do once, and that must not shift the order.
    batching = (dict(batch_sampler=SeededBatchSampler(len(ds), batch_size, drops_little(len(ds), batch_size),
                                                      torch.Generator().manual_seed(seed)))
                if train else dict(batch_size=batch_size))
    return DataLoader(ds, **batching, num_workers=workers, pin_memory=cuda, persistent_workers=cuda and workers > 0,
                      generator=torch.Generator().manual_seed(seed), worker_init_fn=_seed_worker,
                      collate_fn=collate or augment.NormalizeCollate(info.mean, info.std))


def make_loaders(cfg: DataConfig, steps: list, batch_size: int, *, seed: int, device: str = "cpu",
                 test: bool = False, train_on_val: bool = False, where: str = "augment",
                 eval_batch_size: int | None = None, info: DatasetInfo | None = None) -> Loaders:
    """Train/val(/test) DataLoaders; `steps` augment training images, val is a seeded part of train (`info`:
    the dataset's, when the caller has it already)."""
    if batch_size < 1:
        raise UserError(f"batch size {batch_size} must be at least 1")
    info = info or dataset_info(cfg)
    trainval, test_split = sources.load_splits(cfg, test)
    trainval = _decoded(cfg, info, trainval, "train")
    test_split = None if test_split is None else _decoded(cfg, info, test_split, "test")
    train_idx, val_idx = split_indices(len(trainval.labels), cfg.val_fraction, cfg.split_seed, cfg.subset,
                                       trainval.val_start)
    if train_on_val:
        train_idx, val_idx = np.sort(np.concatenate([train_idx, val_idx])), val_idx[:0]
    train_tf = augment.train_pipeline(steps, where, seed=seed)
    augment.check_batchable(train_tf, info.image_size, where)
    augment.reseed(train_tf, seed)  # the check drew from the generator
    eval_tf = augment.eval_pipeline()
    eval_bs = eval_batch_size or 2 * batch_size  # no activations kept for backward: larger batches fit
    load = partial(_loader, batch_size=eval_bs, info=info, train=False, seed=seed, device=device,
                   workers=cfg.num_workers)
    val = load(ImageDataset(trainval, eval_tf, val_idx)) if len(val_idx) else None
    test_loader = None if test_split is None else load(ImageDataset(test_split, eval_tf))
    train = _train_loader(cfg, trainval, train_idx, train_tf, batch_size, info, seed=seed, device=device, where=where)
    return Loaders(train, val, test_loader, info)


def _decoded(cfg: DataConfig, info: DatasetInfo, split: Split, name: str) -> Split:
    """An image-file split as a memory-mapped array decoded once (squared to the image size); others as they are."""
    if split.paths is None:
        return split
    prepare = augment.eval_pipeline(pre=augment.square(info.image_size))  # images of a folder may differ in size
    folder = Path(cfg.cache_dir) if cfg.cache_dir else decode_cache.default_dir()
    root = hashlib.sha256(str(Path(cfg.root).resolve()).encode()).hexdigest()[:8]  # roots share the cache folder
    images = decode_cache.decoded(split.paths, info.image_size,
                                  lambda p: prepare(image=sources.read_image(p))["image"],
                                  folder, f"{cfg.dataset}-{name}-{root}", prepare="square")
    return Split(split.labels, images=images)


def _train_loader(cfg: DataConfig, split: Split, idx: np.ndarray, pipeline: A.Compose, batch_size: int,
                  info: DatasetInfo, *, seed: int, device: str, where: str) -> DataLoader | batches.DeviceBatches:
    """Training batches: the policy's tail of batched twins on `device`, what precedes it in DataLoader workers."""
    load = partial(_loader, batch_size=batch_size, info=info, train=True, seed=seed, device=device,
                   workers=cfg.num_workers)
    if cfg.augment_on == "workers":
        return load(ImageDataset(split, pipeline, idx))
    host, twins = batch_augment.split_policy(list(pipeline.transforms))
    if cfg.augment_on == "device" and host:
        raise UserError(f"data.augment_on: device, but {where}: {type(host[-1]).__name__} has no batched twin "
                        f"(twins: {', '.join(batch_augment.TWINS)}, as a tail of the policy); use auto or workers")
    on_device = batch_augment.BatchAugment(twins, info.mean, info.std)
    if not host and split.images is not None:  # gather whole batches from the array: no per-image Python
        loader = load(batches.ArrayBatches(split.images, split.labels, idx), workers=0, collate=batches.as_is)
    else:
        worker_tf = A.Compose(host)
        augment.reseed(worker_tf, seed)
        loader = load(ImageDataset(split, worker_tf, idx), collate=batches.uint8_collate)
    return batches.DeviceBatches(loader, on_device, device)


def make_predict_loader(cfg: DataConfig, paths: list[Path], batch_size: int, *, device: str = "cpu") -> DataLoader:
    """A DataLoader over unlabeled image files (e.g. Tiny ImageNet's test set) giving (images, indices into paths)."""
    info = dataset_info(cfg)
    pre = augment.square(info.image_size) if cfg.dataset == "imagefolder" else []
    ds = ImageDataset(Split(np.arange(len(paths)), paths=list(paths)), augment.eval_pipeline(pre=pre))
    return _loader(ds, batch_size, info, train=False, seed=0, device=device, workers=cfg.num_workers)
