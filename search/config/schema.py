"""Every section of a search-space YAML as a typed dataclass: each key, its default and unit, and the names a
value may take (search.config.parse reads the YAML into them)."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from blocks import ArchSpec

from ..distributions import candidates
from ..errors import UserError, shown
from ..names import check_path

ARCH_KEYS = {f.name for f in dataclasses.fields(ArchSpec)}
SPACE_EXTRA = {"fill"}  # fraction of the params budget the solved width aims for
SAMPLERS = ("tpe", "random", "nsga2", "gp")
PRUNERS = ("median", "hyperband", "successive_halving", "none")
OBJECTIVES = ("val_acc", "params", "flops")
DATASETS = ("cifar10", "tiny_imagenet", "imagefolder", "synthetic")
GIVEN_DATASET = "object"  # data.dataset of a study whose dataset was given to the Python API as an object
# A user's dataset function, `package.module:function`: dotted module names only, never a file path.
IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*", re.ASCII)
AUGMENT_ON = ("auto", "device", "workers")  # auto: batched twins on the device, the rest in workers
# Image sides in pixels: under 8 a ResNet stem leaves nothing to learn from; 1024 is 4.5x ImageNet's 224
# (every decoded image is held in memory, so a side of 100,000 px fails long after the config is read).
IMAGE_SIZE_MIN, IMAGE_SIZE_MAX = 8, 1024
SYNTHETIC_BYTES_MAX = 512 << 20  # synthetic images of one split, uint8 (generating them takes ~12x this)
OPTIMIZERS = ("sgd", "adam", "adamw")
# The most epochs a trial or retrain may ask for: catches a typo (1e12 gave an ETA of 31,600 years) and is
# far above real recipes (WRN and cutout: 200; MLPerf Tiny's ResNet-8 reference: 500).
MAX_EPOCHS = 10_000
SCHEDULES = ("cosine", "onecycle", "cyclic", "step", "constant")
AMP_CHOICES = ("auto", True, False)
SEED_MAX = 2**32 - 1  # numpy (hence Optuna's samplers) takes seeds below 2**32
STUDY_NAME_MAX = 200  # characters, and at most search.names.NAME_MAX (255) bytes: the name is a folder under --results-dir
LATENCY_BATCH_MAX = 1024  # the latency probe holds a whole batch's activations at once (LARGE_BATCH is 256)


@dataclass(frozen=True)
class DataConfig:
    """Which images to train on and how to load them (the YAML `data` section)."""

    dataset: str = "synthetic"  # cifar10 | tiny_imagenet | imagefolder | synthetic | module:function (your own)
    root: str = "data"  # folder holding (or receiving) the dataset
    download: bool = True  # download when missing (cifar10, tiny_imagenet)
    val_fraction: float = 0.1  # share of the training images held out for validation (seeded)
    split_seed: int = 0  # seed of the train/val split and of the synthetic images; same for all trials
    subset: int | None = None  # use only this many training images (after the val split, seeded); val shrinks in proportion
    num_workers: int | str = "auto"  # DataLoader worker processes: auto = this machine's CPU cores; 0 = main process
    image_size: int | None = None  # imagefolder: square side in pixels (None = first image's shorter side)
    synthetic_train: int = 2000  # synthetic: training images (before the val split)
    synthetic_test: int = 500
    synthetic_classes: int = 10
    synthetic_size: int = 32  # synthetic: image side in pixels
    augment_on: str = "auto"  # auto | device | workers: where batched twins of the policy's steps run
    cache_dir: str | None = None  # decoded-image cache of tiny_imagenet/imagefolder (None = a per-user folder)
    # A search.data.custom.DatasetSplits given to the Python API (data.dataset is then "object"); never in a YAML.
    splits: object | None = field(default=None, compare=False, repr=False, metadata={"python_only": True})


def dataset_known(name: str) -> bool:
    """Whether data.dataset names a built-in dataset, a `module:function` import path, or a given object."""
    return name in DATASETS or name == GIVEN_DATASET or IMPORT_PATH.fullmatch(name) is not None


DATASET_EXPECTED = (f"expected one of {', '.join(DATASETS)}, or module:function, the import path of your own "
                    f"dataset function (dotted module names such as mypkg.mydata:make, never a file path)")


def check_data_values(cfg: DataConfig, where: str = "data") -> None:
    """Raise a UserError for a data setting no loader can use (its values alone: no file is looked at)."""
    bad = [
        (not isinstance(cfg.dataset, str) or not dataset_known(cfg.dataset), "dataset", f"is not known: {DATASET_EXPECTED}"),
        (not 0.0 <= cfg.val_fraction < 1.0, "val_fraction", "must be in [0, 1)"),
        (cfg.subset is not None and cfg.subset < 1, "subset", "must be at least 1 (or null for all images)"),
        (cfg.num_workers != "auto" and not (type(cfg.num_workers) is int and cfg.num_workers >= 0),
         "num_workers", "must be auto or a number of processes, 0 or more"),
        (cfg.image_size is not None and not IMAGE_SIZE_MIN <= cfg.image_size <= IMAGE_SIZE_MAX, "image_size",
         f"must be in [{IMAGE_SIZE_MIN}, {IMAGE_SIZE_MAX}] pixels (or null for the first image's shorter side)"),
        (cfg.synthetic_train < 1, "synthetic_train", "must be at least 1"),
        (cfg.synthetic_test < 1, "synthetic_test", "must be at least 1"),
        (cfg.synthetic_classes < 2, "synthetic_classes", "must be at least 2"),
        (not IMAGE_SIZE_MIN <= cfg.synthetic_size <= IMAGE_SIZE_MAX, "synthetic_size",
         f"must be in [{IMAGE_SIZE_MIN}, {IMAGE_SIZE_MAX}] pixels"),
        (max(cfg.synthetic_train, cfg.synthetic_test) * cfg.synthetic_size**2 * 3 > SYNTHETIC_BYTES_MAX,
         "synthetic_train", f"images of {cfg.synthetic_size} px (and synthetic_test's) must fit in "
                            f"{SYNTHETIC_BYTES_MAX >> 20} MiB per split"),
        (cfg.augment_on not in AUGMENT_ON, "augment_on", f"is not one of {', '.join(AUGMENT_ON)}"),
    ]
    for failed, key, expected in bad:
        if failed:
            raise UserError(f"{where}.{key}: {shown(getattr(cfg, key))} {expected}")
    for key in ("root", "cache_dir"):  # folders: each name in them within the file system's bytes
        if isinstance(getattr(cfg, key), str):
            check_path(getattr(cfg, key), f"{where}.{key}")


class TrainSpecError(ValueError):
    """A training value TrainSpec refuses; `keys` are the train keys its message names, first one first."""

    def __init__(self, detail: str, keys: tuple[str, ...] = ()) -> None:
        super().__init__(f"train.{detail}" if keys else detail)
        self.detail, self.keys = detail, keys  # detail: the message after "train." (retrain's keys say it too)


@dataclass(frozen=True)
class TrainSpec:
    """Every training setting of one trial, resolved (nothing searched is left in here)."""

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9  # SGD momentum under every schedule (beta1 for adam/adamw stays at its default)
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine | onecycle | cyclic (triangular, last cycle to 0) | step | constant
    warmup_epochs: float = 0.0  # linear warm-up before the cosine/step schedule, in epochs
    cycles: int = 2  # cyclic: number of triangular cycles over the run
    label_smoothing: float = 0.0
    progressive: tuple | None = None  # [[epoch, size], ...]: train at `size` px from `epoch` on (e.g. 16->32->64)
    amp: bool | str = "auto"  # bf16 autocast + channels_last: auto = where the device runs bf16 natively
    compile: bool = False  # torch.compile the model before training (compile time is recorded)
    augment_policy: str | None = None  # name of the augmentation policy, when the YAML has several
    ema: float | None = None  # decay per step of a weight EMA (e.g. 0.999); validation uses the EMA weights
    tta: bool = False  # validate on the mean softmax of each image and its horizontal mirror

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainSpec:
        """Build from a plain dict, rejecting unknown keys and values (a TrainSpecError naming the key)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise TrainSpecError(f"unknown train key {unknown[0]!r}")
        kw = dict(d)
        if kw.get("progressive") is not None:
            kw["progressive"] = tuple(tuple(int(v) for v in step) for step in kw["progressive"])
        spec = cls(**kw)
        spec._check()
        return spec

    def _check(self) -> None:
        """Raise a TrainSpecError for a value torch.optim or nn.CrossEntropyLoss would fail on mid-trial."""
        names = [("optimizer", OPTIMIZERS, ", ".join(OPTIMIZERS)), ("schedule", SCHEDULES, ", ".join(SCHEDULES)),
                 ("amp", AMP_CHOICES, "auto, true or false")]
        for key, allowed, expected in names:
            if getattr(self, key) not in allowed:
                word = "expected" if key == "amp" else "expected one of"
                raise TrainSpecError(f"{key} {getattr(self, key)!r}: {word} {expected}", (key,))
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise TrainSpecError("epochs, train.batch_size and train.lr must be positive",
                                 ("epochs", "batch_size", "lr"))
        if self.epochs > MAX_EPOCHS:
            raise TrainSpecError(f"epochs {self.epochs:,}: at most {MAX_EPOCHS:,}", ("epochs",))
        if self.ema is not None and not 0.0 < self.ema < 1.0:
            raise TrainSpecError(f"ema {self.ema!r}: expected a decay per step in (0, 1), or null for none", ("ema",))
        ranges = [
            (0.0 <= self.momentum < 1.0, "momentum", "in [0, 1)"),
            (0.0 <= self.label_smoothing < 1.0, "label_smoothing", "in [0, 1)"),
            (self.weight_decay >= 0.0, "weight_decay", ">= 0"),
            (0.0 <= self.warmup_epochs < self.epochs, "warmup_epochs", "in [0, epochs)"),
            (self.cycles >= 1, "cycles", ">= 1"),
            (math.isfinite(self.lr), "lr", "finite"),
        ]
        for ok, key, expected in ranges:
            if not ok:
                raise TrainSpecError(f"{key} {getattr(self, key)!r}: expected {expected}", (key,))
        if any(e < 0 or size < 1 for e, size in self.progressive or ()):
            raise TrainSpecError(f"progressive {self.to_dict()['progressive']}: expected [[epoch >= 0, size >= 1], ...]",
                                 ("progressive",))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        d = dataclasses.asdict(self)
        if d["progressive"] is not None:
            d["progressive"] = [list(step) for step in d["progressive"]]
        return d

    def size_at(self, epoch: int, native: int) -> int:
        """Training image size (px) at 0-based `epoch` under progressive resizing."""
        size = native
        for start, s in sorted(self.progressive or ()):
            if epoch >= start:
                size = s
        return size


