"""The configured sampler, reseeded by trial number so workers and reruns draw apart, and the pruner."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna

from ..config import SearchConfig, max_train_epochs


def make_sampler(cfg: SearchConfig) -> optuna.samplers.BaseSampler:
    """The configured sampler; trial n draws with seed `search.seed + n` (see TrialSeededSampler)."""
    s = cfg.search

    def make(seed: int) -> optuna.samplers.BaseSampler:
        if s.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if s.sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed)
        if s.sampler == "gp":
            return optuna.samplers.GPSampler(seed=seed)
        # multivariate and grouped for the conditional stage keys; constant_liar keeps parallel workers apart
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=5,
                                          constant_liar=True)

    return TrialSeededSampler(make, s.seed)


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """A sampler whose draws for trial n come from a fresh copy seeded with `seed + n`.

    Optuna seeds a sampler once per process, so workers started with one seed draw the same
    parameters (optuna/optuna#4714) and a rerun that resumes a study replays its first draws.
    Trial numbers are unique in a study, so seeding by trial number avoids both, and a one-worker
    search stays reproducible from its seed. The samplers keep their state in the study, not in
    the object (TPE, random, NSGA-II); GP only loses its warm start between trials.
    """

    def __init__(self, make: Callable[[int], optuna.samplers.BaseSampler], seed: int):
        self._make, self._seed = make, seed
        self._inner = make(seed)

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Reseed by trial number, then let the sampler prepare."""
        self._inner = self._make((self._seed + trial.number) % 2**32)  # numpy seeds are below 2**32
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        """The wrapped sampler's relative search space."""
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                        search_space: dict[str, Any]) -> dict[str, Any]:
        """The wrapped sampler's joint draw."""
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, param_name: str,
                           param_distribution: Any) -> Any:
        """The wrapped sampler's draw of one parameter."""
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: optuna.trial.TrialState,
                    values: Any) -> None:
        """The wrapped sampler's bookkeeping at the end of a trial."""
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Reseed the wrapped sampler (Optuna calls this for n_jobs > 1)."""
        self._inner.reseed_rng()


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
