"""The schema of a search-space YAML: every section as a typed dataclass with its defaults, parsed from YAML and
`--set` and checked on its values alone (unknown keys are errors). What needs the dataset or a built model is
checked later, by search.checks, in the commands that train."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from blocks import ArchSpec

from .distributions import Dist, candidates, parse_value  # noqa: F401 (Dist: re-exported)
from .errors import UserError, clip, shown
from .yaml_load import MAX_BYTES, load_yaml

ARCH_KEYS = {f.name for f in dataclasses.fields(ArchSpec)}
SPACE_EXTRA = {"fill"}  # fraction of the params budget the solved width aims for
SAMPLERS = ("tpe", "random", "nsga2", "gp")
PRUNERS = ("median", "hyperband", "successive_halving", "none")
OBJECTIVES = ("val_acc", "params", "flops")
DATASETS = ("cifar10", "tiny_imagenet", "imagefolder", "synthetic")
AUGMENT_ON = ("auto", "device", "workers")  # auto: batched twins on the device, the rest in workers
# Image sides in pixels: under 8 a ResNet stem leaves nothing to learn from; 1024 is 4.5x ImageNet's 224
# (every decoded image is held in memory, so a side of 100,000 px fails long after the config is read).
IMAGE_SIZE_MIN, IMAGE_SIZE_MAX = 8, 1024
SYNTHETIC_BYTES_MAX = 512 << 20  # synthetic images of one split, uint8 (generating them takes ~12x this)
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "onecycle", "cyclic", "step", "constant")
AMP_CHOICES = ("auto", True, False)
# Keys that do not change what a trial means: how many, how long, where, how fast, how they are drawn.
NOT_IN_FINGERPRINT = {"search": ("n_trials", "timeout", "study_name", "max_rejections", "sampler", "seed"),
                      "data": ("root", "num_workers", "download")}
SEED_MAX = 2**32 - 1  # numpy (hence Optuna's samplers) takes seeds below 2**32
STUDY_NAME_MAX = 200  # characters; the name is a folder under --results-dir (most file systems allow 255 bytes)
LATENCY_BATCH_MAX = 1024  # the latency probe holds a whole batch's activations at once (LARGE_BATCH is 256)


@dataclass(frozen=True)
class DataConfig:
    """Which images to train on and how to load them (the YAML `data` section)."""

    dataset: str = "synthetic"  # cifar10 | tiny_imagenet | imagefolder | synthetic
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


def check_data_values(cfg: DataConfig, where: str = "data") -> None:
    """Raise a UserError for a data setting no loader can use (its values alone: no file is looked at)."""
    bad = [
        (cfg.dataset not in DATASETS, "dataset", f"is not one of {', '.join(DATASETS)}"),
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
    def from_dict(cls, d: dict[str, Any]) -> "TrainSpec":
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
    # elements; a YAML string with a unit ("64KiB") is bytes, parsed into elements at activation_bytes each.
    peak_activations: int | str | None = None
    activation_bytes: int = 1  # bytes per activation element: 1 = int8, as MLPerf Tiny and TFLite Micro deploy


@dataclass(frozen=True)
class RulesConfig:
    """Architectural rules enforced on every trial (the EIP Tiny ImageNet constraints, for example)."""

    head: str | None = None  # "conv" = no fully connected layer
    dropout: bool = True  # false = no dropout layer anywhere
    widening_1x1: bool = True  # false = no 1x1 conv that increases the channel count (shortcuts included)
    min_receptive_field: int | str | None = None  # pixels, or "input" = at least the input size
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
    """`python -m search retrain`: the final recipe, laid over each trial's searched training settings."""

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

    def fingerprint_sections(self) -> dict[str, str]:
        """A hash per section of what a trial means: its data, budget, rules, space, training, augmentation,
        baselines, objectives and pruning; not how many trials, how long, where (paths, storage) or how fast
        it runs. What the data is (its classes, their size) is search.study.identity's data identity."""
        search = {k: v for k, v in dataclasses.asdict(self.search).items() if k not in NOT_IN_FINGERPRINT["search"]}
        data = {k: v for k, v in dataclasses.asdict(self.data).items() if k not in NOT_IN_FINGERPRINT["data"]}
        # the peak budget is in elements by now; without one, the budget hashes as it did before it existed
        budget = {k: v for k, v in dataclasses.asdict(self.budget).items()
                  if k != "activation_bytes" and (k != "peak_activations" or v is not None)}
        parts = {"data": data, "budget": budget, "rules": dataclasses.asdict(self.rules),
                 "space": self.raw.get("space"), "train": self.raw.get("train"), "augment": self.raw.get("augment"),
                 "search": search, "baselines": [dataclasses.asdict(b) for b in self.baselines]}
        return {k: hashlib.sha256(json.dumps(v, sort_keys=True, default=str).encode()).hexdigest()[:16]
                for k, v in parts.items()}

    def fingerprint(self) -> str:
        """One hash of fingerprint_sections(): equal for every YAML whose trials mean the same."""
        return hashlib.sha256(json.dumps(self.fingerprint_sections(), sort_keys=True).encode()).hexdigest()[:16]


