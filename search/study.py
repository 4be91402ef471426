"""Storage, sampler, pruner and study creation (resuming a study that already exists)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from .config import Dist, SearchConfig
from .errors import UserError
from .trainer import TrainSpec

# Heartbeats, trial grouping and retry are marked experimental by Optuna; they are what we rely on.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

HEARTBEAT_S = 30  # a running trial writes a heartbeat this often
GRACE_S = 120  # a trial silent for this long belongs to a dead worker: failed, then retried
MAX_RETRY = 3  # retries of one trial killed with its worker


def default_storage(results: Path) -> str:
    """The embedded default: an SQLite file in the study's results folder."""
    return f"sqlite:///{results / 'study.db'}"


def make_storage(url: str) -> RDBStorage:
    """An RDB storage (SQLite or PostgreSQL) with heartbeats and retry of trials of dead workers."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs = {"connect_args": {"timeout": 60}}  # wait on a locked file instead of failing
    try:
        return RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY))
    except Exception as e:  # bad URL, missing driver, unreachable server, unwritable file
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"storage {_redact(url)!r}: cannot open: {reason}") from None


def _redact(url: str) -> str:
    """The URL with any password hidden."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def make_sampler(cfg: SearchConfig) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded (TPE is multivariate and grouped for the conditional stage keys)."""
    s = cfg.search
    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=s.seed)
    if s.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=s.seed)
    if s.sampler == "gp":
        return optuna.samplers.GPSampler(seed=s.seed)
    return optuna.samplers.TPESampler(seed=s.seed, multivariate=True, group=True, n_startup_trials=5,
                                      constant_liar=True)


def make_pruner(cfg: SearchConfig) -> optuna.pruners.BasePruner:
    """The configured pruner, in epochs."""
    s = cfg.search
    if s.pruner == "none" or len(s.objectives) > 1:
        return optuna.pruners.NopPruner()
    max_epochs = max_train_epochs(cfg)
    if s.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, s.pruner_warmup_epochs), max_resource=max_epochs)
    if s.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, s.pruner_warmup_epochs))
    return optuna.pruners.MedianPruner(n_startup_trials=s.pruner_startup_trials,
                                       n_warmup_steps=s.pruner_warmup_epochs)


def max_train_epochs(cfg: SearchConfig) -> int:
    """The most epochs a trial of this space can train."""
    epochs = cfg.train.get("epochs", TrainSpec.epochs)
    if isinstance(epochs, Dist):
        return int(max(epochs.choices) if epochs.kind == "choice" else epochs.high)
    return int(epochs)


def open_study(cfg: SearchConfig, storage_url: str) -> optuna.Study:
    """Create the study, or load it to resume; refuse a study that was made from a different space."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    storage = make_storage(storage_url)
    directions = ["maximize"] + ["minimize"] * (len(cfg.search.objectives) - 1)
    try:
        study = optuna.create_study(study_name=cfg.study_name, storage=storage, sampler=make_sampler(cfg),
                                    pruner=make_pruner(cfg), directions=directions, load_if_exists=True)
    except ValueError as e:  # e.g. directions differ from the stored study
        raise UserError(f"study {cfg.study_name!r} in {_redact(storage_url)}: {e}") from None
    stored = study.user_attrs.get("fingerprint")
    if stored is None:
        study.set_user_attr("fingerprint", cfg.fingerprint())
        study.set_user_attr("config_path", cfg.path)
        study.set_user_attr("budget_params", cfg.budget.params)
        study.set_user_attr("budget_flops", cfg.budget.flops)
        study.set_user_attr("objectives", list(cfg.search.objectives))
    elif stored != cfg.fingerprint():
        raise UserError(f"study {cfg.study_name!r} in {_redact(storage_url)} was made from a different space "
                        f"(from {study.user_attrs.get('config_path')}); use another --study-name or the same YAML")
    return study