@dataclass(frozen=True)
class BudgetConfig:
    """Hard limits: no trial above them is built or trained."""

    params: int  # parameters, counted exactly
    flops: int | None = None  # fvcore FLOPs (one multiply-add = one FLOP) at batch 1
    latency_ms: float | None = None  # measured inference ms per forward pass at latency_batch, on the trial's device
    latency_batch: int = 1  # batch size of the latency budget's probe
    # Peak activation memory at batch 1 (blocks' count: tensors live at once, BN folded, ReLU in place), in
    # elements; a YAML string with a unit ("64KiB") is bytes, parsed into elements at activation_bytes each
    # (metadata "yaml": the types the YAML may give, where they differ from the parsed field's).
    peak_activations: int | None = field(default=None, metadata={"yaml": int | str | None})
    activation_bytes: int = 1  # bytes per activation element: 1 = int8, as MLPerf Tiny and TFLite Micro deploy
    # TFLite Micro's arena head as int8 in bytes (a unit string such as "100KiB" too): a design is admitted when
    # blocks.resnet.arena_bound (ARENA_SLACK x tflite_peak) fits; always one byte an element, activation_bytes aside
    arena: int | None = field(default=None, metadata={"yaml": int | str | None})


@dataclass(frozen=True)
class RulesConfig:
    """Architectural rules enforced on every trial (the EIP Tiny ImageNet constraints, for example)."""

    head: str | None = None  # "conv" = no fully connected layer
    dropout: bool = True  # false = no dropout layer anywhere
    widening_1x1: bool = True  # false = no 1x1 conv that increases the channel count (shortcuts included)
    min_receptive_field: int | Literal["input"] | None = field(  # pixels, or "input" = at least the input size
        default=None, metadata={"yaml": int | str | None})
    max_epochs: int | None = None  # upper bound on search and retrain epochs
    min_augmentations: int | None = None  # each augmentation policy needs at least this many transforms


