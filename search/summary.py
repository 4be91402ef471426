"""The summary printed at the end of a search: the best trials and how the study went."""

from __future__ import annotations

from collections import Counter

import optuna

from .config import SearchConfig
from .objective import REJECTED

S = optuna.trial.TrialState


def fmt_count(n: float | int | None) -> str:
    """1234567 -> '1.23M' (k, M, G)."""
    if n is None:
        return "-"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


def arch_brief(arch: dict) -> str:
    """A short one-line description of an architecture dict."""
    blocks = arch.get("blocks")
    parts = [f"{arch.get('block', 'basic')}", f"B={blocks}", f"C={arch.get('width')}",
             f"F={arch.get('kernel', 3)}", f"K={arch.get('skip_kernel', 1)}", f"P={arch.get('pool')}"]
    if arch.get("separable"):
        parts.append("sep")
    return " ".join(parts)


def summary_table(study: optuna.Study, cfg: SearchConfig, top: int = 5) -> str:
    """Counts by state, then the `top` best complete trials with accuracy, size and budget use."""
    trials = study.get_trials(deepcopy=False)
    states = Counter()
    for t in trials:
        states["rejected" if t.state == S.PRUNED and REJECTED in t.user_attrs else t.state.name.lower()] += 1
    lines = [f"study {study.study_name!r}: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items()))]
    done = [t for t in trials if t.state == S.COMPLETE and t.values]
    if not done:
        lines.append("no complete trial yet")
        return "\n".join(lines)
    done.sort(key=lambda t: -t.values[0])
    budget = cfg.budget.params
    lines.append("FLOPs: fvcore convention (one multiply-add = one FLOP), batch 1")
    header = f"{'trial':>5}  {'val_acc':>7}  {'params':>8}  {'budget':>6}  {'FLOPs':>8}  {'RF':>4}  {'epochs':>6}  arch"
    lines.append(header)
    lines.append("-" * len(header))
    for t in done[:top]:
        a = t.user_attrs
        util = a.get("params", 0) / budget
        lines.append(f"{t.number:>5}  {t.values[0]:>7.4f}  {fmt_count(a.get('params')):>8}  {util:>6.1%}  "
                     f"{fmt_count(a.get('flops')):>8}  {a.get('receptive_field', '-'):>4}  "
                     f"{len(a.get('epoch_times_s', [])):>6}  {arch_brief(a.get('arch', {}))}")
    return "\n".join(lines)
