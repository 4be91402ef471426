"""Miniature datasets in the official on-disk formats, written in milliseconds for offline tests."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR_LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class _Py2Str(bytes):
    """Bytes that pickle as a Python 2 `str`, as in the official CIFAR-10 files."""


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler has a per-type dispatch table
    """Writes _Py2Str as STRING opcodes: str under encoding='latin1', bytes under encoding='bytes'."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2str(self, obj: _Py2Str) -> None:
        """SHORT_BINSTRING / BINSTRING, the opcodes Python 2's cPickle wrote for str."""
        data = bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[_Py2Str] = save_py2str


def _dump_py2(obj: object, path: Path) -> None:
    """Pickle with protocol 2 and Python 2 strings, like the official cifar-10-python.tar.gz."""
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def _s(text: str) -> _Py2Str:
    """A Python 2 string."""
    return _Py2Str(text.encode("latin1"))


def make_cifar10(root: Path, n_train_per_batch: int = 20, n_test: int = 20, seed: int = 0) -> Path:
    """Write root/cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta); returns root."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    batches = [(f"data_batch_{i}", f"training batch {i} of 5", n_train_per_batch) for i in range(1, 6)]
    for name, label, n in batches + [("test_batch", "testing batch 1 of 1", n_test)]:
        labels = [int(y) for y in rng.integers(0, 10, size=n)]
        # Rows are 1024 red, then 1024 green, then 1024 blue values, each plane row-major.
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        filenames = [_s(f"{CIFAR_LABELS[y]}_s_{i:06d}.png") for i, y in enumerate(labels)]
        entry = {_s("batch_label"): _s(label), _s("labels"): labels, _s("data"): data, _s("filenames"): filenames}
        _dump_py2(entry, folder / name)
    meta = {_s("num_cases_per_batch"): 10000, _s("label_names"): [_s(n) for n in CIFAR_LABELS], _s("num_vis"): 3072}
    _dump_py2(meta, folder / "batches.meta")
    return Path(root)


def _image(rng: np.random.Generator, size: tuple[int, int], colour: np.ndarray) -> np.ndarray:
    """An RGB uint8 image (size = width, height) of one colour plus noise."""
    w, h = size
    noise = rng.integers(-40, 41, size=(h, w, 3))
    return np.clip(colour + noise, 0, 255).astype(np.uint8)


def make_tiny_imagenet(
    root: Path, n_classes: int = 3, n_train: int = 4, n_val: int = 2, n_test: int = 2, seed: int = 0
) -> Path:
    """Write root/tiny-imagenet-200/ in the official layout (64x64 JPEGs, one greyscale); returns root.

    n_train and n_val are per class (the official set has 500 and 50), n_test in all.
    """
    folder = Path(root) / "tiny-imagenet-200"
    rng = np.random.default_rng(seed)
    wnids = [f"n{1443537 + 1000 * k:08d}" for k in range(n_classes)]
    colours = rng.integers(40, 216, size=(n_classes, 3))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    (folder / "words.txt").write_text("".join(f"{w}\tclass {k}, thing {k}\n" for k, w in enumerate(wnids)))
    for k, wnid in enumerate(wnids):
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True, exist_ok=True)
        boxes = []
        for i in range(n_train):
            img = Image.fromarray(_image(rng, (64, 64), colours[k]))
            if k == 0 and i == 0:
                img = img.convert("L")  # the official set has greyscale JPEGs among RGB ones
            img.save(images / f"{wnid}_{i}.JPEG", quality=90)
            boxes.append(f"{wnid}_{i}.JPEG\t0\t0\t63\t63\n")
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(boxes))
    (folder / "val" / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n_val * n_classes):
        k = int(rng.integers(0, n_classes))
        img = Image.fromarray(_image(rng, (64, 64), colours[k]))
        if i == 0:
            img = img.convert("L")
        img.save(folder / "val" / "images" / f"val_{i}.JPEG", quality=90)
        lines.append(f"val_{i}.JPEG\t{wnids[k]}\t1\t2\t60\t61\n")
    (folder / "val" / "val_annotations.txt").write_text("".join(lines))
    (folder / "test" / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n_test):
        img = Image.fromarray(_image(rng, (64, 64), colours[i % n_classes]))
        img.save(folder / "test" / "images" / f"test_{i}.JPEG", quality=90)
    return Path(root)


def make_imagefolder(
    root: Path, classes: int = 3, per_class: int = 4, size: tuple[int, int] = (40, 30), vary: bool = False
) -> Path:
    """Write root/train/<class>/*.png and root/test/<class>/*.png (size = width, height); returns root.

    The test split has max(1, per_class // 2) images a class; `vary` makes every other image larger.
    """
    rng = np.random.default_rng(0)
    colours = rng.integers(40, 216, size=(classes, 3))
    for split, n in (("train", per_class), ("test", max(1, per_class // 2))):
        for k in range(classes):
            folder = Path(root) / split / f"class_{k}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                w, h = (size[0] + 13, size[1] + 7) if vary and i % 2 else size
                Image.fromarray(_image(rng, (w, h), colours[k])).save(folder / f"img_{i}.png")
    return Path(root)


def corrupt_one(path: Path) -> Path:
    """Overwrite a file with bytes no image or pickle reader accepts; returns the path."""
    Path(path).write_bytes(b"\x00garbage, not an image\xff" * 8)
    return Path(path)
