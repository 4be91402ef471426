"""Opening a study: created with the configured sampler and pruner, or loaded to resume, its identity checked."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import optuna
import sqlalchemy
from optuna.study import StudyDirection

from blocks.text import one_line

from ..config import SearchConfig
from ..dashboard import name_metrics
from ..errors import UserError
from ..storage import GRACE_S, HEARTBEAT_S, make_storage, readable_trials, redact_url
from .identity import check_and_record
from .samplers import make_pruner, make_sampler


def open_study(cfg: SearchConfig, storage_url: str, heartbeat_s: int = HEARTBEAT_S,
               grace_s: int = GRACE_S, data: Mapping[str, Any] | None = None) -> optuna.Study:
    """Create the study, or load it to resume; refuse one made from another space or other `data` (identity.py)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    storage = make_storage(storage_url, heartbeat_s, grace_s)
    directions = [StudyDirection.MAXIMIZE] + [StudyDirection.MINIMIZE] * (len(cfg.search.objectives) - 1)
    try:
        study = optuna.create_study(study_name=cfg.study_name, storage=storage, sampler=make_sampler(cfg),
                                    pruner=make_pruner(cfg), directions=directions, load_if_exists=True)
    except ValueError as e:  # e.g. directions differ from the stored study
        raise UserError(f"study {cfg.study_name!r} in {redact_url(storage_url)}: {e}") from None
    except sqlalchemy.exc.SQLAlchemyError as e:  # e.g. a read-only database file
        raise UserError(f"storage {redact_url(storage_url)!r}: {one_line(e)}") from None
    if study.user_attrs.get("fingerprint") is None:  # a new study
        study.set_user_attr("config_path", cfg.path)
        study.set_user_attr("budget_params", cfg.budget.params)
        study.set_user_attr("budget_flops", cfg.budget.flops)
        study.set_user_attr("budget_peak_activations", cfg.budget.peak_activations)
        if cfg.budget.arena is not None:  # bytes; a study without one keeps the attributes it always had
            study.set_user_attr("budget_arena", cfg.budget.arena)
        study.set_user_attr("objectives", list(cfg.search.objectives))
        name_metrics(study, cfg.search.objectives)
    readable_trials(study, storage_url)  # a damaged row is one line here, before anything is written to the study
    check_and_record(study, cfg, redact_url(storage_url), data)
    return study
