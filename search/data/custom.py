"""Your own dataset: a `module:function` named in the YAML (`data.dataset: mypkg.mydata:make`) or a DatasetSplits
given to the Python API, checked and read once into arrays that the built-in loaders, checks and fingerprint take.

The contract: `make(root: str)` (called with data.root) returns a DatasetSplits, or the tuple
`(train, val, test, class_names)`. Each split is a map-style dataset (`len(ds)`, `ds[i]`: a torch Dataset with no
transform, a list of pairs) whose items are `(image, label)`: the image a PIL image or an (H, W, 3) / (H, W) uint8
numpy array, the label an int in [0, len(class_names)). `val` may be None: data.val_fraction of train is held out
as for a built-in dataset. The search augments and normalises the images itself; images that are not squares of
the image size (data.image_size, else the first training image's shorter side) are resized and centre-cropped.

Naming a function in the YAML imports its module, and importing runs its code, as Hydra's `_target_` does: name
only modules you trust. A file path is refused: the module is found on sys.path (PYTHONPATH, installed packages).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from PIL import Image

from blocks.text import one_line
from search.config import GIVEN_DATASET, IMAGE_SIZE_MIN, DataConfig
from search.errors import UserError, shown

from . import augment


class ImageLabelDataset(Protocol):
    """A map-style dataset of (image, label) pairs (torch.utils.data.Dataset with a length, a list of pairs)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


@dataclass(frozen=True, eq=False)  # eq=False: hashed by identity, so a given object is read once per process
class DatasetSplits:
    """Your dataset as a search takes it: training, validation (None: split from train) and test images, and the
    name of each class (label k = class_names[k])."""

    train: ImageLabelDataset
    val: ImageLabelDataset | None
    test: ImageLabelDataset
    class_names: Sequence[str]


@dataclass(frozen=True)
class Arrays:
    """A user's dataset read into memory: (N, S, S, 3) uint8 images of each split, with what the search needs."""

    images: np.ndarray  # training images, then the given validation images (from val_start on), if any
    labels: np.ndarray  # int64, one per image
    val_start: int | None  # where the given validation images start (None: none given, split from train)
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]
    image_size: int
    mean: tuple[float, float, float]  # per channel of the training images, pixels in [0, 1]
    std: tuple[float, float, float]


def is_custom(cfg: DataConfig) -> bool:
    """Whether data.dataset is a user's: an import path or a given object."""
    return cfg.dataset == GIVEN_DATASET or ":" in cfg.dataset


def given_dataset(cfg: DataConfig, splits: DatasetSplits) -> DataConfig:
    """`cfg` taking its images from `splits` (data.dataset becomes "object")."""
    if not isinstance(splits, DatasetSplits):
        raise UserError(f"dataset: expected a search.DatasetSplits (or a module:function string), got "
                        f"{type(splits).__name__}")
    return dataclasses.replace(cfg, dataset=GIVEN_DATASET, splits=splits)


def arrays(cfg: DataConfig) -> Arrays:
    """The user's dataset of `cfg`, called or taken, checked and read (once per process for the same source)."""
    splits = cfg.splits if isinstance(cfg.splits, DatasetSplits) else None
    if cfg.dataset == GIVEN_DATASET and splits is None:
        raise UserError("data.dataset: object: this study's dataset was given to the Python API as an object; pass "
                        "it again from Python (search.retrain or search.export with dataset=splits)")
    return _read(cfg.dataset, cfg.root, cfg.image_size, splits)


@functools.lru_cache(maxsize=2)  # a search asks per trial; a retrain per seed run
def _read(dataset: str, root: str, image_size: int | None, splits: DatasetSplits | None) -> Arrays:
    """Call or take the dataset, check it and read every image into arrays."""
    where = "dataset" if splits is not None else f"data.dataset {dataset}"
    splits = splits if splits is not None else _called(dataset, root)
    names = _class_names(splits.class_names, where)
    if splits.train is None or splits.test is None:
        raise UserError(f"{where}: train and test must be datasets (only val may be None)")
    first = _image(_item(splits.train, 0, "train", where)[0], "train", 0, where)
    size = image_size or min(first.shape[:2])
    if size < IMAGE_SIZE_MIN:
        raise UserError(f"{where}: the first training image is {size} px on its shorter side, under the "
                        f"{IMAGE_SIZE_MIN} px minimum; set data.image_size")
    train = _split(splits.train, "train", size, len(names), where)
    val = None if splits.val is None else _split(splits.val, "val", size, len(names), where)
    test = _split(splits.test, "test", size, len(names), where)
    pixels = train[0].reshape(-1, 3) / 255.0
    mean = (float(pixels[:, 0].mean()), float(pixels[:, 1].mean()), float(pixels[:, 2].mean()))
    std = tuple(max(float(v), 1 / 255) for v in pixels.std(0))  # a constant channel: one grey level, not 0
    if val is None:
        return Arrays(*train, None, *test, names, size, mean, (std[0], std[1], std[2]))
    return Arrays(np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]]), len(train[1]), *test,
                  names, size, mean, (std[0], std[1], std[2]))


