"""The report of a study: one self-contained HTML page of what the search learned (`resnet-search report`:
search/commands.py)."""

from __future__ import annotations

import html
import shlex
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import plotly.graph_objects as go

from blocks import ArchSpec, complexity
from blocks.layers import MAC_KINDS
from blocks.resnet import ARENA_SLACK
from blocks.text import short_count

from ..dashboard import upload
from ..describe import arch_brief
from ..errors import UserError
from ..files import atomic_write_text
from ..names import TEMP_ROOM, check_path
from ..trials import KINDS, REJECTED, completed, count_kinds, is_baseline
from . import int8_results
from . import report_figures as figs
from .results import StudyResults, open_results
from .summary import design

# Runs before plotly: any script error or rejected promise on the page is shown at its top (and read
# back by the headless-browser test), instead of a chart silently missing.
ERROR_HOOK = """<script>
window.reportErrors = [];
function reportError(msg) {
  window.reportErrors.push(String(msg));
  var box = document.getElementById("script-errors");
  if (box) { box.textContent = window.reportErrors.join("\\n"); box.hidden = false; }
}
window.addEventListener("error", function (e) { reportError(e.message || e); });
window.addEventListener("unhandledrejection", function (e) { reportError("unhandled rejection: " + e.reason); });
</script>"""
STYLE = """<style>
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 1em 2em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: right; } td.l, th.l { text-align: left; }
.note { color: #666; font-style: italic; } #script-errors { color: #b00; background: #fee; padding: 0.5em; }
</style>"""


