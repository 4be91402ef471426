"""A trial's record: the user attributes the search writes, which kind of trial it is, and the counts.

The one place that says what "rejected", "baseline" or "finished" means; the objective, the worker
loop, the summary, the report and the results reader all ask here.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

import optuna

from blocks.holds import Maybe, Number

S = optuna.trial.TrialState

# User attributes (keys of trial.user_attrs) that carry a trial's story.
WORKER = "worker"  # host:pid of the process running the trial, set as the objective starts
INTERRUPTED = "interrupted"  # why a trial stopped early (SIGINT, SIGTERM, disk full); a rerun resumes it
REJECTED = "rejected"  # why a trial was never built (over budget, a rule); its Optuna state is PRUNED
RETRY_OF = "retry_of"  # the trial this one retries (first of the chain): same params and seed
RESUMED_FROM = "resumed_from_epoch"  # first epoch trained after loading the checkpoint
BASELINE = "baseline"  # the hand design's name from the YAML's `baselines:` (absent on searched trials)

# The kinds a trial is shown as, in the order tables and legends list them.
KINDS = ("complete", "pruned", "rejected", "failed", "running", "waiting")


# What the user attributes that report and retrain read must hold (the objective writes them; an edited
# study.db may not): one line names the first that does not, never a TypeError in a sort or a table.
ATTRS = {"arch": Maybe(dict), "train": Maybe(dict), "params": Maybe(int), "flops": Maybe(Number),
         "seed": Maybe(int), "val_acc_curve": Maybe([Number]), "epoch_times_s": Maybe([Number])}


def is_baseline(t: Any) -> bool:
    """Whether a trial (live or frozen) is a hand-designed baseline."""
    return BASELINE in t.user_attrs


def is_rejected(t: Any) -> bool:
    """Whether a trial was rejected before building (it may still be RUNNING while it says so)."""
    return REJECTED in t.user_attrs


def kind(t: optuna.trial.FrozenTrial) -> str:
    """complete | pruned | rejected (never built: over budget or a rule) | failed | running | waiting."""
    if t.state == S.PRUNED:
        return "rejected" if is_rejected(t) else "pruned"
    return {S.COMPLETE: "complete", S.FAIL: "failed", S.WAITING: "waiting"}.get(t.state, "running")


def count_kinds(trials: Iterable[optuna.trial.FrozenTrial]) -> Counter:
    """How many trials of each kind."""
    return Counter(kind(t) for t in trials)


def completed(trials: Iterable[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """The COMPLETE trials that have finite values, in study order.

    A val_acc is a fraction in [0, 1]; an infinite one (a study.db edited, an enqueued value) would rank first
    and be retrained as "the best", and a NaN (or NULL) would sort anywhere: such a trial is no result.
    """
    return [t for t in trials if t.state == S.COMPLETE and t.values and all(map(_finite, t.values))]


def _finite(value: Any) -> bool:
    """Whether an objective value is a finite number (SQLite keeps a NaN as NULL, which Optuna reads as None)."""
    return isinstance(value, (int, float)) and math.isfinite(value)


def ranked(trials: Iterable[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """Completed trials, best first: highest first objective (val_acc), then fewest parameters, then earliest."""
    return sorted(completed(trials), key=lambda t: (-t.values[0], t.user_attrs.get("params", 0), t.number))


def count_finished(trials: Iterable[Any]) -> int:
    """How many trials count towards the n_trials target: complete or pruned, not rejected, not baselines."""
    return sum(1 for t in trials if not is_baseline(t) and (
        t.state == S.COMPLETE or (t.state == S.PRUNED and not is_rejected(t))))


def count_running(trials: Iterable[Any]) -> int:
    """Trials in flight that may still count towards the target (RUNNING, not rejected, not baselines)."""
    return sum(1 for t in trials if t.state == S.RUNNING and not is_rejected(t) and not is_baseline(t))
