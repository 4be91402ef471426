"""Datasets and DataLoaders for the search: CIFAR-10, Tiny ImageNet, image folders and synthetic images."""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import sys
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import CIFAR10
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset
from torchvision.datasets.utils import download_and_extract_archive

from blocks.text import one_line
from . import augment, batch_augment, batches, decode_cache
from search.config import IMAGE_SIZE_MIN, DataConfig, check_data_values
from search.device import cpu_cores
from search.errors import UserError

# Per-channel mean/std of pixels in [0, 1]. CIFAR-10: over its 50k training images (as in airbench).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
# ImageNet's training set (torchvision's pretrained weights); used for Tiny ImageNet and image folders.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SYNTHETIC_MEAN, SYNTHETIC_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
NORMALISATION = {"cifar10": (CIFAR10_MEAN, CIFAR10_STD), "tiny_imagenet": (IMAGENET_MEAN, IMAGENET_STD),
                 "imagefolder": (IMAGENET_MEAN, IMAGENET_STD), "synthetic": (SYNTHETIC_MEAN, SYNTHETIC_STD)}
OFFICIAL_TRAIN = {"cifar10": 50_000, "tiny_imagenet": 100_000}  # training images of the official releases
MAX_PIXELS = 50_000_000  # largest image read (about 8,700 x 5,800): decoding peaks near 18 bytes a pixel
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR_DIR, TINY_DIR = "cifar-10-batches-py", "tiny-imagenet-200"
TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"  # of the official zip (248,100,043 bytes)


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

    train: DataLoader
    val: DataLoader | None
    test: DataLoader | None
    info: DatasetInfo


@dataclass(frozen=True)
class Split:
    """Images of one split, in memory ((N, H, W, 3) uint8) or as files, with int64 labels."""

    labels: np.ndarray
    images: np.ndarray | None = None
    paths: list[Path] | None = None

    def read(self, i: int) -> np.ndarray:
        """Image i as an RGB HWC uint8 array."""
        return self.images[i] if self.images is not None else read_image(self.paths[i])


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
        if seed is not None and isinstance(self.transform, augment.A.Compose):
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

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator).tolist()
        seeds = torch.randint(0, 2**62, (len(self),), generator=self.generator).tolist()
        for b, seed in enumerate(seeds):
            batch = SeededBatch(order[b * self.batch_size:(b + 1) * self.batch_size])
            batch.seed = seed
            yield batch


def read_image(path: Path | str) -> np.ndarray:
    """An image file as an RGB HWC uint8 array (greyscale, palette, CMYK... converted); at most MAX_PIXELS."""
    try:
        with _open_image(path) as img:
            if img.width * img.height > MAX_PIXELS:  # read from the header: nothing decoded yet
                raise UserError(f"image '{path}' is {img.width:,}x{img.height:,} pixels, over the limit of "
                                f"{MAX_PIXELS / 1e6:.0f} megapixels (resize it first)")
            return np.asarray(img.convert("RGB"))
    except UserError:
        raise
    except Image.DecompressionBombError:  # over twice PIL's own limit: refused by Image.open itself
        raise UserError(f"image '{path}' is over the limit of {MAX_PIXELS / 1e6:.0f} megapixels (resize it first)"
                        ) from None
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... for damaged files
        reason = one_line(exc).replace(f" '{path}'", "").rstrip(": ")  # PIL and OSError repeat the path
        raise UserError(f"cannot read image '{path}': {reason}") from None


def _open_image(path: Path | str) -> Image.Image:
    """PIL's lazy open (the header only), without its DecompressionBombWarning: MAX_PIXELS is checked instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(path)


class _CIFAR10Files(CIFAR10):
    """torchvision's CIFAR10 that checks the extracted batch files for presence, not their md5."""

    # torchvision md5-hashes all six batches (170 MB) on every construction, and miniature test
    # fixtures in the official format cannot have the official sums. The downloaded archive is
    # still md5-checked (tgz_md5), and a damaged batch fails to unpickle and is named by _cifar10.
    train_list = [[name, None] for name, _ in CIFAR10.train_list]
    test_list = [[name, None] for name, _ in CIFAR10.test_list]
    meta = {**CIFAR10.meta, "md5": None}


