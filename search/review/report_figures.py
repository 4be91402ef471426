"""The plotly figures of the search report, each from a finished study (and its retrain results)."""

from __future__ import annotations

import json
import statistics
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..describe import arch_brief
from ..trials import BASELINE, completed, is_baseline, kind

STATE_STYLE = {  # colour and line dash of each kind of trial, the same in every chart
    "complete": ("#1f77b4", "solid"), "pruned": ("#999999", "dash"),
    "rejected": ("#d62728", "dot"), "failed": ("#ff7f0e", "dot"), "running": ("#2ca02c", "dot"),
    "waiting": ("#bbbbbb", "dot"),
}
BASELINE_STYLE: dict[str, Any] = dict(symbol="diamond", size=14, color="#9467bd", line=dict(color="black", width=1))
FEW_TRIALS = 5  # fewer complete trials than this: parameter importances carry a caveat
FLOPS_NOTE = "FLOPs: fvcore convention (one fused multiply-add = one FLOP), batch 1"
SIZE_LABELS = {"params": "parameters", "flops": "FLOPs", "peak_activations": "peak activation memory"}
PEAK_NOTE = "activation elements live at once, batch 1, BN folded, ReLU in place"


def mark_baselines(fig: go.Figure, points: list[tuple[Any, float, optuna.trial.FrozenTrial]]) -> None:
    """Overlay the baselines' (x, y) points with their own marker and name, the same in every chart."""
    if points:
        fig.add_trace(go.Scatter(
            x=[p[0] for p in points], y=[p[1] for p in points], mode="markers+text", marker=BASELINE_STYLE,
            name=f"baselines ({len(points)})", text=[p[2].user_attrs[BASELINE] for p in points],
            textposition="top center", customdata=[p[2].number for p in points],
            hovertemplate="baseline %{text} (trial %{customdata})<br>%{x}<br>val_acc %{y:.4f}<extra></extra>"))


def curve(t: optuna.trial.FrozenTrial) -> list[float]:
    """Validation accuracy per epoch (the recorded curve, or the values reported to the pruner)."""
    if t.user_attrs.get("val_acc_curve"):
        return list(t.user_attrs["val_acc_curve"])
    return [t.intermediate_values[k] for k in sorted(t.intermediate_values)]


def integer_ticks(values: list[float], max_ticks: int = 10) -> dict[str, Any]:
    """Axis settings with ticks on whole numbers only (1, 2 or 5 x 10^k apart): trials, epochs, counts."""
    span = max(1.0, max(values) - min(values)) if values else 1.0
    scale = 1
    while True:
        for m in (1, 2, 5):
            if span / (m * scale) <= max_ticks:
                return dict(tick0=0, dtick=m * scale, tickformat="d")
        scale *= 10


def _layout(fig: go.Figure, title: str, **kw: Any) -> go.Figure:
    """The common look: title, white template, fixed height."""
    fig.update_layout(title=title, template="plotly_white", height=kw.pop("height", 440),
                      margin=dict(l=60, r=30, t=60, b=50), **kw)
    return fig


def history(study: optuna.Study) -> go.Figure:
    """Optuna's optimisation history of validation accuracy (the first objective)."""
    from optuna.visualization import plot_optimization_history

    fig = plot_optimization_history(study, target=lambda t: t.values[0], target_name="val_acc")
    # With a target Optuna draws no best-so-far line (it cannot know the direction); val_acc is maximised.
    done = completed(study.get_trials(deepcopy=False))
    best, ys = float("-inf"), []
    for t in done:
        best = max(best, t.values[0])
        ys.append(best)
    fig.add_trace(go.Scatter(x=[t.number for t in done], y=ys, mode="lines", name="best so far",
                             line=dict(color="#d62728", shape="hv")))
    mark_baselines(fig, [(t.number, t.values[0], t) for t in done if is_baseline(t)])
    fig.update_xaxes(**integer_ticks([t.number for t in study.get_trials(deepcopy=False)]))
    return _layout(fig, "Optimisation history: validation accuracy per trial, best so far",
                   xaxis_title="trial", yaxis_title="val_acc")


