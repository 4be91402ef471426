"""Baselines: fixed hand designs from the YAML, enqueued first in a study and trained like its trials.

A baseline is an Optuna trial like any other (same objective, data, epochs, pruner reports, seed
rule), marked by the user attribute `baseline` = its name. Its architecture comes from the YAML,
not the sampler; its searched training keys are enqueued at the middle of their ranges (geometric
middle for log ranges, the first of a choice) unless the baseline fixes them, so the sampler learns
from it like from any trial. Baselines are never pruned and do not count towards `search.n_trials`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import optuna

from .config import Baseline, SearchConfig
from .distributions import Dist, Pick, from_trial, middle
from .errors import UserError, shown
from .space import SHAPE_KEYS, Rejected, Resolved, draw_train, resolve, train_space
from .trials import BASELINE, is_baseline

if TYPE_CHECKING:
    from .data.datasets import DatasetInfo


def resolve_baseline(cfg: SearchConfig, b: Baseline, pick: Pick, num_classes: int,
                     input_size: int) -> Resolved | Rejected:
    """The baseline's design: its keys over the space's fixed ones, the width solved to fill the whole budget; its
    training keys where it fixes them, else chosen by `pick`."""
    space = {k: v for k, v in cfg.space.items() if k not in (*SHAPE_KEYS, "widths") and not isinstance(v, Dist)}
    space.update(b.arch)  # the space's stages, blocks and widths are not the baseline's: only its own
    if isinstance(space.get("blocks"), list):
        space.setdefault("stages", len(space["blocks"]))
    if space.get("widths") is not None:
        space.setdefault("width", space["widths"][0])
    return resolve(cfg, pick, num_classes, input_size, space=space, train=b.train)


def resolve_trial(trial: optuna.Trial, cfg: SearchConfig, num_classes: int, input_size: int) -> Resolved | Rejected:
    """The design of a trial: drawn from the space, or that of the baseline it was enqueued as."""
    pick = from_trial(trial)
    if not is_baseline(trial):
        return resolve(cfg, pick, num_classes, input_size)
    name = trial.user_attrs[BASELINE]
    found = [b for b in cfg.baselines if b.name == name]
    if not found:
        return Rejected(f"baseline {name!r} is no longer in the YAML's baselines", train=draw_train(cfg, pick))
    return resolve_baseline(cfg, found[0], pick, num_classes, input_size)


def train_params(cfg: SearchConfig, b: Baseline) -> dict[str, Any]:
    """Optuna params to enqueue for the baseline's searched training keys (its own values where it fixes them)."""
    return {key: dist.stored(middle(key, dist) if b.train.get(key) is None else b.train[key])
            for key, dist in train_space(cfg).items() if isinstance(dist, Dist)}


def _unstorable(dist: Dist, value: Any) -> str | None:
    """What a searched key allows when Optuna could not store `value` as its parameter, else None.

    Optuna enqueues a value outside a range with a warning (a baseline may sit outside the space), but
    refuses one that its distribution cannot represent: not a choice, not positive on a log range, not
    a number on a range.
    """
    if dist.kind == "choice":
        stored = [dist.stored(c) for c in dist.choices]
        return None if dist.stored(value) in stored else f"one of {', '.join(map(str, dist.choices))}"
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not number or (dist.kind == "int" and not isinstance(value, int)):
        return f"a finite {dist.kind} (it is searched in [{dist.low}, {dist.high}])"
    if dist.log and value <= 0:
        return f"a positive number (it is searched on a log range [{dist.low}, {dist.high}])"
    return None


def _check_fixed_params(cfg: SearchConfig, b: Baseline) -> None:
    """Each searched key the baseline fixes holds a value Optuna can enqueue as that parameter."""
    dists = train_space(cfg)
    for key, value in b.train.items():
        dist = dists.get(key)
        allowed = _unstorable(dist, value) if isinstance(dist, Dist) else None
        if allowed is not None:
            raise UserError(f"{cfg.path}: baselines: {shown(b.name)}: train.{key} {shown(value)}: expected {allowed}")


def enqueue_baselines(study: optuna.Study, cfg: SearchConfig) -> list[str]:
    """Enqueue every baseline the study does not hold yet (call under the study lock); returns their names."""
    have = {t.user_attrs.get(BASELINE) for t in study.get_trials(deepcopy=False)}
    out = []
    for b in cfg.baselines:
        if b.name not in have:
            study.enqueue_trial(train_params(cfg, b), user_attrs={BASELINE: b.name})
            out.append(b.name)
    return out


def check_baselines(cfg: SearchConfig, info: DatasetInfo) -> None:
    """Every baseline builds on the dataset `info` describes, fits the budget and obeys the rules, with its training."""
    for b in cfg.baselines:
        _check_fixed_params(cfg, b)
        verdict = resolve_baseline(cfg, b, middle, info.num_classes, info.image_size)  # as train_params enqueues it
        if isinstance(verdict, Rejected):
            raise UserError(f"{cfg.path}: baselines: {shown(b.name)} cannot be trained: {verdict.reason}")