@dataclass(frozen=True)
class SearchSection:
    """How Optuna searches."""

    n_trials: int = 20  # target number of finished trials in the study (a rerun runs what is left)
    timeout: float | None = None  # seconds for this invocation
    sampler: str = "tpe"  # tpe | random | nsga2 | gp
    pruner: str = "median"  # median | hyperband | successive_halving | none
    pruner_warmup_epochs: int = 1  # epochs before a trial may be pruned
    pruner_startup_trials: int = 2  # trials that are never pruned, to get a baseline
    objectives: tuple[str, ...] = ("val_acc",)  # val_acc first; params/flops to minimise for a Pareto front
    seed: int = 0  # sampler seed; trial k trains with seed + k
    study_name: str | None = None  # default: the YAML file's stem
    max_rejections: int = 200  # consecutive infeasible samples before giving up on the space


@dataclass(frozen=True)
class RetrainConfig:
    """`resnet-search retrain`: the final recipe, laid over each trial's searched training settings."""

    # A search ranks designs by 15-epoch validation, which rewards fast convergence; the final model gets
    # the settings of published 200-epoch CIFAR ResNet runs instead. null keeps the trial's value.
    epochs: int = 200  # WRN (Zagoruyko & Komodakis 2016) and cutout (DeVries & Taylor 2017): 200 epochs
    seeds: int = 1  # independent runs per trial (mean and std of the test numbers)
    train_on_val: bool = True  # the final model learns from every labelled image; the test set stays unseen
    optimizer: str | None = "sgd"  # SGD, Nesterov momentum (the trial's train.momentum): both sources above
    lr: float | None = 0.1  # peak lr per lr_batch images: 0.1 at 128 (He et al. 2016; WRN; cutout) ...
    lr_batch: int = 128  # ... scaled linearly to the trial's batch size (Goyal et al. 2017): 0.2 at 256
    weight_decay: float | None = 5.0e-4  # WRN and cutout at 200 epochs (the search samples 1e-4..1e-3)
    schedule: str | None = "cosine"  # cosine to 0 (Loshchilov & Hutter 2017, SGDR without restarts)
    warmup_epochs: float | None = 5.0  # linear warm-up at the peak lr's start (Goyal et al. 2017: 5 epochs)
    label_smoothing: float | None = None  # replaces the trial's train.label_smoothing; null keeps it
    amp: bool | str | None = None  # replaces the trial's train.amp (false: fp32 on every machine); null keeps it
    ema: float | None = 0.999  # weight EMA decay per step, tested on the EMA weights; null = none
    tta: bool = True  # also report test accuracy on the mean softmax of each image and its mirror
    augment: list | None = None  # transforms replacing the trial's augmentation policy; null keeps it

    def recipe(self) -> dict[str, Any]:
        """The TrainSpec keys this section sets (lr still per lr_batch images)."""
        keys = ("optimizer", "lr", "weight_decay", "schedule", "warmup_epochs", "label_smoothing", "amp")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None} | {"ema": self.ema,
                                                                                       "tta": self.tta}