def _cifar10(cfg: DataConfig, train: bool) -> Split:
    """One official CIFAR-10 split through torchvision, downloading it when missing and allowed."""
    root, files = _cifar10_files(Path(cfg.root))
    folder = root / CIFAR_DIR
    if not all(p.is_file() for p in files):
        if not cfg.download:
            hint = "set data.download: true or pass --data-root"
            raise UserError(f"cifar10 not found in '{cfg.root}' (expected {folder}/); {hint}")
        try:
            _CIFAR10Files(str(root), train=train, download=True)
        except Exception as exc:  # URLError, OSError, RuntimeError (md5) ...
            raise UserError(f"cannot download cifar10 into '{root}': {one_line(exc)}") from None
    try:
        ds = _CIFAR10Files(str(root), train=train, download=False)
    except Exception as exc:  # UnpicklingError, EOFError, KeyError, ValueError (reshape) ...
        bad = next((p for p in files if not _unpickles(p)), folder)
        raise UserError(f"cannot read cifar10 file '{bad}': {one_line(exc)}") from None
    return Split(np.asarray(ds.targets, dtype=np.int64), images=ds.data)


def _cifar10_files(root: Path) -> tuple[Path, list[Path]]:
    """The root torchvision expects (the batches folder's parent) and the CIFAR-10 files under it."""
    if root.name == CIFAR_DIR and (root / "batches.meta").is_file():
        root = root.parent  # --data-root pointed at the batches folder itself
    names = [n for n, _ in _CIFAR10Files.train_list + _CIFAR10Files.test_list] + ["batches.meta"]
    return root, [root / CIFAR_DIR / n for n in names]


def _unpickles(path: Path) -> bool:
    """Whether a CIFAR-10 file unpickles to a dict (to name the damaged one after torchvision failed)."""
    try:
        return isinstance(pickle.loads(path.read_bytes(), encoding="latin1"), dict)
    except Exception:
        return False


def _tiny_folder(root: str | Path) -> Path:
    """The tiny-imagenet-200 folder: root itself when it holds wnids.txt, else root/tiny-imagenet-200."""
    return Path(root) if (Path(root) / "wnids.txt").is_file() else Path(root) / TINY_DIR


def _tiny_dir(cfg: DataConfig) -> Path:
    """The tiny-imagenet-200 folder, downloaded into the root when missing and allowed."""
    root, folder = Path(cfg.root), _tiny_folder(cfg.root)
    if (folder / "wnids.txt").is_file():
        return folder
    if not cfg.download:
        hint = "set data.download: true or pass --data-root"
        raise UserError(f"tiny_imagenet not found in '{cfg.root}' (expected {folder}/wnids.txt); {hint}")
    try:
        download_and_extract_archive(TINY_URL, str(root), filename=f"{TINY_DIR}.zip", md5=TINY_MD5)
    except Exception as exc:  # URLError, OSError, RuntimeError (md5), BadZipFile ...
        raise UserError(f"cannot download tiny_imagenet into '{root}': {one_line(exc)}") from None
    if not (folder / "wnids.txt").is_file():
        raise UserError(f"tiny_imagenet: the downloaded archive has no '{folder}/wnids.txt'")
    return folder


def _images_in(folder: Path) -> list[Path]:
    """Image files directly inside a folder, sorted by name."""
    return sorted(Path(e.path) for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(IMG_EXTENSIONS))


def _tiny_wnids(folder: Path) -> list[str]:
    """The class ids in wnids.txt order (label k = line k)."""
    path = folder / "wnids.txt"
    wnids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not wnids or len(set(wnids)) != len(wnids):
        raise UserError(f"'{path}' must list each class id once, one a line")
    return wnids


