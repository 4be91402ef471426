"""The files a retrain writes beside its models: metrics, CSV tables, ensembles, predictions, ONNX, the summary."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from blocks import ArchSpec
from blocks.atomic import atomic_write

from ..config import SearchConfig
from ..contained import inside
from ..errors import UserError
from ..files import atomic_text, atomic_write_text
from ..names import fit_name
from . import evaluate as ev
from . import int8_results
from .plan import Plan
from .results import StudyResults

TEST_SETS = {"cifar10": "CIFAR-10 test batch", "tiny_imagenet": "Tiny ImageNet official val",
             "synthetic": "synthetic test split", "imagefolder": "image folder test/ (or val/)"}



@dataclass
class SeedRun:
    """One trained and tested model."""

    folder: Path
    seed: int
    metrics: dict[str, Any]
    probs: torch.Tensor  # test-set softmax, (images, classes)
    labels: torch.Tensor
    tta: dict[str, Any] | None = None  # test metrics on the flip-averaged softmax, with retrain.tta
    probs_tta: torch.Tensor | None = None
    unlabeled: torch.Tensor | None = None  # softmax over the unlabeled split, with --predict
    history: list[dict[str, Any]] = field(default_factory=list)


def write_run_files(run: SeedRun, names: tuple[str, ...], facts: dict[str, Any]) -> None:
    """metrics.json, per_class.csv, confusion.csv and curves.csv of one seed run."""
    m = run.metrics
    doc = {**facts, "test": _scalars(m), **({"test_tta": _scalars(run.tta)} if run.tta else {}),
           "confusion": m["confusion"], "per_class": m["per_class"], "history": run.history}
    atomic_write_text(run.folder / "metrics.json", json.dumps(ev.jsonable(doc), indent=1))
    ev.write_per_class_csv(run.folder / "per_class.csv", [m["per_class"]])
    ev.write_confusion_csv(run.folder / "confusion.csv", m["confusion"], names)
    if run.history:  # an ensemble has no training curves of its own
        ev.write_curves_csv(run.folder / "curves.csv", run.history)


def _scalars(m: dict[str, Any]) -> dict[str, Any]:
    """The scalar test metrics of one run (no confusion matrix or per-class rows)."""
    return {k: m[k] for k in ("n", "top1", "top5", "loss") if k in m}


def write_trial_summary(res: StudyResults, plan: Plan, runs: list[SeedRun], on_val: bool, folder: Path) -> None:
    """The trial's metrics.json (mean and std over seeds) and per_class.csv."""
    seed0 = json.loads((runs[0].folder / "run.json").read_text())
    tta = [r.tta for r in runs if r.tta]
    doc = {"study": res.name, "trial": plan.number, **plan.record, "arch": plan.spec.to_dict(),
           "train": plan.train.to_dict(), "epochs": plan.train.epochs, "train_on_val": on_val,
           "trained_on": {k: seed0.get(k) for k in ("dataset", "train_images", "images", "subset", "image_size")},
           "augment": seed0.get("augment"), "test_set": test_set_name(res.cfg, len(runs[0].labels)),
           "test": ev.summarise_seeds([r.metrics for r in runs]),
           **({"test_tta": ev.summarise_seeds(tta)} if len(tta) == len(runs) else {}),
           **({"test_int8": int8} if (int8 := int8_results.summary([r.folder for r in runs])) else {}),
           "seeds": [{"seed": r.seed, "folder": r.folder.name, **brief([r])} for r in runs]}
    atomic_write_text(folder / "metrics.json", json.dumps(ev.jsonable(doc), indent=1))
    ev.write_per_class_csv(folder / "per_class.csv", [r.metrics["per_class"] for r in runs])