def _typed(cls: type, d: Any, where: str) -> Any:
    """Instantiate dataclass `cls` from mapping `d`, rejecting unknown keys and wrong types."""
    if d is None:
        d = {}
    if not isinstance(d, Mapping):
        raise UserError(f"{where}: expected a mapping, got {shown(d)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key, value in d.items():
        if key not in fields:
            raise UserError(f"{where}.{clip(str(key))}: unknown key (expected one of: {', '.join(fields)})")
        _check_type(value, hints[key], f"{where}.{key}")
    missing = [f.name for f in fields.values()
               if f.name not in d and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:  # `budget: {}` or `--set budget=null`: the tool's words, not dataclass's TypeError
        raise UserError(f"{where}.{missing[0]} is required")
    return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


def _yaml_types(hint: Any) -> tuple[type, ...] | None:
    """The YAML value types a field's type takes (a float takes an int, a tuple a list); None = any."""
    if hint is Any:
        return None
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        parts = [_yaml_types(a) for a in typing.get_args(hint)]
        return None if None in parts else tuple(t for p in parts for t in p)
    base = typing.get_origin(hint) or hint
    if base in (tuple, list):
        return (list,)
    if base is float:
        return (int, float)
    return (base,) if base in (bool, int, str, type(None)) else None


def _type_name(hint: Any) -> str:
    """A field's type as its annotation reads (`int | None`, `float`, `tuple[str, ...]`)."""
    return hint.__name__ if isinstance(hint, type) else str(hint)


def _check_type(value: Any, hint: Any, where: str) -> None:
    """Raise UserError when `value` does not fit the field's type."""
    allowed = _yaml_types(hint)
    if allowed is None:
        return
    if isinstance(value, bool) and bool not in allowed:  # YAML's true is an int to Python, not to a user
        raise UserError(f"{where}: expected {_type_name(hint)}, got {shown(value)}")
    if not isinstance(value, allowed):
        raise UserError(f"{where}: expected {_type_name(hint)}, got {shown(value)}")
    if isinstance(value, float) and not math.isfinite(value):  # a NaN budget would silently disable its check
        raise UserError(f"{where}: expected a finite number, got {value}")


def apply_overrides(raw: dict, overrides: list[str], where: str, parse: bool = True) -> dict:
    """Apply `--set a.b=value` overrides (value parsed as YAML unless `parse` is false) to the raw config."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set {shown(item)}: expected key.path=value")
        path, value = item.split("=", 1)
        node = raw
        keys = path.split(".")
        for key in keys[:-1]:
            if node.get(key) is None:  # an empty section (`data:` with nothing under it) takes keys
                node[key] = {}
            node = node[key]
            if not isinstance(node, dict):
                raise UserError(f"--set {shown(item)}: {shown(key)} in {where} is not a section")
        try:
            node[keys[-1]] = load_yaml(value) if parse else value
        except UserError as e:
            raise UserError(f"--set {shown(item)}: {e}") from None
        except yaml.YAMLError as e:
            raise UserError(f"--set {shown(item)}: the value is not valid YAML: "
                            f"{getattr(e, 'problem', None) or e}") from None
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None,
                strings: list[str] | None = None) -> SearchConfig:
    """Read, override and validate a search-space YAML; `strings` are overrides taken verbatim (names, URLs)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if path.stat().st_size > MAX_BYTES:
        raise UserError(f"{path}: {path.stat().st_size:,} bytes, over the {MAX_BYTES:,} a config may hold")
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"))
    except UserError as e:  # too deep, an alias bomb, a duplicate key: `line N: ...`
        raise UserError(f"{path}: {e}") from None
    except (UnicodeDecodeError, ValueError) as e:  # a binary file; yaml's ReaderError is a ValueError too
        raise UserError(f"{path}: not a YAML text file ({type(e).__name__})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{at} not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of sections at the top level")
    raw = apply_overrides(raw, overrides or [], str(path))
    raw = apply_overrides(raw, strings or [], str(path), parse=False)
    return parse_config(raw, str(path))


SECTIONS = ("data", "budget", "rules", "space", "train", "augment", "search", "storage", "retrain", "baselines")


def parse_config(raw: dict, path: str) -> SearchConfig:
    """Validate the raw YAML mapping into a SearchConfig (values only: no dataset is opened, no model built)."""
    for key in raw:
        if key not in SECTIONS:
            raise UserError(f"{path}: unknown section {shown(key)} (expected: {', '.join(SECTIONS)})")
    if "budget" not in raw:
        raise UserError(f"{path}: missing section 'budget' (at least budget.params)")
    data = _typed(DataConfig, raw.get("data"), f"{path}: data")
    if data.dataset not in DATASETS:
        raise UserError(f"{path}: data.dataset: unknown dataset {shown(data.dataset)} "
                        f"(expected: {', '.join(DATASETS)})")
    check_data_values(data, f"{path}: data")
    budget = _parse_budget(raw["budget"], path)
    rules = _typed(RulesConfig, raw.get("rules"), f"{path}: rules")
    if rules.head not in (None, "conv", "linear"):
        raise UserError(f"{path}: rules.head: expected conv or linear, got {shown(rules.head)}")
    if isinstance(rules.min_receptive_field, str) and rules.min_receptive_field != "input":
        raise UserError(f"{path}: rules.min_receptive_field: expected pixels or 'input', "
                        f"got {shown(rules.min_receptive_field)}")
    search = _typed(SearchSection, raw.get("search"), f"{path}: search")
    _check_search(search, path)
    space = _parse_space(raw.get("space"), path)
    train = _parse_section_values(raw.get("train"), {f.name for f in dataclasses.fields(TrainSpec)},
                                  f"{path}: train")
    _check_train(train, path)
    retrain = _parse_retrain(raw.get("retrain"), f"{path}: retrain")
    storage = raw.get("storage")
    if storage is not None and not isinstance(storage, str):
        raise UserError(f"{path}: storage: expected an SQLAlchemy URL string, got {shown(storage)}")
    augment = raw.get("augment") or []
    baselines = _parse_baselines(raw.get("baselines"), path)
    cfg = SearchConfig(path, data, budget, rules, space, train, augment, search, storage, retrain, raw, baselines)
    _check_fixed_rules(cfg)
    return cfg


def max_train_epochs(cfg: SearchConfig) -> int:
    """The most epochs a trial of this space can train (TrainSpec's default where train.epochs is not set)."""
    epochs = cfg.train.get("epochs", TrainSpec.epochs)
    if isinstance(epochs, Dist):
        return int(max(epochs.choices) if epochs.kind == "choice" else epochs.high)
    return int(epochs)


def _check_fixed_rules(cfg: SearchConfig) -> None:
    """Rules that fixed values of the YAML already break (those that need a model: search.checks)."""
    where, rules, space = cfg.path, cfg.rules, cfg.space
    if rules.head is not None and "head" in space and not isinstance(space["head"], Dist) \
            and space["head"] != rules.head:
        raise UserError(f"{where}: space.head {space['head']!r} breaks rules.head: {rules.head}")
    if not rules.dropout and isinstance(space.get("dropout"), (int, float)) and space["dropout"] > 0:
        raise UserError(f"{where}: space.dropout {space['dropout']} breaks rules.dropout: false")
    if rules.max_epochs is not None:
        if max_train_epochs(cfg) > rules.max_epochs:
            raise UserError(f"{where}: train.epochs {max_train_epochs(cfg)} > rules.max_epochs {rules.max_epochs}")
        if cfg.retrain.epochs > rules.max_epochs:
            raise UserError(f"{where}: retrain.epochs {cfg.retrain.epochs} > rules.max_epochs {rules.max_epochs}")


def _parse_budget(d: Any, path: str) -> BudgetConfig:
    """The `budget` section: typed, positive, its peak in elements."""
    budget = _typed(BudgetConfig, d, f"{path}: budget")
    if budget.params <= 0 or (budget.flops is not None and budget.flops <= 0):
        raise UserError(f"{path}: budget: params and flops must be positive")
    if (budget.latency_ms is not None and budget.latency_ms <= 0) or budget.latency_batch < 1:
        raise UserError(f"{path}: budget: latency_ms must be positive and latency_batch at least 1")
    if budget.latency_batch > LATENCY_BATCH_MAX:
        raise UserError(f"{path}: budget.latency_batch {budget.latency_batch}: expected at most {LATENCY_BATCH_MAX} "
                        f"(the probe holds the whole batch in memory)")
    return _parse_peak_budget(budget, path)


BYTE_UNITS = {"b": 1, "kb": 10**3, "kib": 2**10, "mb": 10**6, "mib": 2**20, "gb": 10**9, "gib": 2**30}


def _parse_peak_budget(budget: BudgetConfig, path: str) -> BudgetConfig:
    """budget.peak_activations as whole elements: a unit string ("64KiB") divided by activation_bytes."""
    value, per = budget.peak_activations, budget.activation_bytes
    where = f"{path}: budget.peak_activations"
    if per < 1:
        raise UserError(f"{path}: budget.activation_bytes: expected bytes per element >= 1 (1 = int8), got {per}")
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([a-zA-Z]+)\s*", value)
        if m is None or m.group(2).lower() not in BYTE_UNITS:
            raise UserError(f"{where}: {value!r} is not a positive number of elements or a byte size such as "
                            f"64KiB or 256kB (units: B, kB, KiB, MB, MiB, GB, GiB)")
        value = int(float(m.group(1)) * BYTE_UNITS[m.group(2).lower()] // per)
        if value <= 0:
            raise UserError(f"{where}: {budget.peak_activations!r} at budget.activation_bytes {per} is less than "
                            f"one element; expected a positive size")
    elif value is not None and value <= 0:
        raise UserError(f"{where}: expected a positive number of elements or a byte size such as 64KiB, got {value}")
    return dataclasses.replace(budget, peak_activations=value)


def _check_train(train: dict[str, Any], path: str) -> None:
    """Every value a train key can take has the right type and makes a valid TrainSpec."""
    where, hints = f"{path}: train", typing.get_type_hints(TrainSpec)
    base = {k: (v.choices[0] if v.kind == "choice" else v.low) if isinstance(v, Dist) else v
            for k, v in train.items()}
    candidates = {key: ([value] if not isinstance(value, Dist)
                        else list(value.choices) if value.kind == "choice" else [value.low, value.high])
                  for key, value in train.items()}
    for key, values in candidates.items():
        for c in values:
            if key == "progressive" and c is not None:
                ok = isinstance(c, (list, tuple)) and all(
                    isinstance(s, (list, tuple)) and len(s) == 2 and all(isinstance(v, int) for v in s) for s in c)
                if not ok:
                    raise UserError(f"{where}.progressive: expected [[epoch, size], ...] or null, got {shown(c)}")
            elif key != "progressive":
                _check_type(c, hints[key], f"{where}.{key}")
    try:
        TrainSpec.from_dict(base)
    except TrainSpecError as e:  # names its key (train.momentum ...)
        raise UserError(f"{path}: {e}") from None
    for key, values in candidates.items():
        for c in values:
            try:
                TrainSpec.from_dict({**base, key: c})
            except TrainSpecError as e:  # a message about another key: say which value of this one led there
                raise UserError(f"{path}: {e}" if key in e.keys else f"{where}.{key}: {e}") from None


def _parse_baselines(items: Any, path: str) -> tuple[Baseline, ...]:
    """The `baselines` list: each a `name`, ArchSpec keys (width may be `solve`) and an optional fixed `train`."""
    if items is None:
        return ()
    if not isinstance(items, list):
        raise UserError(f"{path}: baselines: expected a list of designs, got {shown(items)}")
    out, train_keys = [], {f.name for f in dataclasses.fields(TrainSpec)}
    for i, item in enumerate(items):
        where = f"{path}: baselines[{i}]"
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str) or not item["name"]:
            raise UserError(f"{where}: expected a mapping with a name and ArchSpec keys, got {shown(item)}")
        if item["name"] in {b.name for b in out}:
            raise UserError(f"{where}.name: {shown(item['name'])} is used twice")
        arch = {k: v for k, v in item.items() if k not in ("name", "train")}
        for key, value in arch.items():
            if key not in ARCH_KEYS or key in ("num_classes", "input_size"):
                raise UserError(f"{where}.{clip(str(key))}: unknown key (expected ArchSpec keys: "
                                f"{', '.join(sorted(ARCH_KEYS - {'num_classes', 'input_size'}))})")
            if isinstance(value, Mapping):
                raise UserError(f"{where}.{key}: a baseline is a fixed design, got the distribution {shown(dict(value))}")
        if isinstance(arch.get("width"), str) and arch["width"] != "solve":
            raise UserError(f"{where}.width: expected an int or 'solve', got {shown(arch['width'])}")
        train = item.get("train") or {}
        if not isinstance(train, Mapping) or any(k not in train_keys for k in train):
            raise UserError(f"{where}.train: expected fixed values of train keys ({', '.join(sorted(train_keys))}), "
                            f"got {shown(train)}")
        out.append(Baseline(item["name"], dict(arch), dict(train)))
    return tuple(out)


def _parse_retrain(d: Any, where: str) -> RetrainConfig:
    """The `retrain` section: typed, its recipe a valid TrainSpec (its augment list is built by search.checks)."""
    retrain = _typed(RetrainConfig, d, where)
    retrain = dataclasses.replace(retrain, augment=None if retrain.augment is None else list(retrain.augment))
    if retrain.epochs < 1 or retrain.seeds < 1 or retrain.lr_batch < 1:
        raise UserError(f"{where}: epochs, seeds and lr_batch must be at least 1")
    try:
        TrainSpec.from_dict(retrain.recipe())
    except TrainSpecError as e:
        raise UserError(f"{where}.{e.detail}") from None
    return retrain


def _check_search(s: SearchSection, path: str) -> None:
    """Validate the names in the search section."""
    if s.sampler not in SAMPLERS:
        raise UserError(f"{path}: search.sampler: unknown {shown(s.sampler)} (expected: {', '.join(SAMPLERS)})")
    if s.pruner not in PRUNERS:
        raise UserError(f"{path}: search.pruner: unknown {shown(s.pruner)} (expected: {', '.join(PRUNERS)})")
    if not s.objectives or s.objectives[0] != "val_acc" or any(o not in OBJECTIVES for o in s.objectives):
        raise UserError(f"{path}: search.objectives: expected [val_acc] optionally followed by params "
                        f"and/or flops, got {shown(list(s.objectives))}")
    checks = [
        (s.n_trials >= 1, "n_trials", ">= 1"),
        (s.timeout is None or s.timeout > 0, "timeout", "a positive number of seconds or null"),
        (0 <= s.seed <= SEED_MAX, "seed", f"an integer in [0, {SEED_MAX}] (numpy's seed range, used by the samplers)"),
        (s.max_rejections >= 1, "max_rejections", ">= 1"),
        (s.pruner_warmup_epochs >= 0, "pruner_warmup_epochs", ">= 0"),
        (s.pruner_startup_trials >= 0, "pruner_startup_trials", ">= 0"),
    ]
    for ok, key, expected in checks:
        if not ok:
            raise UserError(f"{path}: search.{key}: expected {expected}, got {shown(getattr(s, key))}")
    name = s.study_name
    if name is not None and (not name.strip() or "/" in name or "\\" in name or name in (".", "..")
                             or name.startswith(".") or len(name) > STUDY_NAME_MAX or not name.isprintable()):
        raise UserError(f"{path}: search.study_name {shown(name)}: expected a plain name of at most "
                        f"{STUDY_NAME_MAX} printable characters (it names a folder under --results-dir: no '/', "
                        f"'\\' or leading '.')")


def _parse_space(d: Any, path: str) -> dict[str, Any]:
    """The `space` section: ArchSpec keys (plus `fill`), each fixed or a Dist; width may be `solve`."""
    space = _parse_section_values(d, ARCH_KEYS | SPACE_EXTRA, f"{path}: space")
    for key in ("num_classes", "input_size"):
        if key in space:
            raise UserError(f"{path}: space.{key}: set by the dataset, remove it from the space")
    width = space.get("width", "solve")
    if isinstance(width, str) and width != "solve":
        raise UserError(f"{path}: space.width: expected an int, a distribution or 'solve', got {shown(width)}")
    space.setdefault("width", "solve")
    for key, ok, expected in SPACE_TYPES:
        if key in space and not all(ok(c) for c in candidates(space[key])):
            raise UserError(f"{path}: space.{key}: expected {expected}, got {shown(space[key])}")
    return space


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


SPACE_TYPES = (  # (key, test of each value it can take, what is expected)
    ("stages", lambda v: _int(v) and v >= 1, "an integer >= 1 or a distribution of them"),
    ("blocks", lambda v: (_int(v) and v >= 1) or (isinstance(v, (list, tuple)) and bool(v)
                                                  and all(_int(b) and b >= 1 for b in v)),
     "an integer >= 1 per stage, a list of them, or a distribution"),
    ("width", lambda v: v == "solve" or (_int(v) and v >= 1), "'solve', an integer >= 1 or a distribution"),
    ("fill", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1,
     "a fraction of the budget in (0, 1] or a distribution of them"),
)


def _parse_section_values(d: Any, known: set[str], where: str) -> dict[str, Any]:
    """A mapping of known keys to fixed values or Dists."""
    if d is None:
        return {}
    if not isinstance(d, Mapping):
        raise UserError(f"{where}: expected a mapping, got {shown(d)}")
    out = {}
    for key, value in d.items():
        if key not in known:
            raise UserError(f"{where}.{clip(str(key))}: unknown key (expected one of: {', '.join(sorted(known))})")
        out[key] = parse_value(value, f"{where}.{key}")
    return out
