"""Each dataset's images and labels as they lie on disk, their layout checked (CIFAR-10's pickles read
without running code, Tiny ImageNet's folders, an ImageFolder tree), or generated (synthetic); downloads when allowed."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from torchvision.datasets import CIFAR10
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset
from torchvision.datasets.utils import download_and_extract_archive

from blocks.text import one_line
from search.config import DataConfig
from search.errors import UserError

from . import cifar_files, custom

OFFICIAL_TRAIN = {"cifar10": 50_000, "tiny_imagenet": 100_000}  # training images of the official releases
MAX_PIXELS = 50_000_000  # largest image read (about 8,700 x 5,800): decoding peaks near 18 bytes a pixel
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR_DIR, TINY_DIR = "cifar-10-batches-py", "tiny-imagenet-200"
TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"  # of the official zip (248,100,043 bytes)


@dataclass(frozen=True)
class Split:
    """Images of one split, in memory ((N, H, W, 3) uint8) or as files, with int64 labels."""

    labels: np.ndarray
    images: np.ndarray | None = None
    paths: list[Path] | None = None
    val_start: int | None = None  # images from here on are the dataset's own validation split (None: split it)

    def read(self, i: int) -> np.ndarray:
        """Image i as an RGB HWC uint8 array."""
        if self.images is not None:
            return self.images[i]
        if self.paths is None:
            raise ValueError("a Split holds its images or their paths")
        return read_image(self.paths[i])


def read_image(path: Path | str) -> np.ndarray:
    """An image file as an RGB HWC uint8 array (greyscale, palette, CMYK... converted); at most MAX_PIXELS."""
    try:
        with open_image(path) as img:
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


def open_image(path: Path | str) -> Image.Image:
    """PIL's lazy open (the header only), without its DecompressionBombWarning: MAX_PIXELS is checked instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(path)


class CIFAR10Files(CIFAR10):
    """torchvision's CIFAR10 file list and archive (url, md5), without the md5 of each batch; it never reads them."""

    # torchvision md5-hashes all six batches (170 MB) on every construction, and miniature test
    # fixtures in the official format cannot have the official sums. The downloaded archive is
    # still md5-checked (tgz_md5); the batches are read by cifar_files, which runs nothing in them.
    train_list = [[name, None] for name, _ in CIFAR10.train_list]
    test_list = [[name, None] for name, _ in CIFAR10.test_list]
    meta = {**CIFAR10.meta, "md5": None}


def _cifar10(cfg: DataConfig, train: bool) -> Split:
    """One official CIFAR-10 split, downloaded by torchvision when missing and allowed, read by cifar_files."""
    root, files = _cifar10_files(Path(cfg.root))
    folder = root / CIFAR_DIR
    if not all(p.is_file() for p in files):
        if not cfg.download:
            hint = "set data.download: true or pass --data-root"
            raise UserError(f"cifar10 not found in '{cfg.root}' (expected {folder}/); {hint}")
        try:
            download_and_extract_archive(CIFAR10Files.url, str(root), filename=CIFAR10Files.filename,
                                         md5=CIFAR10Files.tgz_md5)
        except Exception as exc:  # URLError, OSError, RuntimeError (md5) ...
            raise UserError(f"cannot download cifar10 into '{root}': {one_line(exc)}") from None
    cifar_files.check_meta(folder / CIFAR10Files.meta["filename"])
    names = [n for n, _ in (CIFAR10Files.train_list if train else CIFAR10Files.test_list)]
    batches = [cifar_files.read_batch(folder / n) for n in names]
    # As torchvision lays them out: rows of 3 planes of 32 x 32, turned into (N, 32, 32, 3) images.
    images = np.vstack([data for data, _ in batches]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return Split(np.asarray([y for _, labels in batches for y in labels], dtype=np.int64), images=images)


def _cifar10_files(root: Path) -> tuple[Path, list[Path]]:
    """The root torchvision expects (the batches folder's parent) and the CIFAR-10 files under it."""
    if root.name == CIFAR_DIR and (root / "batches.meta").is_file():
        root = root.parent  # --data-root pointed at the batches folder itself
    names = [n for n, _ in CIFAR10Files.train_list + CIFAR10Files.test_list] + ["batches.meta"]
    return root, [root / CIFAR_DIR / n for n in names]


def tiny_folder(root: str | Path) -> Path:
    """The tiny-imagenet-200 folder: root itself when it holds wnids.txt, else root/tiny-imagenet-200."""
    return Path(root) if (Path(root) / "wnids.txt").is_file() else Path(root) / TINY_DIR


def _tiny_dir(cfg: DataConfig) -> Path:
    """The tiny-imagenet-200 folder, downloaded into the root when missing and allowed."""
    root, folder = Path(cfg.root), tiny_folder(cfg.root)
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


def images_in(folder: Path) -> list[Path]:
    """Image files directly inside a folder, sorted by name."""
    return sorted(Path(e.path) for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(IMG_EXTENSIONS))


def tiny_wnids(folder: Path) -> list[str]:
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
        if not (files := images_in(images)):
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
    present = {p.name for p in images_in(images)} if images.is_dir() else set()
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
    images = tiny_folder(root) / "test" / "images"
    if not images.is_dir() or not (files := images_in(images)):
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
    protos = np.stack([np.asarray(Image.fromarray(g).resize((side, side), Image.Resampling.BICUBIC)) for g in grids])
    rng = np.random.default_rng([seed, stream])
    labels = rng.permutation(np.arange(n) % classes).astype(np.int64)
    dy, dx = rng.integers(0, 2 * pad + 1, size=(2, n))
    contrast = rng.uniform(0.6, 1.2, size=(n, 1, 1, 1))
    crops = np.stack([protos[y, a : a + size, b : b + size] for y, a, b in zip(labels, dy, dx, strict=True)])
    images = 128 + (crops.astype(np.float32) - 128) * contrast + rng.normal(0, 40, size=crops.shape)
    return np.clip(images, 0, 255).astype(np.uint8), labels


def on_disk(cfg: DataConfig) -> bool:
    """Whether the built-in dataset's files are in its root (else a loader would download them)."""
    if cfg.dataset == "tiny_imagenet":
        return (tiny_folder(cfg.root) / "wnids.txt").is_file()
    return all(p.is_file() for p in _cifar10_files(Path(cfg.root))[1])


def load_splits(cfg: DataConfig, test: bool) -> tuple[Split, Split | None]:
    """The training images (val is split from them) and, if asked, the test images; checks the layout."""
    if cfg.dataset == "cifar10":
        return _cifar10(cfg, train=True), (_cifar10(cfg, train=False) if test else None)
    if custom.is_custom(cfg):
        read = custom.arrays(cfg)
        trainval = Split(read.labels, images=read.images, val_start=read.val_start)
        return trainval, (Split(read.test_labels, images=read.test_images) if test else None)
    if cfg.dataset == "synthetic":
        args = (cfg.synthetic_classes, cfg.synthetic_size, cfg.split_seed)
        images, labels = synthetic_images(cfg.synthetic_train, *args, stream=0)
        if not test:
            return Split(labels, images=images), None
        t_images, t_labels = synthetic_images(cfg.synthetic_test, *args, stream=1)
        return Split(labels, images=images), Split(t_labels, images=t_images)
    if cfg.dataset == "tiny_imagenet":
        folder = _tiny_dir(cfg)
        wnids = tiny_wnids(folder)
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