def write_ensemble(res: StudyResults, runs: dict[int, list[SeedRun]], out: Path,
                   unlabeled: list[Path] | None) -> dict[str, Any]:
    """Average the members' softmax per seed index; write ensemble_<a>-<b>/ next to the single models."""
    members = sorted(runs)
    name = fit_name(f"ensemble_{'-'.join(map(str, members))}")  # --top 60: 360 bytes, cut with a digest to fit
    folder = inside(res.folder, out / name)
    folder.mkdir(parents=True, exist_ok=True)
    names = res.class_names(runs[members[0]][0].probs.shape[1])
    per_seed, per_seed_tta = [], []
    for k in range(min(len(r) for r in runs.values())):
        group = [runs[n][k] for n in members]
        labels = group[0].labels
        if any(not torch.equal(g.labels, labels) for g in group):
            raise RuntimeError("ensemble members were tested on different images")
        probs = ev.ensemble_probs([g.probs for g in group])
        metrics = ev.classification_metrics(probs, labels, names)
        run = SeedRun(inside(res.folder, folder / f"seed_{k}"), group[0].seed, metrics, probs, labels)
        probs_tta = [g.probs_tta for g in group if g.probs_tta is not None]
        if len(probs_tta) == len(group):
            run.tta = ev.classification_metrics(ev.ensemble_probs(probs_tta), labels, names)
        per_seed_tta.append(run.tta)
        run.folder.mkdir(exist_ok=True)
        facts = {"study": res.name, "members": members, "seed_index": k,
                 "member_top1": {str(g.folder.parent.name): g.metrics["top1"] for g in group}}
        write_run_files(run, names, facts)
        if unlabeled is not None:  # every member predicted them (train_and_test with `unlabeled`)
            mean = ev.ensemble_probs([g.unlabeled for g in group if g.unlabeled is not None])
            write_predictions(run.folder / "predictions.csv", unlabeled, mean, names)
        per_seed.append(metrics)
    doc = {"study": res.name, "members": members, "method": "mean of the members' softmax probabilities",
           "test": ev.summarise_seeds(per_seed),
           "members_test": {str(n): ev.summarise_seeds([r.metrics for r in runs[n]]) for n in members}}
    tta = [m for m in per_seed_tta if m]
    tta = tta if len(tta) == len(per_seed_tta) else []
    if tta:
        doc["test_tta"] = ev.summarise_seeds(tta)
    atomic_write_text(folder / "metrics.json", json.dumps(ev.jsonable(doc), indent=1))
    ev.write_per_class_csv(folder / "per_class.csv", [m["per_class"] for m in per_seed])
    return {"folder": str(folder), **_brief_metrics(per_seed), **_brief_metrics(tta, "_tta")}


def write_predictions(path: Path, files: list[Path], probs: torch.Tensor, names: tuple[str, ...]) -> None:
    """predictions.csv: one row per unlabeled image, its file name and predicted class (wnid)."""
    pred = probs.argmax(1).tolist()
    with atomic_text(path) as f:
        w = csv.writer(f)
        w.writerow(["file", "wnid"])
        for p, k in zip(files, pred, strict=True):
            w.writerow([Path(p).name, names[k]])


def export_onnx(model: torch.nn.Module, spec: ArchSpec, path: Path) -> None:
    """model.onnx taking (batch, channels, H, W) normalised images, returning logits; batch is dynamic."""
    model = model.cpu().float().eval().to(memory_format=torch.contiguous_format)
    x = torch.zeros(2, spec.in_channels, spec.input_size, spec.input_size)
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(model, (x,), None, input_names=["images"], output_names=["logits"],
                                dynamic_shapes=({0: batch},), verbose=False)
    if program is None:  # (only an export to a file returns nothing)
        raise RuntimeError("torch.onnx.export returned no ONNX program")
    atomic_write(path, lambda f: f.write(program.model_proto.SerializeToString()))  # whole or not at all


def need_onnx() -> None:
    """Refuse --onnx up front (before hours of training) when the exporter's packages are missing."""
    try:
        import onnx  # noqa: F401 (imported only to learn that it is installed)
        import onnxscript  # noqa: F401 (imported only to learn that it is installed)
    except ImportError as e:
        raise UserError(f"--onnx needs the onnx exporter's packages ({e.name} is missing): "
                        f"pip install onnx onnxscript") from None


def test_set_name(cfg: SearchConfig, n: int) -> str:
    """Which held-out images the test numbers come from."""
    return f"{TEST_SETS.get(cfg.data.dataset, cfg.data.dataset)} ({n:,} images)"