def pareto_front(points: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    """(cost, accuracy, trial) points no other point beats on both: lower cost and higher accuracy."""
    front, best = [], float("-inf")
    for cost, acc, n in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((cost, acc, n))
            best = acc
    return front


def tradeoff(trials: list[optuna.trial.FrozenTrial], key: str, budget: float | None) -> go.Figure:
    """Validation accuracy against params, FLOPs or peak activation memory: the budget line and the Pareto front."""
    label = SIZE_LABELS[key]
    fig = go.Figure()
    for state in ("complete", "pruned"):
        ts = [t for t in trials if kind(t) == state and key in t.user_attrs and curve(t)]
        acc = [t.values[0] if state == "complete" else curve(t)[-1] for t in ts]
        fig.add_trace(go.Scatter(
            x=[t.user_attrs[key] for t in ts], y=acc, mode="markers", name=f"{state} ({len(ts)})",
            marker=dict(color=STATE_STYLE[state][0], size=9, symbol="circle" if state == "complete" else "x"),
            text=[f"trial {t.number}<br>{arch_brief(t.user_attrs.get('arch', {}))}" for t in ts],
            hovertemplate="%{text}<br>" + label + " %{x:,}<br>val_acc %{y:.4f}<extra></extra>"))
    done = [(t.user_attrs[key], t.values[0], t.number) for t in trials if kind(t) == "complete" and key in t.user_attrs]
    front = pareto_front(done)
    if front:
        fig.add_trace(go.Scatter(x=[p[0] for p in front], y=[p[1] for p in front], mode="lines+markers",
                                 line=dict(shape="hv", color="#2ca02c"), name=f"Pareto front ({len(front)})",
                                 marker=dict(symbol="star", size=14, color="#2ca02c"),
                                 text=[f"trial {p[2]}" for p in front],
                                 hovertemplate="%{text}: " + label + " %{x:,}, val_acc %{y:.4f}<extra></extra>"))
    mark_baselines(fig, [(t.user_attrs[key], curve(t)[-1], t) for t in trials
                         if is_baseline(t) and key in t.user_attrs and curve(t)])
    if budget:
        fig.add_vline(x=budget, line=dict(color="#d62728", dash="dash"),
                      annotation_text=f"budget {budget:,.0f}", annotation_position="top left")
    note = {"flops": FLOPS_NOTE.split(": ")[1], "peak_activations": PEAK_NOTE}.get(key)
    xtitle = label + (f" ({note})" if note else "")
    return _layout(fig, f"Validation accuracy against {label}", xaxis_title=xtitle, yaxis_title="val_acc")


def importances(study: optuna.Study, trials: list[optuna.trial.FrozenTrial]) -> tuple[go.Figure | None, str]:
    """Optuna's parameter importances for val_acc as a bar chart, or None and why they cannot be computed."""
    done = completed(trials)
    if len(done) < 2:
        return None, f"Parameter importances need at least 2 complete trials; this study has {len(done)}."
    varying = {p for t in done for p in t.params if len({repr(u.params.get(p)) for u in done}) > 1}
    if not varying:
        return None, "Parameter importances need parameters that vary between complete trials; none do."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # Optuna's default (PED-ANOVA) rates what leads to low target values, and a target hides
            # the study's direction from it: hence -val_acc. (fANOVA would need scikit-learn.)
            imp = optuna.importance.get_param_importances(study, target=lambda t: -t.values[0],
                                                          params=sorted(varying))
        except (RuntimeError, ValueError, ZeroDivisionError) as e:
            return None, f"Parameter importances could not be computed: {e}"
    note = optuna_caveats([str(w.message) for w in caught])
    names = list(imp)[::-1]  # largest at the top
    fig = go.Figure(go.Bar(x=[imp[n] for n in names], y=names, orientation="h", marker_color="#1f77b4",
                           hovertemplate="%{y}: %{x:.3f}<extra></extra>"))
    _layout(fig, f"Parameter importances for val_acc ({len(done)} complete trials)", xaxis_title="importance",
            height=max(300, 60 + 28 * len(names)))
    caveat = (f"Only {len(done)} complete trials: a rough hint, not a ranking to rely on (importances settle "
              f"with {FEW_TRIALS} or more). " if len(done) < FEW_TRIALS else "")
    return fig, caveat + note


# What PED-ANOVA's warnings mean for a reader of the chart (optuna/importance/_ped_anova), in one sentence each.
CAVEATS = (("low `target`", ""),  # our own -val_acc target, as intended
           ("number of trials is too small", "Too few complete trials to split into a good and a bad group: "
                                             "the bars are rough."),
           ("quantiles select the same set", "Most trials scored alike, so the bars separate little."),
           ("have less than", "Some parameter values were tried by too few trials to rate them."))


def optuna_caveats(messages: list[str]) -> str:
    """Optuna's warnings during the importance computation as plain sentences, each once; others verbatim."""
    said = []
    for message in messages:
        plain = next((text for key, text in CAVEATS if key in message), f"Optuna warned: {message}")
        if plain and plain not in said:
            said.append(plain)
    return " ".join(said)


ARCH_AXES = ("stages", "depth", "width", "kernel", "skip_kernel", "pool", "block", "separable", "shortcut",
             "stem", "head", "dropout")


def parallel(trials: list[optuna.trial.FrozenTrial]) -> tuple[go.Figure | None, str]:
    """Parallel coordinates of the architecture keys that vary, with params and val_acc, complete trials."""
    done = [t for t in completed(trials) if "arch" in t.user_attrs]
    if not done:
        return None, "No complete trial to draw."
    rows = []
    for t in done:
        a = dict(t.user_attrs["arch"])
        a["depth"] = sum(a.get("blocks") or [])
        a["pool"] = "global" if a.get("pool") is None else a["pool"]
        rows.append(a)
    dims: list[dict[str, Any]] = []
    for key in ARCH_AXES:
        values = [r.get(key) for r in rows]
        if len({repr(v) for v in values}) < 2:
            continue  # a key every trial shares says nothing here
        ints = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
        if len(ints) == len(values):
            ticks = sorted(set(ints))  # kernel 3 and 5, never 4.5
            dims.append(dict(label=key, values=values, tickvals=ticks if len(ticks) <= 12 else None))
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            dims.append(dict(label=key, values=values))
        else:
            cats = sorted({str(v) for v in values})
            dims.append(dict(label=key, values=[cats.index(str(v)) for v in values],
                             tickvals=list(range(len(cats))), ticktext=cats))
    acc = [t.values[0] for t in done]
    if any(is_baseline(t) for t in done):  # a parallel-coordinates line has no marker: an axis says which
        dims.append(dict(label="design", values=[int(is_baseline(t)) for t in done], tickvals=[0, 1],
                         ticktext=["searched", "baseline"]))
    dims.append(dict(label="params", values=[t.user_attrs.get("params", 0) for t in done]))
    dims.append(dict(label="val_acc", values=acc))
    fig = go.Figure(go.Parcoords(dimensions=dims, line=dict(color=acc, colorscale="Viridis", showscale=True,
                                                             colorbar=dict(title="val_acc"))))
    note = "" if len(dims) > 2 else "No architecture key varies between the complete trials."
    _layout(fig, f"Architecture of the {len(done)} complete trials")
    fig.update_layout(margin=dict(l=60, r=30, t=120, b=40), title=dict(y=0.97, yanchor="top"))  # axis labels sit above the plot
    return fig, note


def learning_curves(trials: list[optuna.trial.FrozenTrial]) -> tuple[go.Figure | None, str]:
    """Every trained trial's validation accuracy per epoch; pruned ones dashed grey, ending in an x."""
    fig, shown = go.Figure(), set()
    done = completed(trials)
    best = max(done, key=lambda t: t.values[0]).number if done else None
    for t in sorted(trials, key=lambda t: t.number == best):  # the best drawn last, on top
        ys, state = curve(t), kind(t)
        if not ys:
            continue
        color, dash = STATE_STYLE[state]
        symbol = "x" if state == "pruned" else "circle"
        if t.number == best:
            state, color = f"best (trial {t.number})", "#2ca02c"
        if is_baseline(t):
            state, color, dash, symbol = f"baseline {t.user_attrs[BASELINE]}", BASELINE_STYLE["color"], "dashdot", \
                BASELINE_STYLE["symbol"]
        fig.add_trace(go.Scatter(
            x=list(range(1, len(ys) + 1)), y=ys, mode="lines+markers", legendgroup=state,
            name=state, showlegend=state not in shown,
            line=dict(color=color, dash=dash, width=3 if t.number == best else 1.5),
            marker=dict(size=[5] * (len(ys) - 1) + [10 if symbol != "diamond" else 14],
                        symbol=["circle"] * (len(ys) - 1) + [symbol]),
            hovertemplate=f"trial {t.number} ({state})<br>epoch %{{x}}<br>val_acc %{{y:.4f}}<extra></extra>"))
        shown.add(state)
    if not shown:
        return None, "No trial trained for an epoch yet."
    fig.update_xaxes(**integer_ticks([1, max(len(curve(t)) for t in trials)]))
    return _layout(fig, "Learning curves of every trial", xaxis_title="epoch", yaxis_title="val_acc"), ""


def budget_use(trials: list[optuna.trial.FrozenTrial], budget: float) -> tuple[go.Figure | None, str]:
    """Histogram of params / budget by kind of trial (rejected ones may lie above 100%)."""
    fig, any_ = go.Figure(), False
    for state in STATE_STYLE:
        use = [t.user_attrs["params"] / budget for t in trials if kind(t) == state and "params" in t.user_attrs]
        if use:
            any_ = True
            fig.add_trace(go.Histogram(x=use, name=f"{state} ({len(use)})", marker_color=STATE_STYLE[state][0],
                                       xbins=dict(size=0.05), hovertemplate="%{x}: %{y} trials<extra></extra>"))
    if not any_:
        return None, "No trial recorded a parameter count."
    fig.add_vline(x=1.0, line=dict(color="#d62728", dash="dash"), annotation_text="budget")
    for t in (t for t in trials if is_baseline(t) and "params" in t.user_attrs):
        fig.add_vline(x=t.user_attrs["params"] / budget, line=dict(color=BASELINE_STYLE["color"], dash="dashdot"),
                      annotation_text=f"baseline {t.user_attrs[BASELINE]}", annotation_position="top left")
    fig.update_xaxes(tickformat=".0%")
    stacked = Counter(int(t.user_attrs["params"] / budget // 0.05) for t in trials if "params" in t.user_attrs)
    fig.update_yaxes(**integer_ticks([0, max(stacked.values())]))
    return _layout(fig, f"Budget utilisation (params / {budget:,.0f})", barmode="stack",
                   xaxis_title="share of the parameter budget", yaxis_title="trials"), ""


def _seed_docs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-seed metrics.json files next to a trial's retrain summary, each with `run` = its folder name."""
    out = []
    for path in sorted(Path(doc["folder"]).glob("seed_*/metrics.json")):
        try:
            out.append({**json.loads(path.read_text()), "run": path.parent.name})
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
    return out


def retrain_curves(docs: list[dict[str, Any]]) -> go.Figure | None:
    """Training loss and validation (or training) accuracy per epoch of every retrained seed, one colour per run."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "accuracy (val; train with train+val)"))
    epochs, runs, palette = [], 0, plotly.colors.qualitative.Plotly
    for doc in (d for d in docs if "trial" in d):
        for s in _seed_docs(doc):
            h = s.get("history") or []
            if not h:
                continue
            name = f"trial {doc['trial']} {s['run']}"  # as the folder says: seed_0, seed_1
            color, runs = palette[runs % len(palette)], runs + 1
            xs = [e["epoch"] for e in h]
            epochs += xs
            fig.add_trace(go.Scatter(x=xs, y=[e["train_loss"] for e in h], name=name, legendgroup=name,
                                     mode="lines+markers", line=dict(color=color)), row=1, col=1)
            on_val = doc.get("train_on_val") or all(e.get("val_acc") is None for e in h)
            ys = [e["train_acc"] if on_val else e["val_acc"] for e in h]
            fig.add_trace(go.Scatter(x=xs, y=ys, name=name, legendgroup=name, showlegend=False,
                                     mode="lines+markers", line=dict(color=color)), row=1, col=2)
    if not epochs:
        return None
    fig.update_xaxes(**integer_ticks(epochs))
    return _layout(fig, "Retrain learning curves", xaxis_title="epoch", xaxis2_title="epoch")


def retrain_classes(doc: dict[str, Any]) -> tuple[go.Figure | None, go.Figure | None]:
    """Per-class test accuracy (mean and spread over seeds) and the confusion matrix summed over seeds."""
    seeds = [s for s in _seed_docs(doc) if "confusion" in s]
    if not seeds:
        return None, None
    names = [r["name"] for r in seeds[0]["per_class"]]
    label = f"trial {doc['trial']}" if "trial" in doc else f"ensemble of {doc.get('members')}"
    runs = ", ".join(s["run"] for s in seeds)
    acc = [[s["per_class"][c]["accuracy"] for s in seeds] for c in range(len(names))]
    spread = [statistics.stdev(a) for a in acc] if len(seeds) > 1 else None
    bars = go.Figure(go.Bar(x=names, y=[statistics.mean(a) for a in acc], marker_color="#1f77b4",
                            error_y=dict(type="data", array=spread, visible=spread is not None),
                            hovertemplate="%{x}: %{y:.3f}<extra></extra>"))
    over = f"mean ± std over {len(seeds)} seeds ({runs})" if len(seeds) > 1 else runs
    _layout(bars, f"Per-class test accuracy, {label}, {over}", yaxis_title="accuracy", yaxis_range=[0, 1])
    total = [[sum(s["confusion"][i][j] for s in seeds) for j in range(len(names))] for i in range(len(names))]
    heat = go.Figure(go.Heatmap(z=total, x=names, y=names, colorscale="Blues",
                                hovertemplate="true %{y}<br>predicted %{x}<br>%{z} images<extra></extra>"))
    side = min(900, max(420, 14 * len(names)))
    summed = f"summed over {len(seeds)} seeds ({runs})" if len(seeds) > 1 else runs
    _layout(heat, f"Confusion matrix, {label}, {summed}", xaxis_title="predicted", yaxis_title="true", height=side,
            yaxis_autorange="reversed")
    return bars, heat


SPEED_KEYS = (("train_images_per_s", "training images/s (higher is faster)"),
              ("latency_ms_batch1", "inference latency, batch 1, ms (lower is faster)"))


def accuracy_vs_speed(trials: list[optuna.trial.FrozenTrial]) -> go.Figure | None:
    """Validation accuracy of complete trials against their measured training speed and inference latency."""
    done = [t for t in trials if kind(t) == "complete" and t.values and "latency_ms_batch1" in t.user_attrs]
    if not done:
        return None
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1)
    for col, (key, label) in enumerate(SPEED_KEYS, 1):
        ts = [t for t in done if key in t.user_attrs]
        fig.add_trace(go.Scatter(
            x=[t.user_attrs[key] for t in ts], y=[t.values[0] for t in ts], mode="markers", showlegend=False,
            marker=dict(color=STATE_STYLE["complete"][0], size=9),
            text=[f"trial {t.number} on {t.user_attrs.get('device', '?')}<br>"
                  f"{arch_brief(t.user_attrs.get('arch', {}))}" for t in ts],
            hovertemplate="%{text}<br>" + label + " %{x:,.2f}<br>val_acc %{y:.4f}<extra></extra>"), row=1, col=col)
        fig.update_xaxes(title_text=label, row=1, col=col)
    fig.update_yaxes(title_text="val_acc", row=1, col=1)
    return _layout(fig, "Validation accuracy against measured speed (on each trial's device)")
