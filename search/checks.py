"""The checks that need the dataset or a built model: one step, called by the commands that train (`run`, its dry
run, `retrain`) before anything is created. Loading a config (search.config) checks values only, so the review
commands (report, dashboard, predict) never need the images."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from blocks import ArchSpec, complexity
from blocks.resnet import ARENA_SLACK, arena_bound
from blocks.spec import SpecError

from .baselines import check_baselines
from .config import SearchConfig
from .data.augment import (
    check_batchable,
    count_transforms,
    policy_names,
    policy_steps,
    square,
    train_pipeline,
    validate_augment,
)
from .data.datasets import DatasetInfo, dataset_info, image_count, make_loaders, survey
from .distributions import Dist, candidates, lowest
from .errors import UserError
from .space import FILL_DEFAULT, MIN_WIDTH, SHAPE_KEYS, WIDTH_DEFAULT, Resolved, resolve

MAX_PEAK_CORNERS = 512  # combinations of categorical choices tried for the smallest peak activation memory
# Choices that can lower the peak in either direction (kernels cannot: 'same' padding keeps every map's size,
# and a smaller kernel, already the smallest corner's, never makes a larger PAD tensor for the arena bound)
PEAK_KEYS = ("stem", "strides", "widths", "block", "expansion", "separable", "shortcut", "pool", "head")


@dataclass(frozen=True)
class Checked:
    """What the check step found out about the dataset."""

    info: DatasetInfo
    n_train: int | None = None  # training images after the validation split (None: not counted)
    n_val: int | None = None  # validation images
    skipped: str | None = None  # what a dry run could not check (a built-in dataset not on disk)

    def counts(self) -> tuple[int, int]:
        """(training, validation) images, of a check that loaded or counted them."""
        if self.n_train is None or self.n_val is None:
            raise ValueError("the images were not counted (a check with images='none')")
        return self.n_train, self.n_val


def check_for_training(cfg: SearchConfig, images: Literal["load", "count", "none"] = "load") -> Checked:
    """Check what needs the dataset or a model: the augmentation builds, the space can meet its rules and budget
    and its baselines train on this dataset's shape; then, unless `images` is "none" (a retrain, whose loaders
    come later), the images load ("load": a search, which may download them) or are counted ("count": a dry
    run, nothing read or written), leave validation images, and every policy applies to an image of their size."""
    validate_augment(cfg.augment, f"{cfg.path}: augment")
    if cfg.retrain.augment is not None:
        validate_augment(cfg.retrain.augment, f"{cfg.path}: retrain.augment")
    info = dataset_info(cfg.data)  # once: for an image folder it scans the folder and opens an image
    check_space_meets_rules(cfg, info)
    check_baselines(cfg, info)
    if images == "none":
        return Checked(info)
    if images == "count":
        found = survey(cfg.data, info)
        checked = Checked(info, found.n_train, found.n_val, found.skipped)
    else:
        loaders = make_loaders(cfg.data, [], 2, seed=0, info=info)
        checked = Checked(info, image_count(loaders.train), image_count(loaders.val))
    if checked.n_val == 0:  # every trial would train, then fail on a NaN accuracy, and not count
        raise UserError(f"{cfg.path}: data.val_fraction {cfg.data.val_fraction} of {checked.n_train} "
                        f"training images leaves no validation images; a search needs them to rank trials")
    _check_policies_apply(cfg, info.image_size)
    return checked


def _check_policies_apply(cfg: SearchConfig, size: int) -> None:
    """Every augmentation policy the space may pick exists and applies to an image of `size` pixels."""
    names = policy_names(cfg.augment)
    for name in candidates(cfg.train.get("augment_policy")):
        if name is not None and name not in names:
            raise UserError(f"{cfg.path}: train.augment_policy: unknown policy {name!r} (have: {', '.join(names)})")
    pre = square(size) if cfg.data.dataset == "imagefolder" else []  # as make_loaders does
    for name in names:
        where = f"{cfg.path}: augment" + (f".policies.{name}" if isinstance(cfg.augment, dict) else "")
        check_batchable(train_pipeline(policy_steps(cfg.augment, name), where, pre=pre), size, where)


def check_space_meets_rules(cfg: SearchConfig, info: DatasetInfo) -> None:
    """Rules and budgets the space must be able to meet on the dataset `info` describes (the fixed values'
    rules are search.config.parse's): enough transforms, valid values, a smallest network under budget, progressive
    resizing that ends at the image size."""
    rules = cfg.rules
    if rules.min_augmentations is not None:
        for name in policy_names(cfg.augment):
            n = count_transforms(policy_steps(cfg.augment, name))
            if n < rules.min_augmentations:
                label = f"augment policy {name!r}" if isinstance(cfg.augment, dict) else "augment"
                raise UserError(f"{cfg.path}: {label} has {n} transforms, rules.min_augmentations is "
                                f"{rules.min_augmentations}")
        if cfg.retrain.augment is not None and count_transforms(cfg.retrain.augment) < rules.min_augmentations:
            raise UserError(f"{cfg.path}: retrain.augment has {count_transforms(cfg.retrain.augment)} transforms, "
                            f"rules.min_augmentations is {rules.min_augmentations}")
    _check_budget_reachable(cfg, _smallest_design(cfg, info))
    _check_progressive(cfg, info.image_size)


def _smallest_design(cfg: SearchConfig, info: DatasetInfo) -> ArchSpec:
    """The space's smallest network (every searched value at its lowest, a solved width at MIN_WIDTH), its values
    each checked valid on their own first."""
    narrowest = {**cfg.space, "width": MIN_WIDTH} if cfg.space.get("width", WIDTH_DEFAULT) == "solve" else cfg.space
    verdict = resolve(cfg, lowest, info.num_classes, info.image_size, space=narrowest)
    _check_space_values(cfg, verdict.as_dicts()[0])
    if isinstance(verdict, Resolved):
        return verdict.spec
    if verdict.design is None:
        raise UserError(f"{cfg.path}: space: the smallest architecture in the space is invalid: {verdict.reason}")
    return verdict.design.spec  # over a budget or against a rule: said next, in the budget's words


def _check_progressive(cfg: SearchConfig, size: int) -> None:
    """Every progressive-resizing schedule the space can pick ends at the dataset's image size."""
    for steps in candidates(cfg.train.get("progressive")):
        if steps:
            last = sorted(tuple(s) for s in steps)[-1][1]
            if last != size:
                raise UserError(f"{cfg.path}: train.progressive {[list(s) for s in steps]} ends at {last}px, not the "
                                f"dataset's image size {size}px (the last stage trains at the input size)")


def _check_space_values(cfg: SearchConfig, base: dict[str, Any]) -> None:
    """Every value a space key can take is valid on its own (an even kernel is a config error, not a rejection)."""
    for key, value in cfg.space.items():
        if key in SHAPE_KEYS or not isinstance(value, Dist):
            continue
        for v in candidates(value):
            try:
                ArchSpec.from_dict({**base, key: list(v) if isinstance(v, tuple) else v})
            except ValueError as e:
                if isinstance(e, SpecError) and e.key == key:  # others: the smallest network's, checked next
                    raise UserError(f"{cfg.path}: space.{key}: value {v!r} is invalid: {e}") from None


def _check_budget_reachable(cfg: SearchConfig, spec: ArchSpec) -> None:
    """Raise when even the smallest network `spec` of the space is over the params/FLOPs/peak-memory/arena budget."""
    cx, d = complexity(spec), spec.to_dict()
    label = f"stages={spec.stages}, blocks={list(spec.blocks)}, width={spec.width}"

    fill = max(candidates(cfg.space.get("fill", FILL_DEFAULT)))
    if cfg.space.get("width", WIDTH_DEFAULT) == "solve" and cx.params > fill * cfg.budget.params:  # all rejected
        raise UserError(f"{cfg.path}: space.fill: at most {fill:g} x budget.params = {fill * cfg.budget.params:,.0f} "
                        f"params, below the smallest network in the space ({cx.params:,} params at {label}); "
                        f"raise fill or the budget, or shrink the space")
    if cx.params > cfg.budget.params:
        raise UserError(f"{cfg.path}: budget.params {cfg.budget.params:,} is below the smallest network in the "
                        f"space ({cx.params:,} params at {label}); raise the budget or shrink the space")
    if cfg.budget.flops is not None and cx.flops > cfg.budget.flops:
        raise UserError(f"{cfg.path}: budget.flops {cfg.budget.flops:,} is below the smallest network in the "
                        f"space ({cx.flops:,} FLOPs at {label}); raise the budget or shrink the space")
    if cfg.budget.peak_activations is not None:
        peak, where = _smallest(cfg, d, lambda spec: complexity(spec).peak_activations)
        if peak > cfg.budget.peak_activations:
            raise UserError(f"{cfg.path}: budget.peak_activations {cfg.budget.peak_activations:,} elements is below "
                            f"the smallest peak of any design in the space ({peak:,} at {where}); raise the budget "
                            f"or shrink the space")
    if cfg.budget.arena is not None:
        bound, where = _smallest(cfg, d, arena_bound)
        if bound > cfg.budget.arena:
            raise UserError(f"{cfg.path}: budget.arena {cfg.budget.arena:,} bytes is below the smallest arena head "
                            f"bound of any design in the space ({bound:,} bytes, {ARENA_SLACK} x its int8 TFLite "
                            f"peak, at {where}); raise the budget or shrink the space")


def _smallest(cfg: SearchConfig, smallest: dict[str, Any], measure: Callable[[ArchSpec], int]) -> tuple[int, str]:
    """The least `measure` (a peak memory) of any design of the space, and the design's keys that get it.

    The peak is not smallest at the params corner (a strided stem or a separable conv can lower it), so
    every combination of the choices in PEAK_KEYS is tried at the smallest numbers `smallest`, up to
    MAX_PEAK_CORNERS. The corner `smallest` itself is valid (checked before).
    """
    keys = [k for k in PEAK_KEYS if isinstance(cfg.space.get(k), Dist) and cfg.space[k].kind == "choice"]
    best = (measure(ArchSpec.from_dict(smallest)), ", ".join(f"{k}={smallest[k]}" for k in ("stages", "blocks",
                                                                                              "width", *keys)))
    for values in itertools.islice(itertools.product(*(cfg.space[k].choices for k in keys)), MAX_PEAK_CORNERS):
        d = {**smallest, **{k: list(v) if isinstance(v, tuple) else v for k, v in zip(keys, values, strict=True)}}
        try:
            peak = measure(ArchSpec.from_dict(d))
        except ValueError:
            continue
        if peak < best[0]:
            best = (peak, ", ".join(f"{k}={d[k]}" for k in ("stages", "blocks", "width", *keys)))
    return best
