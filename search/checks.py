"""The checks that need the dataset or a built model: one step, called by the commands that train (`run`, its dry
run, `retrain`) before anything is created. Loading a config (search.config) checks values only, so the review
commands (report, dashboard, predict) never need the images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .baselines import check_baselines
from .config import SearchConfig
from .data.augment import check_batchable, policy_names, policy_steps, square, train_pipeline, validate_augment
from .data.datasets import DatasetInfo, dataset_info, image_count, make_loaders, survey
from .distributions import candidates
from .errors import UserError
from .rules import check_space_meets_rules


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