def _tiny_train(folder: Path, wnids: list[str]) -> Split:
    """The official training images, train/<wnid>/images/*.JPEG."""
    paths, labels = [], []
    for label, wnid in enumerate(wnids):
        images = folder / "train" / wnid / "images"
        if not images.is_dir():
            raise UserError(f"tiny_imagenet: missing folder '{images}' (class {wnid} of wnids.txt)")
        if not (files := _images_in(images)):
            raise UserError(f"tiny_imagenet: no images in '{images}'")
        paths += files
        labels += [label] * len(files)
    return Split(np.asarray(labels, dtype=np.int64), paths=paths)


def _tiny_val(folder: Path, wnids: list[str]) -> Split:
    """The official validation images, labelled by val/val_annotations.txt (our test set)."""
    ann, images = folder / "val" / "val_annotations.txt", folder / "val" / "images"
    if not ann.is_file():
        raise UserError(f"tiny_imagenet: missing '{ann}' (the labels of the official val set)")
    index = {w: k for k, w in enumerate(wnids)}
    present = {p.name for p in _images_in(images)} if images.is_dir() else set()
    paths, labels = [], []
    for n, line in enumerate(ann.read_text().splitlines(), 1):
        fields = [f.strip() for f in line.split("\t")]
        if not line.strip():
            continue
        if len(fields) < 2:
            raise UserError(f"{ann}:{n}: expected 'file<TAB>wnid<TAB>x0<TAB>y0<TAB>x1<TAB>y1', got {line!r}")
        if fields[1] not in index:
            raise UserError(f"{ann}:{n}: unknown wnid '{fields[1]}' (not in wnids.txt)")
        if fields[0] not in present:
            raise UserError(f"{ann}:{n}: image '{images / fields[0]}' does not exist")
        paths.append(images / fields[0])
        labels.append(index[fields[1]])
    if not paths:
        raise UserError(f"tiny_imagenet: '{ann}' lists no images")
    return Split(np.asarray(labels, dtype=np.int64), paths=paths)


def tiny_imagenet_unlabeled_test(root: str | Path) -> list[Path]:
    """The official unlabeled test images (test/images/*.JPEG), sorted by name, for --predict."""
    images = _tiny_folder(root) / "test" / "images"
    if not images.is_dir() or not (files := _images_in(images)):
        raise UserError(f"tiny_imagenet: no test images in '{images}'")
    return files