@dataclass(frozen=True)
class Baseline:
    """A fixed hand design trained first in the study, with the trials' training (see search/baselines.py)."""

    name: str
    arch: dict[str, Any]  # ArchSpec keys; `width: solve` (the default) fills the budget like a trial
    train: dict[str, Any]  # fixed train values; searched keys not given take the middle of their range


@dataclass(frozen=True)
class SearchConfig:
    """The whole validated YAML."""

    path: str
    data: DataConfig
    budget: BudgetConfig
    rules: RulesConfig
    space: dict[str, Any]  # ArchSpec key (or "fill") -> fixed value or Dist
    train: dict[str, Any]  # TrainSpec key -> fixed value or Dist
    augment: list | dict  # albumentations steps, or {"policies": {name: [steps]}} (built by search.data.augment)
    search: SearchSection
    storage: str | None = None
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    raw: dict = field(default_factory=dict)  # the resolved YAML, as saved next to the study
    baselines: tuple[Baseline, ...] = ()  # hand designs trained before the searched trials

    @property
    def study_name(self) -> str:
        """The study's name: search.study_name or the YAML file's stem."""
        return self.search.study_name or Path(self.path).stem


def max_train_epochs(cfg: SearchConfig) -> int:
    """The most epochs a trial of this space can train (TrainSpec's default where train.epochs is not set)."""
    return int(max(candidates(cfg.train.get("epochs", TrainSpec.epochs))))
