"""The summary printed at the end of a search: the best trials and how the study went."""

from __future__ import annotations

import optuna

from blocks.resnet import ARENA_SLACK
from blocks.text import short_count

from ..config import SearchConfig
from ..describe import arch_brief
from ..trials import BASELINE, KINDS, count_kinds, is_baseline, ranked


def design(t: optuna.trial.FrozenTrial) -> str:
    """`searched`, or `baseline <name>` for a hand design from the YAML."""
    return f"baseline {t.user_attrs[BASELINE]}" if is_baseline(t) else "searched"


def summary_table(study: optuna.Study, cfg: SearchConfig, top: int = 5) -> str:
    """Counts by state, the `top` best complete trials and every baseline, then searched vs baselines."""
    trials = study.get_trials(deepcopy=False)
    kinds = count_kinds(trials)
    n_base = sum(1 for t in trials if is_baseline(t))
    lines = [f"study {study.study_name!r}: " + ", ".join(f"{kinds[k]} {k}" for k in KINDS if kinds[k])
             + (f" ({n_base} of them baselines, not counted in n_trials)" if n_base else "")]
    done = ranked(trials)
    if not done:
        lines.append("no complete trial yet")
        return "\n".join(lines)
    shown = done[:top] + [t for t in done[top:] if is_baseline(t)]
    budget = cfg.budget.params
    lines.append("FLOPs: fvcore convention (one multiply-add = one FLOP), batch 1")
    lines.append("peak: activation elements live at once during one inference (batch 1, BN folded, ReLU in place)")
    arena = cfg.budget.arena is not None  # a column only where the study has an arena budget
    if arena:
        lines.append(f"arena: bytes TFLite Micro's arena head takes at most as int8 ({ARENA_SLACK} x the int8 TFLite "
                     f"peak); budget {cfg.budget.arena:,}")
    header = (f"{'trial':>5}  {'val_acc':>7}  {'params':>8}  {'budget':>6}  {'FLOPs':>8}  {'peak':>8}  "
              + (f"{'arena':>8}  " if arena else "") + f"{'RF':>4}  {'epochs':>6}  {'design':<18}  arch")
    lines.append(header)
    lines.append("-" * len(header))
    for t in shown:
        a = t.user_attrs
        util = a.get("params", 0) / budget
        lines.append(f"{t.number:>5}  {t.values[0]:>7.4f}  {short_count(a.get('params')):>8}  {util:>6.1%}  "
                     f"{short_count(a.get('flops')):>8}  {short_count(a.get('peak_activations')):>8}  "
                     + (f"{short_count(a.get('arena_bound')):>8}  " if arena else "") +
                     f"{a.get('receptive_field', '-'):>4}  "
                     f"{len(a.get('epoch_times_s', [])):>6}  {design(t):<18}  {arch_brief(a.get('arch', {}))}")
    searched = [t for t in done if not is_baseline(t)]
    bases = [t for t in done if is_baseline(t)]
    if searched and bases:
        s, b = searched[0], bases[0]
        lines.append(f"best searched trial {s.number} {s.values[0]:.4f} vs best {design(b)} (trial {b.number}) "
                     f"{b.values[0]:.4f}: {s.values[0] - b.values[0]:+.4f} val_acc (one seed each)")
    return "\n".join(lines)