def _folder_split(folder: Path, class_to_idx: dict[str, int] | None = None) -> Split:
    """An ImageFolder-style tree (<class>/<image>); labels from the sorted training class names."""
    if not folder.is_dir():
        raise UserError(f"imagefolder: missing folder '{folder}' (expected {folder}/<class>/<image>)")
    try:
        classes, found = find_classes(str(folder))
        if class_to_idx is not None and (unknown := sorted(set(classes) - set(class_to_idx))):
            raise UserError(f"imagefolder: class folder '{folder / unknown[0]}' is not among the training classes")
        samples = make_dataset(str(folder), class_to_idx or found, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as exc:  # no class folders, or a class folder without images
        raise UserError(f"imagefolder: {one_line(exc)} (in '{folder}')") from None
    return Split(np.asarray([y for _, y in samples], dtype=np.int64), paths=[Path(p) for p, _ in samples])


def synthetic_images(n: int, classes: int, size: int, seed: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded learnable (images, labels): per-class smooth colour patterns, shifted and scaled, plus noise."""
    pad = max(1, size // 8)  # shifts of up to 1/8 of the side
    grids = np.random.default_rng(seed).integers(0, 256, size=(classes, 4, 4, 3), dtype=np.uint8)
    side = size + 2 * pad  # the class patterns depend on `seed` only: train and test streams share them
    protos = np.stack([np.asarray(Image.fromarray(g).resize((side, side), Image.BICUBIC)) for g in grids])
    rng = np.random.default_rng([seed, stream])
    labels = rng.permutation(np.arange(n) % classes).astype(np.int64)
    dy, dx = rng.integers(0, 2 * pad + 1, size=(2, n))
    contrast = rng.uniform(0.6, 1.2, size=(n, 1, 1, 1))
    images = np.stack([protos[y, a : a + size, b : b + size] for y, a, b in zip(labels, dy, dx)]).astype(np.float32)
    images = 128 + (images - 128) * contrast + rng.normal(0, 40, size=images.shape)
    return np.clip(images, 0, 255).astype(np.uint8), labels


def dataset_info(cfg: DataConfig) -> DatasetInfo:
    """Classes, image size and normalisation of the configured dataset, from metadata only."""
    check_data_values(cfg)
    if cfg.dataset == "cifar10":
        return DatasetInfo(10, 32, CIFAR10_MEAN, CIFAR10_STD, CIFAR10_CLASSES)
    if cfg.dataset == "synthetic":
        names = tuple(f"class_{k}" for k in range(cfg.synthetic_classes))
        return DatasetInfo(cfg.synthetic_classes, cfg.synthetic_size, SYNTHETIC_MEAN, SYNTHETIC_STD, names)
    if cfg.dataset == "tiny_imagenet":  # 200 classes until downloaded, then wnids.txt decides
        folder = _tiny_folder(cfg.root)
        names = tuple(_tiny_wnids(folder)) if (folder / "wnids.txt").is_file() else ()
        return DatasetInfo(len(names) or 200, 64, IMAGENET_MEAN, IMAGENET_STD, names)
    train = Path(cfg.root) / "train"
    if not train.is_dir() or not any(e.is_dir() for e in os.scandir(train)):
        raise UserError(f"imagefolder: no class folders in '{train}' (expected {train}/<class>/<image>)")
    classes = find_classes(str(train))[0]
    size = cfg.image_size
    if size is None:
        first = next((f for c in classes for f in _images_in(train / c)), None)
        if first is None:
            raise UserError(f"imagefolder: no images in the class folders of '{train}'")
        try:
            with _open_image(first) as img:
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
    if cfg.dataset in OFFICIAL_TRAIN and cfg.download and not _on_disk(cfg):  # without download: not found
        n = OFFICIAL_TRAIN[cfg.dataset]
        skipped = (f"{cfg.dataset} is not in '{cfg.root}' (a search downloads it; a dry run downloads nothing): "
                   f"its official shape is used ({info.num_classes} classes at {info.image_size} px, {n:,} "
                   f"training images); skipped: the files' presence and readability")
    else:
        n, skipped = len(_load(replace(cfg, download=False), test=False)[0].labels), None
    train, val = split_indices(n, cfg.val_fraction, cfg.split_seed, cfg.subset)
    return Survey(info, len(train), len(val), skipped)


def _on_disk(cfg: DataConfig) -> bool:
    """Whether the built-in dataset's files are in its root (else a loader would download them)."""
    if cfg.dataset == "tiny_imagenet":
        return (_tiny_folder(cfg.root) / "wnids.txt").is_file()
    return all(p.is_file() for p in _cifar10_files(Path(cfg.root))[1])


def split_indices(n: int, val_fraction: float, seed: int, subset: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Seeded sorted (train, val) indices of n images; `subset` keeps that many training images (and val in proportion)."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    val, train = perm[:n_val], perm[n_val:]
    if subset is not None:
        if subset > len(train):
            raise UserError(f"data.subset: {subset} is more than the {len(train)} training images left after the split")
        train = np.random.default_rng([seed, 1]).choice(train, size=subset, replace=False)
        # validation shrinks in proportion: 500 training images should not be judged on 5,000
        n_val = min(len(val), max(1, round(subset * val_fraction / (1 - val_fraction)))) if len(val) else 0
        val = np.random.default_rng([seed, 2]).choice(val, size=n_val, replace=False)
    return np.sort(train), np.sort(val)


def _load(cfg: DataConfig, test: bool) -> tuple[Split, Split | None]:
    """The training images (val is split from them) and, if asked, the test images; checks the layout."""
    if cfg.dataset == "cifar10":
        return _cifar10(cfg, train=True), (_cifar10(cfg, train=False) if test else None)
    if cfg.dataset == "synthetic":
        args = (cfg.synthetic_classes, cfg.synthetic_size, cfg.split_seed)
        images, labels = synthetic_images(cfg.synthetic_train, *args, stream=0)
        t_images, t_labels = synthetic_images(cfg.synthetic_test, *args, stream=1) if test else (None, None)
        return Split(labels, images=images), (Split(t_labels, images=t_images) if test else None)
    if cfg.dataset == "tiny_imagenet":
        folder = _tiny_dir(cfg)
        wnids = _tiny_wnids(folder)
        train = _tiny_train(folder, wnids)
        # The official val set is checked whenever present, so a bad one shows before a search.
        has_val = (folder / "val" / "val_annotations.txt").is_file()
        official_val = _tiny_val(folder, wnids) if test or has_val else None
        return train, (official_val if test else None)
    root = Path(cfg.root)
    train = _folder_split(root / "train")
    class_to_idx = {c: k for k, c in enumerate(find_classes(str(root / "train"))[0])}
    held_out = root / "test" if (root / "test").is_dir() or not (root / "val").is_dir() else root / "val"
    return train, (_folder_split(held_out, class_to_idx) if test else None)


def _seed_worker(worker_id: int) -> None:
    """Seed numpy, random and the albumentations pipeline of a DataLoader worker from torch's seed."""
    info = torch.utils.data.get_worker_info()
    seed = info.seed % 2**32  # torch derives it from the loader's generator (new each epoch) and the worker id
    np.random.seed(seed)
    random.seed(seed)
    if isinstance(info.dataset, ImageDataset) and isinstance(info.dataset.transform, augment.A.Compose):
        augment.reseed(info.dataset.transform, seed)


def loader_workers(requested: int | str) -> int:
    """DataLoader workers for data.num_workers: auto = the CPU cores this process may use, and never more.

    More workers than cores only compete for them, and PyTorch then warns twice per loader (three loaders
    per trial); we lower the value and say so once per process instead.
    """
    cores = cpu_cores()
    if requested == "auto":
        return cores
    if requested > cores:
        if requested not in _LOWERED:
            _LOWERED.add(requested)
            print(f"note: data.num_workers {requested} is more than the {cores} CPU cores here; using {cores}",
                  file=sys.stderr)
        return cores
    return int(requested)


_LOWERED: set[int] = set()  # num_workers values already reported as lowered (one line per process)


def drops_little(n: int, batch_size: int) -> bool:
    """Whether to drop the last partial training batch: only when it holds under DROP_AT_MOST of the images.

    Full batches keep BatchNorm statistics and step times steady, but with a subset (500 images, batch
    256) dropping the rest would throw away half of the data every epoch.
    """
    return n > batch_size and n % batch_size < DROP_AT_MOST * n


DROP_AT_MOST = 0.1  # share of the training images an epoch may leave out to keep every batch full


def _loader(ds: Dataset, batch_size: int, info: DatasetInfo, *, train: bool, seed: int, device: str,
            workers: int | str, collate: Callable | None = None) -> DataLoader:
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
    trainval, test_split = _load(cfg, test)
    trainval, test_split = _decoded(cfg, info, trainval, "train"), _decoded(cfg, info, test_split, "test")
    train_idx, val_idx = split_indices(len(trainval.labels), cfg.val_fraction, cfg.split_seed, cfg.subset)
    if train_on_val:
        train_idx, val_idx = np.sort(np.concatenate([train_idx, val_idx])), val_idx[:0]
    train_tf = augment.train_pipeline(steps, where, seed=seed)
    augment.check_batchable(train_tf, info.image_size, where)
    augment.reseed(train_tf, seed)  # the check drew from the generator
    eval_tf = augment.eval_pipeline()
    eval_bs = eval_batch_size or 2 * batch_size  # no activations kept for backward: larger batches fit
    opts = dict(train=False, seed=seed, device=device, workers=cfg.num_workers)
    val = _loader(ImageDataset(trainval, eval_tf, val_idx), eval_bs, info, **opts) if len(val_idx) else None
    test_loader = None if test_split is None else _loader(ImageDataset(test_split, eval_tf), eval_bs, info, **opts)
    train = _train_loader(cfg, trainval, train_idx, train_tf, batch_size, info, seed=seed, device=device, where=where)
    return Loaders(train, val, test_loader, info)


def _decoded(cfg: DataConfig, info: DatasetInfo, split: Split | None, name: str) -> Split | None:
    """An image-file split as a memory-mapped array decoded once (squared to the image size); others as they are."""
    if split is None or split.paths is None:
        return split
    prepare = augment.eval_pipeline(pre=augment.square(info.image_size))  # images of a folder may differ in size
    folder = Path(cfg.cache_dir) if cfg.cache_dir else decode_cache.default_dir()
    root = hashlib.sha256(str(Path(cfg.root).resolve()).encode()).hexdigest()[:8]  # roots share the cache folder
    images = decode_cache.decoded(split.paths, info.image_size, lambda p: prepare(image=read_image(p))["image"],
                                  folder, f"{cfg.dataset}-{name}-{root}", prepare="square")
    return Split(split.labels, images=images)


def _train_loader(cfg: DataConfig, split: Split, idx: np.ndarray, pipeline: augment.A.Compose, batch_size: int,
                  info: DatasetInfo, *, seed: int, device: str, where: str) -> DataLoader | batches.DeviceBatches:
    """Training batches: the policy's tail of batched twins on `device`, what precedes it in DataLoader workers."""
    opts = dict(train=True, seed=seed, device=device, workers=cfg.num_workers)
    if cfg.augment_on == "workers":
        return _loader(ImageDataset(split, pipeline, idx), batch_size, info, **opts)
    host, twins = batch_augment.split_policy(list(pipeline.transforms))
    if cfg.augment_on == "device" and host:
        raise UserError(f"data.augment_on: device, but {where}: {type(host[-1]).__name__} has no batched twin "
                        f"(twins: {', '.join(batch_augment.TWINS)}, as a tail of the policy); use auto or workers")
    on_device = batch_augment.BatchAugment(twins, info.mean, info.std)
    if not host and split.images is not None:  # gather whole batches from the array: no per-image Python
        ds: Dataset = batches.ArrayBatches(split.images, split.labels, idx)
        loader = _loader(ds, batch_size, info, **{**opts, "workers": 0}, collate=batches.as_is)
    else:
        worker_tf = augment.A.Compose(host)
        augment.reseed(worker_tf, seed)
        loader = _loader(ImageDataset(split, worker_tf, idx), batch_size, info, **opts, collate=batches.uint8_collate)
    return batches.DeviceBatches(loader, on_device, device)


def make_predict_loader(cfg: DataConfig, paths: list[Path], batch_size: int, *, device: str = "cpu") -> DataLoader:
    """A DataLoader over unlabeled image files (e.g. Tiny ImageNet's test set) giving (images, indices into paths)."""
    info = dataset_info(cfg)
    pre = augment.square(info.image_size) if cfg.dataset == "imagefolder" else []
    ds = ImageDataset(Split(np.arange(len(paths)), paths=list(paths)), augment.eval_pipeline(pre=pre))
    return _loader(ds, batch_size, info, train=False, seed=0, device=device, workers=cfg.num_workers)