class Page:
    """The report being assembled: sections of text and figures; plotly.js is embedded once."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.charts: list[str] = []  # div ids of the drawn charts, in order

    def section(self, title: str, text: str = "") -> None:
        """Start a section with a heading and an optional explanation."""
        self.parts.append(f"<h2>{html.escape(title)}</h2>")
        if text:
            self.parts.append(f"<p>{html.escape(text)}</p>")

    def note(self, text: str) -> None:
        """A grey remark (e.g. why a chart is missing)."""
        if text:
            self.parts.append(f'<p class="note">{html.escape(text)}</p>')

    def figure(self, fig: go.Figure | None, name: str) -> None:
        """Embed a figure as a div with id chart-<name>; the first one carries plotly.js itself."""
        if fig is None:
            return
        div = f"chart-{name}"
        self.parts.append(fig.to_html(full_html=False, include_plotlyjs=not self.charts, div_id=div,
                                      config={"displaylogo": False, "responsive": True}))
        self.charts.append(div)

    def raw(self, fragment: str) -> None:
        """Append trusted HTML made here (tables)."""
        self.parts.append(fragment)

    def render(self, title: str) -> str:
        """The whole self-contained page."""
        return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
                f"{ERROR_HOOK}{STYLE}</head><body>\n"
                '<pre id="script-errors" hidden></pre>\n' + "\n".join(self.parts) + "\n</body></html>\n")


def table(header: list[str], rows: list[list[Any]], left: tuple[int, ...] = ()) -> str:
    """An HTML table; columns in `left` are left-aligned text."""
    def cell(tag: str, i: int, v: Any) -> str:
        return f'<{tag}{" class=l" if i in left else ""}>{html.escape(str(v))}</{tag}>'

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _pm(stats: dict[str, Any] | None) -> str:
    """'0.9123 ± 0.0040 (3 seeds)' from a mean/std/values dict."""
    if not stats:
        return "-"
    n = len(stats.get("values", []))
    std = f" ± {stats['std']:.4f}" if stats.get("std") is not None else ""
    return f"{stats['mean']:.4f}{std}" + (f" ({n} seeds)" if n > 1 else "")


def overview(page: Page, res: StudyResults) -> None:
    """Counts by kind of trial, the budget and the best trials."""
    trials = res.trials
    counts = count_kinds(trials)
    budget = res.cfg.budget
    flops = f", {budget.flops:,} FLOPs" if budget.flops else ""
    if budget.peak_activations:
        flops += f", {budget.peak_activations:,} peak activation elements (batch 1)"
    if budget.arena is not None:
        flops += f", a {budget.arena:,}-byte TFLite Micro arena head (int8, {ARENA_SLACK} x the int8 TFLite peak)"
    page.raw(f"<p>{len(trials)} trials: " + ", ".join(f"{counts[k]} {k}" for k in KINDS if counts[k])
             + f". Hard budget: {budget.params:,} parameters{flops}. Objectives: "
             + html.escape(", ".join(res.cfg.search.objectives)) + f". {figs.FLOPS_NOTE}.</p>")
    shown = _shown(res)
    rows = [[t.number, f"{t.values[0]:.4f}", short_count(t.user_attrs.get("params")),
             f"{t.user_attrs.get('params', 0) / budget.params:.1%}", short_count(t.user_attrs.get("flops")),
             t.user_attrs.get("receptive_field", "-"), design(t), arch_brief(t.user_attrs.get("arch", {}))]
            for t in shown]
    if rows:
        page.raw(table(["trial", "val_acc", "params", "budget", "FLOPs", "RF", "design", "architecture"], rows,
                       left=(6, 7)))
    reasons = Counter(str(t.user_attrs[REJECTED]).split(":")[0] for t in trials if REJECTED in t.user_attrs)
    if reasons:
        page.raw("<p>Rejected before building (never trained), by reason:</p>"
                 + table(["reason", "trials"], [[r, n] for r, n in reasons.most_common()], left=(0,)))


def _shown(res: StudyResults) -> list[optuna.trial.FrozenTrial]:
    """The 10 best complete trials and every baseline, for comparison."""
    done = res.complete()
    return done[:10] + [t for t in done[10:] if is_baseline(t)]


def macs_section(page: Page, res: StudyResults) -> None:
    """The multiply-adds of the trials in the overview, split by the kind of operation that does them."""
    page.section("Multiply-adds by kind of operation", "The FLOPs of the trials above, split by the kind of "
                 "operation that does them (blocks.complexity, fvcore convention). They do not run equally fast "
                 "on a microcontroller: CMSIS-NN has int8 kernels of its own for 3x3 depthwise and stride-1 1x1 "
                 "convs, a general one for other depthwise kernels, and the plain C loop for a depthwise conv "
                 "with a channel multiplier (docs/sizing.md). Microcontroller latency is not measured here.")
    rows, invalid = [], []
    for t in _shown(res):
        try:
            cx = complexity(ArchSpec.from_dict(t.user_attrs.get("arch", {})))
        except (ValueError, TypeError):
            invalid.append(str(t.number))
            continue
        rows.append([t.number, design(t), *(short_count(n) for _, n in cx.macs_by_kind), short_count(cx.flops)])
    if rows:
        page.raw(table(["trial", "design", *MAC_KINDS.values(), "total"], rows, left=(1,)))
    elif not invalid:
        page.note("No complete trial yet.")
    if invalid:
        page.note(f"Not shown: trial {', '.join(invalid)}, whose recorded architecture is not a valid design.")


def retrain_section(page: Page, res: StudyResults) -> None:
    """Test results of `resnet-search retrain`, when there are any."""
    docs = res.retrain_metrics()
    page.section("Retrain results", "Test-set accuracy of the trials retrained to full length "
                 "(resnet-search retrain); the test set is used only here. 'plain' is one pass, 'flip TTA' "
                 "the mean softmax of each image and its horizontal mirror.")
    if not docs:
        page.note("No retrain results yet: run resnet-search retrain " + shlex.quote(str(res.folder)))
        return
    int8 = [_int8(d) for d in docs]  # read from the seed folders: export may have run since the retrain
    shown = any(int8)  # the int8 columns only where an export recorded an int8 accuracy
    rows: list[list[Any]] = []
    for d, int8_of_d in zip(docs, int8, strict=True):
        test, tta = d.get("test", {}), d.get("test_tta", {})
        row: list[Any]
        if "members" in d:
            singles = "; ".join(f"trial {n}: {_pm(s.get('top1'))}" for n, s in d.get("members_test", {}).items())
            row = [f"ensemble {d['members']}", "-", _pm(test.get("top1")), _pm(tta.get("top1")),
                   _pm(test.get("top5")), "-", "-", "-", singles]
        else:
            t = next((t for t in res.trials if t.number == d.get("trial")), None)
            label = f"trial {d['trial']}" + (f" ({design(t)})" if t is not None and is_baseline(t) else "")
            row = [label, f"{d['val_acc']:.4f}" if d.get("val_acc") is not None else "-",
                   _pm(test.get("top1")), _pm(tta.get("top1")), _pm(test.get("top5")),
                   short_count(d.get("params")), d.get("epochs"), _trained_on(d), d.get("test_set", "")]
        rows.append(row[:5] + _int8_cells(int8_of_d) + row[5:] if shown else row)
    header = ["model", "search val_acc", "test top-1 plain", "test top-1 flip TTA", "test top-5 plain",
              *(["int8 top-1", "int8 − fp32 (same images)", "int8 arena head + tail, file (bytes)"] if shown else []),
              "params", "epochs", "trained on", "test set / members"]
    page.raw(table(header, rows, left=(0, len(header) - 2, len(header) - 1)))
    if shown:
        page.note("int8: the exported full-integer .tflite (resnet-search export --evaluate) on the first test "
                  "images it was run on, beside the fp32 model's top-1 on those same images: a negative "
                  "difference is top-1 lost to post-training quantisation. Quantisation-aware training is not "
                  "available yet.")
    page.figure(figs.retrain_curves(docs), "retrain-curves")
    tested = [d for d in docs if "trial" in d and "test" in d]
    if tested:
        best = max(tested, key=lambda d: d["test"].get("top1", {}).get("mean", 0))
        bars, heat = figs.retrain_classes(best)
        page.figure(bars, "retrain-classes")
        page.figure(heat, "retrain-confusion")


def _int8(d: dict[str, Any]) -> dict[str, Any] | None:
    """The int8 records of a retrained trial's seeds (int8_results.summary); None for an ensemble or none."""
    if "members" in d:
        return None
    listed = given if isinstance(given := d.get("seeds"), list) else []
    seeds = {s.get("folder") for s in listed if isinstance(s, dict)}  # the seed runs this summary is over
    return int8_results.summary([f for f in sorted(Path(d["folder"]).glob("seed_*")) if f.name in seeds])