def _called(dataset: str, root: str) -> DatasetSplits:
    """Import `module:function`, call it with the data root and take what it returns."""
    module_name, _, name = dataset.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = f"no module named {exc.name!r}" if exc.name else one_line(exc)
        raise UserError(f"data.dataset {dataset}: cannot import {module_name}: {missing} (the module must be "
                        f"importable: installed, or its folder on PYTHONPATH)") from None
    except Exception as exc:  # noqa: BLE001 (any error in the user's module is theirs to fix, in one line)
        raise UserError(f"data.dataset {dataset}: importing {module_name} failed: {one_line(exc)}") from None
    fn: Callable[[str], Any] | None = getattr(module, name, None)
    if not callable(fn):
        raise UserError(f"data.dataset {dataset}: module {module_name} has no function {name!r}")
    try:
        out = fn(root)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"data.dataset {dataset}: {name}({root!r}) raised {type(exc).__name__}: "
                        f"{one_line(exc)}") from None
    if isinstance(out, DatasetSplits):
        return out
    if isinstance(out, tuple) and len(out) == 4:
        return DatasetSplits(*out)
    raise UserError(f"data.dataset {dataset}: {name}() returned {shown(type(out).__name__)}; expected a "
                    f"search.DatasetSplits or a tuple (train, val, test, class_names)")


def _class_names(names: Any, where: str) -> tuple[str, ...]:
    """The class names: at least two distinct strings."""
    if isinstance(names, str) or not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
        raise UserError(f"{where}: class_names must be a list of strings, got {shown(names)}")
    if len(names) < 2 or len(set(names)) != len(names):
        raise UserError(f"{where}: class_names must name at least 2 classes, each once, got {shown(list(names))}")
    return tuple(names)


def _item(ds: Any, i: int, split: str, where: str) -> tuple[Any, Any]:
    """Item i of a split as (image, label)."""
    try:
        item = ds[i]
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{where}: {split}[{i}] raised {type(exc).__name__}: {one_line(exc)}") from None
    if not isinstance(item, tuple | list) or len(item) != 2:
        raise UserError(f"{where}: {split}[{i}] is {shown(type(item).__name__)}; expected an (image, label) pair")
    return item[0], item[1]


def _image(image: Any, split: str, i: int, where: str) -> np.ndarray:
    """An item's image as an (H, W, 3) uint8 array."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray) and image.dtype == np.uint8:
        if image.ndim == 2:
            return np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim == 3 and image.shape[2] == 3:
            return image
    kind = f"{type(image).__name__} {getattr(image, 'dtype', '')} {tuple(getattr(image, 'shape', ()))}".strip()
    raise UserError(f"{where}: {split}[{i}]'s image is {kind}; expected a PIL image or an (H, W, 3) uint8 numpy "
                    f"array, with no transform (the search augments and normalises the images itself)")


def _split(ds: Any, split: str, size: int, classes: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Every item of a split as (images squared to `size` pixels, labels checked)."""
    try:
        n = len(ds)
    except TypeError:
        raise UserError(f"{where}: {split} has no length; expected a map-style dataset (len(ds), ds[i])") from None
    if n < 1:
        raise UserError(f"{where}: {split} holds no images")
    prepare = augment.eval_pipeline(pre=augment.square(size))
    images, labels = np.empty((n, size, size, 3), dtype=np.uint8), np.empty(n, dtype=np.int64)
    for i in range(n):
        raw, label = _item(ds, i, split, where)
        image = _image(raw, split, i, where)
        images[i] = image if image.shape[:2] == (size, size) else prepare(image=image)["image"]
        if isinstance(label, bool) or not isinstance(label, int | np.integer) and not _int_tensor(label):
            raise UserError(f"{where}: {split}[{i}]'s label is {shown(label)}; expected an int class index")
        if not 0 <= int(label) < classes:
            raise UserError(f"{where}: {split}[{i}]'s label {int(label)} is not in [0, {classes}) "
                            f"({classes} class_names)")
        labels[i] = int(label)
    return images, labels


def _int_tensor(label: Any) -> bool:
    """Whether `label` is a 0-d integer tensor (a torch Dataset's label)."""
    return getattr(label, "ndim", None) == 0 and "int" in str(getattr(label, "dtype", ""))