def brief(runs: list[SeedRun]) -> dict[str, Any]:
    """Test top-1 (top-5) mean and std over the runs of one trial, plain, (top1_tta ...) with flip TTA and
    (int8_top1 ...) as an exported int8 model where `search export --evaluate` recorded one."""
    tta = [r.tta for r in runs if r.tta]
    tta = tta if len(tta) == len(runs) else []
    return {**_brief_metrics([r.metrics for r in runs]), **_brief_metrics(tta, "_tta"),
            **int8_results.brief([r.folder for r in runs])}


def _brief_metrics(metrics: list[dict[str, Any]], suffix: str = "") -> dict[str, Any]:
    """{'top1': mean, 'top1_std': std, ...} for the scalar test metrics (keys + suffix)."""
    out: dict[str, Any] = {}
    for key, stats in (ev.summarise_seeds(metrics) if metrics else {}).items():
        out[f"{key}{suffix}"], out[f"{key}{suffix}_std"] = stats["mean"], stats["std"]
    return out


# Columns of the printed table after the search's val_acc: (header, key of brief()); the int8 ones appear
# only where `search export --evaluate` recorded an int8 accuracy for a shown trial.
COLUMNS = [("test top-1 plain", "top1"), ("top-1 flip TTA", "top1_tta"), ("test top-5 plain", "top5")]
INT8_COLUMNS = [("int8 top-1", "int8_top1"), ("int8 - fp32", "int8_minus_fp32"), ("int8 images", "int8_images"),
                ("arena head", "int8_arena_head"), ("arena tail", "int8_arena_tail"), ("file bytes", "int8_file_bytes")]
COUNTS = ("int8_images", "int8_arena_head", "int8_arena_tail", "int8_file_bytes")  # whole numbers, no std


def summary_lines(res: StudyResults, plans: list[Plan], runs: dict[int, list[SeedRun]],
                  ensemble: dict[str, Any] | None) -> str:
    """The table printed at the end: search accuracy next to test accuracy (mean +- std over seeds)."""
    n = len(runs[plans[0].number][0].labels)
    briefs = {p.number: brief(runs[p.number]) for p in plans}
    int8 = any("int8_top1" in b for b in briefs.values())
    columns = COLUMNS + (INT8_COLUMNS if int8 else [])
    lines = [f"test set: {test_set_name(res.cfg, n)}; 'plain' = one pass, 'flip TTA' = mean softmax of each "
             f"image and its mirror"]
    if int8:
        lines.append("int8 = the exported int8 .tflite (search export --evaluate) on the first 'int8 images' test "
                     "images; 'int8 - fp32' = its top-1 minus the fp32 model's on those same images; arena: TFLite "
                     "Micro's, in bytes (head: activations, tail: persistent data); file bytes: the .tflite's")
    for p in plans:
        lines.append(f"trial {p.number} trained on {_recipe_of(runs[p.number][0])}")

    def row(trial: str, val: str, cells: list[str], params: str, folder: str | Path) -> str:
        return f"{trial:>6}  {val:>14}" + "".join(f"  {c:>17}" for c in cells) + f"  {params:>9}  {folder}"

    lines.append(row("trial", "search val_acc", [name for name, _ in columns], "params", "folder"))
    for p in plans:
        val = p.record.get("val_acc")
        lines.append(row(str(p.number), "None" if val is None else f"{val:.4f}",
                         [_cell(briefs[p.number], key) for _, key in columns], f"{p.record['params']:,}",
                         runs[p.number][0].folder.parent))
    if ensemble is not None:
        lines.append(row("ens.", "", [_cell(ensemble, key) for _, key in columns], "", ensemble["folder"]))
    return "\n".join(lines)


def _cell(b: dict[str, Any], key: str) -> str:
    """One figure of brief(): mean (± std over seeds); '-' where there is none (never a zero)."""
    if key not in b:
        return "-"
    if key in COUNTS:
        return f"{b[key]:,}"
    mean = f"{b[key]:+.4f}" if key == "int8_minus_fp32" else f"{b[key]:.4f}"
    return mean + (f" ± {b[f'{key}_std']:.4f}" if b.get(f"{key}_std") is not None else "")


def _recipe_of(run: SeedRun) -> str:
    """The recipe line recorded in a seed run's metrics.json."""
    return json.loads((run.folder / "metrics.json").read_text()).get("recipe", "?")