def _int8_cells(s: dict[str, Any] | None) -> list[str]:
    """'int8 top-1', 'int8 − fp32' (mean ± std, the images and seeds) and the exported file's arena and bytes of
    one row; '-' without a record."""
    if s is None:
        return ["-", "-", "-"]
    images = f" ({s['images']:,} images)"
    diff = s["minus_fp32"]
    std = f" ± {diff['std']:.4f}" if diff["std"] is not None else ""
    memory = (f"{s['arena_head']:,} + {s['arena_tail']:,}, {s['file_bytes']:,}"
              if {"arena_head", "arena_tail", "file_bytes"} <= set(s) else "-")
    return [_pm(s["top1"]) + images, f"{diff['mean']:+.4f}{std}", memory]


def _trained_on(d: dict) -> str:
    """'cifar10, 50,000 images (train + val), 32px' from a retrain summary (older ones: train+val yes/no)."""
    t = d.get("trained_on")
    if not t:
        return "train + val" if d.get("train_on_val") else "train"
    return f"{t['dataset']}, {t['train_images']:,} images ({t['images']}), {t['image_size']}px"


def build_report(res: StudyResults) -> Page:
    """Every section of the report for a loaded study."""
    page, trials, study = Page(), res.trials, res.study
    page.raw(f"<h1>Search report: {html.escape(res.name)}</h1><p class=note>{html.escape(str(res.folder))}, "
             f"written {time.strftime('%Y-%m-%d %H:%M')}</p>")
    overview(page, res)
    page.section("Optimisation history", "Validation accuracy of each complete trial and the best so far.")
    if completed(trials):
        page.figure(figs.history(study), "history")
    else:
        page.note("No complete trial yet.")
    page.section("Accuracy against size", "Each complete trial (and each pruned one at its last reported "
                 "epoch); the dashed line is the hard budget, the stars the Pareto front.")
    page.figure(figs.tradeoff(trials, "params", res.cfg.budget.params), "params")
    page.figure(figs.tradeoff(trials, "flops", res.cfg.budget.flops), "flops")
    page.figure(figs.tradeoff(trials, "peak_activations", res.cfg.budget.peak_activations), "peak")
    page.figure(figs.accuracy_vs_speed(trials), "speed")  # measured: FLOPs do not predict speed (BENCHMARKS.md)
    macs_section(page, res)
    page.section("Parameter importances", "How much each searched parameter explains val_acc "
                 "(optuna.importance.get_param_importances).")
    fig, note = figs.importances(study, trials)
    page.note(note)
    page.figure(fig, "importances")
    page.section("Architectures", "Parallel coordinates of the architecture keys that vary (depth = total "
                 "blocks), coloured by val_acc.")
    fig, note = figs.parallel(trials)
    page.note(note)
    page.figure(fig, "parallel")
    page.section("Learning curves", "Validation accuracy per epoch of every trial; pruned trials are dashed "
                 "grey and end in an x.")
    fig, note = figs.learning_curves(trials)
    page.note(note)
    page.figure(fig, "curves")
    page.section("Budget utilisation", "Parameters of each trial as a share of the budget; rejected trials "
                 "were never built.")
    fig, note = figs.budget_use(trials, res.cfg.budget.params)
    page.note(note)
    page.figure(fig, "budget")
    retrain_section(page, res)
    return page


def write_report(res: StudyResults, output: Path | None = None) -> tuple[Path, list[str]]:
    """Write the report page; returns its path and the ids of the charts on it."""
    page = build_report(res)
    path = output or res.folder / "report.html"
    try:
        atomic_write_text(path, page.render(f"Search report: {res.name}"))
    except OSError as e:
        raise UserError(f"cannot write the report to '{path}': {e.strerror or e}") from None
    return path, page.charts


def report(results: str | Path, *, storage: str | None = None, study_name: str | None = None,
           output: str | Path | None = None, data_root: str | None = None,
           log: Callable[[str], None] = print) -> Path:
    """Write the HTML report of a study (default: <results>/report.html) and attach it to the study for
    optuna-dashboard; returns its path. Each keyword is the report command's option of the same name."""
    if output:
        check_path(str(output), "--output", room=TEMP_ROOM)  # the page is written through a temporary file
    if output and Path(output).suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--output {output}: the report is one HTML page; give a .html path "
                        f"(a browser's Print > Save as PDF makes a PDF of it)")
    res = open_results(Path(results), storage, data_root, study_name=study_name)
    path, charts = write_report(res, Path(output) if output else None)
    upload(res.study, path, res.folder)  # optuna-dashboard opens it from the study's page
    log(f"wrote {path} ({len(charts)} charts); open it in any browser, offline")
    return path
