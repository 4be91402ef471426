"""Baselines: fixed hand designs from the YAML, enqueued first in a study and trained like its trials.

A baseline is an Optuna trial like any other (same objective, data, epochs, pruner reports, seed
rule), marked by the user attribute `baseline` = its name. Its architecture comes from the YAML,
not the sampler; its searched training keys are enqueued at the middle of their ranges (geometric
middle for log ranges, the first of a choice) unless the baseline fixes them, so the sampler learns
from it like from any trial. Baselines are never pruned and do not count towards `search.n_trials`.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import BaseTrial

from blocks import ArchSpec, complexity

from .config import Baseline, SearchConfig, TrainSpec
from .data.augment import policy_names
from .distributions import Dist
from .errors import UserError, shown
from .rules import arch_violation, train_violation
from .space import MIN_WIDTH, fill_widths, sample_train
from .trials import BASELINE

if TYPE_CHECKING:
    from .data.datasets import DatasetInfo


def baseline_arch(cfg: SearchConfig, b: Baseline, num_classes: int, input_size: int) -> tuple[dict, str | None]:
    """The baseline's ArchSpec dict (fixed space keys as defaults, width solved to fill the budget) and a reason."""
    d: dict[str, Any] = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.space.items()
                         if k not in ("stages", "blocks", "width", "widths", "fill") and not isinstance(v, Dist)}
    d.setdefault("head", cfg.rules.head or "linear")
    d.update(b.arch)
    blocks = d.get("blocks", 2)
    d.setdefault("stages", len(blocks) if isinstance(blocks, list) else 4)
    d["num_classes"], d["input_size"] = num_classes, input_size
    if d.get("width", "solve") != "solve" or d.get("widths") is not None:
        d.setdefault("width", d["widths"][0] if d.get("widths") else MIN_WIDTH)
        return d, None
    try:
        ArchSpec.from_dict({**d, "width": MIN_WIDTH})
    except ValueError as e:
        return d, str(e)
    solved = fill_widths(d, cfg.budget.params, cfg.budget.flops, cfg.rules.widening_1x1, cfg.budget.peak_activations,
                         cfg.budget.arena)
    if solved is None:
        return d, f"even width {MIN_WIDTH} is over the budget for baseline {b.name!r}"
    return solved, None


def _middle(dist: Dist) -> Any:
    """The value a baseline trains with for a searched key: the middle of a range, the first choice."""
    if dist.kind == "choice":
        if any(isinstance(c, (tuple, list, dict)) for c in dist.choices):
            return json.dumps(dist.choices[0])  # list-valued choices are stored as JSON (space.suggest)
        return dist.choices[0]
    low, high = dist.bounds()
    mid = math.sqrt(low * high) if dist.log else (low + high) / 2
    if dist.step:
        mid = low + round((mid - low) / dist.step) * dist.step
    return int(round(mid)) if dist.kind == "int" else float(mid)


def train_params(cfg: SearchConfig, b: Baseline) -> dict[str, Any]:
    """Optuna params to enqueue for the baseline's searched training keys (its own values where it fixes them)."""
    out = {}
    for key, value in cfg.train.items():
        if isinstance(value, Dist):
            fixed = b.train.get(key)
            if fixed is None:
                out[key] = _middle(value)
            elif value.kind == "choice" and any(isinstance(c, (tuple, list, dict)) for c in value.choices):
                out[key] = json.dumps(fixed)
            else:
                out[key] = fixed
    if isinstance(cfg.augment, dict) and "augment_policy" not in cfg.train:
        out["augment_policy"] = b.train.get("augment_policy", policy_names(cfg.augment)[0])
    return out


def _unstorable(dist: Dist, value: Any) -> str | None:
    """What a searched key allows when Optuna could not store `value` as its parameter, else None.

    Optuna enqueues a value outside a range with a warning (a baseline may sit outside the space), but
    refuses one that its distribution cannot represent: not a choice, not positive on a log range, not
    a number on a range.
    """
    if dist.kind == "choice":
        stored = [json.dumps(c) if isinstance(c, (tuple, list, dict)) else c for c in dist.choices]
        given = json.dumps(value) if isinstance(value, (tuple, list, dict)) else value
        return None if given in stored else f"one of {', '.join(map(str, dist.choices))}"
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not number or (dist.kind == "int" and not isinstance(value, int)):
        return f"a finite {dist.kind} (it is searched in [{dist.low}, {dist.high}])"
    if dist.log and value <= 0:
        return f"a positive number (it is searched on a log range [{dist.low}, {dist.high}])"
    return None


def _check_fixed_params(cfg: SearchConfig, b: Baseline) -> None:
    """Each searched key the baseline fixes holds a value Optuna can enqueue as that parameter."""
    dists = dict(cfg.train)
    if isinstance(cfg.augment, dict) and "augment_policy" not in dists:
        dists["augment_policy"] = Dist("choice", choices=tuple(policy_names(cfg.augment)))
    for key, value in b.train.items():
        dist = dists.get(key)
        allowed = _unstorable(dist, value) if isinstance(dist, Dist) else None
        if allowed is not None:
            raise UserError(f"{cfg.path}: baselines: {shown(b.name)}: train.{key} {shown(value)}: expected {allowed}")


def sample_baseline(trial: BaseTrial, cfg: SearchConfig, num_classes: int,
                    input_size: int) -> tuple[dict, dict, str | None]:
    """Architecture dict, training dict and a rejection reason for the baseline this trial was enqueued as."""
    name = trial.user_attrs[BASELINE]
    found = [b for b in cfg.baselines if b.name == name]
    train = sample_train(trial, cfg)
    if not found:
        return {}, train, f"baseline {name!r} is no longer in the YAML's baselines"
    arch, reason = baseline_arch(cfg, found[0], num_classes, input_size)
    return arch, {**train, **found[0].train}, reason


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
        trial = optuna.trial.FixedTrial(train_params(cfg, b))
        trial.set_user_attr(BASELINE, b.name)
        arch, train, reason = sample_baseline(trial, cfg, info.num_classes, info.image_size)
        try:
            spec, spec_train = ArchSpec.from_dict(arch), TrainSpec.from_dict(train)
        except (ValueError, TypeError) as e:
            reason = reason or str(e)
        if reason is None:
            reason = arch_violation(spec, complexity(spec), cfg) or train_violation(spec, spec_train, cfg)
        if reason is not None:
            raise UserError(f"{cfg.path}: baselines: {shown(b.name)} cannot be trained: {reason}")
