"""`python -m search retrain results/<study>`: train chosen trials to full epochs, then test them once."""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

import blocks
from blocks import ArchSpec, build
from blocks.atomic import atomic_text, atomic_write, atomic_write_text
from blocks.io import UnreadableFile, safe_load

from ..cli import main_guard
from ..dashboard import attach_retrain
from ..errors import UserError
from ..progress import Progress
from ..device import resolve_device
from ..trainer import EpochResult, TrainSpec, fit, predict, resumable_epochs, seed_everything
from . import evaluate as ev
from . import recipe
from .folder_lock import clear_folder, lock_folder
from .results import StudyResults, open_results

SEED_STRIDE = 1000  # retrain seed k of a trial trains with the trial's search seed + k * SEED_STRIDE
TEST_SETS = {"cifar10": "CIFAR-10 test batch", "tiny_imagenet": "Tiny ImageNet official val",
             "synthetic": "synthetic test split", "imagefolder": "image folder test/ (or val/)"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; unset ones default to the YAML's retrain section."""
    p = argparse.ArgumentParser(prog="python -m search retrain", description=__doc__)
    p.add_argument("results", help="the study's results folder, e.g. results/cifar10_5m")
    pick = p.add_mutually_exclusive_group()
    pick.add_argument("--trial", type=int, action="append", metavar="N",
                      help="retrain trial N (repeatable; several trials are also ensembled)")
    pick.add_argument("--top", type=int, metavar="K",
                      help="retrain the K best complete trials and test their ensemble too (default: 1)")
    p.add_argument("--epochs", type=int, help="epochs of the full run (default: retrain.epochs of the YAML)")
    p.add_argument("--seeds", type=int, help="independent runs per trial, for mean and std (retrain.seeds)")
    p.add_argument("--train-on-val", action=argparse.BooleanOptionalAction, default=None,
                   help="train on train + validation images, the final step (retrain.train_on_val, default "
                        "true); --no-train-on-val keeps a validation curve")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a data.* or retrain.* key of the search's YAML, e.g. --set retrain.ema=null")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to train")
    p.add_argument("--storage", help="the study's SQLAlchemy URL (default: sqlite:///<results>/study.db)")
    p.add_argument("--study-name", help="the study, when its database holds several (default: the folder's own)")
    p.add_argument("--data-root", help="dataset folder, when it moved since the search (data.root)")
    p.add_argument("--onnx", action="store_true", help="also export model.onnx (needs the onnx package)")
    p.add_argument("--predict", action="store_true",
                   help="write predictions.csv for the unlabeled test split (Tiny ImageNet's test/)")
    p.add_argument("--fresh", action="store_true", help="discard earlier retrain output of these trials first")
    return p.parse_args(argv)


@dataclass
class Plan:
    """One trial to retrain: its number, verified spec, full-length TrainSpec and search results."""

    number: int
    spec: ArchSpec
    train: TrainSpec
    seed: int
    record: dict[str, Any]  # search-time facts: val_acc, params, flops, receptive_field


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


def full_length(train: TrainSpec, epochs: int) -> TrainSpec:
    """The trial's training settings for `epochs`; progressive-resizing steps keep their share of the run."""
    progressive = train.progressive
    if progressive:
        scale = epochs / train.epochs
        progressive = tuple((int(round(start * scale)), size) for start, size in progressive)
    return dataclasses.replace(train, epochs=epochs, progressive=progressive)


def make_plans(res: StudyResults, numbers: list[int], epochs: int) -> list[Plan]:
    """Rebuild and verify every chosen trial before anything trains; the retrain recipe is laid over its settings."""
    from ..rules import train_violation

    plans = []
    for n in numbers:
        spec, record = res.verified_spec(n)
        try:
            train = full_length(TrainSpec.from_dict(res.trial(n).user_attrs["train"]), epochs)
            train = recipe.final_train(train, res.cfg.retrain)
        except (KeyError, ValueError, TypeError) as e:
            raise UserError(f"trial {n}: cannot read its training settings: {e}") from None
        if (why := train_violation(spec, train, res.cfg)) is not None:
            raise UserError(f"--epochs {epochs}: {why} (in {res.cfg.path})")
        seed = res.trial(n).user_attrs.get("seed", res.cfg.search.seed + n)
        plans.append(Plan(n, spec, train, int(seed), record))
    res.check_data([p.spec for p in plans])  # before anything trains or is written
    return plans


def retrain(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Retrain, test and ensemble what the arguments choose; returns the summary written to disk."""
    recipe.check_overrides(args.overrides)
    res = open_results(Path(args.results), args.storage, args.data_root, args.overrides, args.study_name)
    res.cfg = cfg = dataclasses.replace(res.cfg, data=recipe.final_data(res.cfg.data, args.overrides, log))
    epochs = args.epochs if args.epochs is not None else cfg.retrain.epochs
    seeds = args.seeds if args.seeds is not None else cfg.retrain.seeds
    on_val = cfg.retrain.train_on_val if args.train_on_val is None else args.train_on_val
    if epochs < 1 or seeds < 1:
        raise UserError(f"--epochs and --seeds must be at least 1, got {epochs} and {seeds}")
    numbers = res.choose(args.trial, args.top)
    plans = make_plans(res, numbers, epochs)
    unlabeled = _unlabeled_paths(cfg) if args.predict else None
    if args.onnx:
        _need_onnx()
    device = resolve_device(args.device)
    out = res.folder / "retrain"
    log(f"retraining trial{'s' if len(plans) > 1 else ''} {', '.join(map(str, numbers))} of study "
        f"{res.name!r}: {epochs} epoch{'s' if epochs > 1 else ''}, {seeds} seed{'s' if seeds > 1 else ''}, "
        f"{'train + val' if on_val else 'train'} images, on {device} -> {out}")
    runs: dict[int, list[SeedRun]] = {}
    with contextlib.ExitStack() as locks:
        for plan in plans:  # every trial's folder before any training: a clash is refused at once, not hours in
            lock_folder(out / f"{plan.number:05d}", locks)
        for i, plan in enumerate(plans):
            folder = out / f"{plan.number:05d}"
            if args.fresh:
                clear_folder(folder)
            runs[plan.number] = [train_and_test(res, plan, k, on_val, device, folder, unlabeled, args.onnx, log,
                                                later_runs=(len(plans) - i) * seeds - k - 1)
                                 for k in range(seeds)]
            write_trial_summary(res, plan, runs[plan.number], on_val, folder)
            attach_retrain(res.study, plan.number, res.folder, folder)  # optuna-dashboard opens them from the trial
    summary = {"trials": {n: _brief(r) for n, r in runs.items()}}
    if len(plans) > 1:
        summary["ensemble"] = write_ensemble(res, runs, out, unlabeled)
    log(summary_lines(res, plans, runs, summary.get("ensemble")))
    return summary


def train_and_test(res: StudyResults, plan: Plan, k: int, on_val: bool, device: torch.device, folder: Path,
                   unlabeled: list[Path] | None, onnx: bool, log: Callable[[str], None],
                   later_runs: int = 0) -> SeedRun:
    """Train (or resume, or reuse) seed run k of one trial, test it and write its files.

    `later_runs`: seed runs still to come after this one (every trial's), for the total ETA.
    """
    from ..data.augment import DEFAULT_POLICY, policy_steps
    from ..data.datasets import make_loaders, make_predict_loader

    cfg, spec, train = res.cfg, plan.spec, plan.train
    seed = plan.seed + k * SEED_STRIDE
    run_dir = folder / f"seed_{k}"
    steps = cfg.retrain.augment if cfg.retrain.augment is not None else policy_steps(
        cfg.augment, train.augment_policy or DEFAULT_POLICY)
    loaders = make_loaders(cfg.data, steps, train.batch_size, seed=seed, device=device.type, test=True,
                           train_on_val=on_val, where=f"{cfg.path}: augment")
    facts = recipe.trained_on(loaders, cfg.data, on_val)
    _claim(run_dir, {"study": res.name, "trial": plan.number, "seed": seed, "epochs": train.epochs,
                     "train_on_val": on_val, **facts, "augment": steps, "arch": spec.to_dict(),
                     "train": train.to_dict()})
    tag = f"[trial {plan.number} seed {k}]"
    log(f"{tag} {recipe.describe(train, steps, facts)}")
    model_path = run_dir / "model.pt"
    if model_path.is_file():
        log(f"{tag} already trained ({model_path}); testing the saved model")
        try:
            model = blocks.load(model_path, device)
        except ValueError as e:
            raise UserError(f"{e}; delete it (or rerun with --fresh) to train seed {k} of trial {plan.number} "
                            f"again") from None
        history = model.extra["history"]
        (run_dir / "train_state.pt").unlink(missing_ok=True)  # left by a stop between saving and cleaning up
    else:
        seed_everything(seed)
        model = build(spec)
        state = run_dir / "train_state.pt"
        done = resumable_epochs(state, model, train, lambda why: log(f"{tag} {why}; training restarts from epoch 1"))
        if done:
            log(f"{tag} resuming from epoch {done} of {train.epochs} ({state})")

        def on_epoch(r: EpochResult) -> None:
            if r.epoch <= done:
                return  # fit replays the epochs it resumed past; they were logged when they ran
            val = "" if on_val else f" val_acc {r.val_acc:.4f}"
            log(f"{tag} epoch {r.epoch}/{train.epochs} loss {r.train_loss:.4f} train_acc {r.train_acc:.4f}{val} "
                f"({r.image_size}px, {r.time_s:.1f}s)")

        progress = Progress(tag[1:-1], train.epochs, run_name="run", total_name="retrain", later_runs=later_runs,
                            log=log)
        results = fit(model, loaders.train, None if on_val else loaders.val, train, device,
                      on_epoch=lambda r: (progress.close(), on_epoch(r)), checkpoint=state,
                      native_size=loaders.info.image_size, seed=seed, on_batch=progress)
        history = [dataclasses.asdict(h) for h in results]
        info = loaders.info
        blocks.save(model_path, model, spec, extra={
            "study": res.name, "trial": plan.number, "seed": seed, "epochs": train.epochs, "train_on_val": on_val,
            "train": train.to_dict(), "dataset": cfg.data.dataset, "class_names": list(info.class_names),
            "mean": list(info.mean), "std": list(info.std), "image_size": info.image_size, "history": history})
        state.unlink(missing_ok=True)  # the finished model is the result; the optimizer state is not needed
    probs, labels = _test(model, loaders.test, device, train.amp, run_dir, tag, log)
    metrics = ev.classification_metrics(probs, labels, loaders.info.class_names)
    run = SeedRun(run_dir, seed, metrics, probs, labels, history=history)
    if cfg.retrain.tta:
        run.probs_tta = predict(model, loaders.test, device, train.amp, tta=True)[0]
        run.tta = ev.classification_metrics(run.probs_tta, labels, loaders.info.class_names)
    names = loaders.info.class_names or tuple(str(c) for c in range(probs.shape[1]))
    write_run_files(run, names, {"study": res.name, "trial": plan.number, "seed": seed, "epochs": train.epochs,
                                 "train_on_val": on_val, "trained_on": facts, "augment": steps,
                                 "recipe": recipe.describe(train, steps, facts), "train": train.to_dict(),
                                 "weights": "EMA" if train.ema is not None else "last step",
                                 "test_set": test_set_name(cfg, len(labels))})
    if unlabeled is not None:
        loader = make_predict_loader(cfg.data, unlabeled, 2 * train.batch_size, device=device.type)
        run.unlabeled = predict(model, loader, device, train.amp)[0]
        write_predictions(run_dir / "predictions.csv", unlabeled, run.unlabeled, names)
    if onnx:
        export_onnx(model, spec, run_dir / "model.onnx")
    top5 = f" top-5 {metrics['top5']:.4f}" if "top5" in metrics else ""
    tta = f"; flip TTA top-1 {run.tta['top1']:.4f}" if run.tta else ""
    log(f"{tag} test top-1 (plain) {metrics['top1']:.4f}{top5}{tta} -> {run_dir}")
    return run


def _test(model: torch.nn.Module, loader: Any, device: torch.device, amp: bool, run_dir: Path, tag: str,
          log: Callable[[str], None]) -> tuple[torch.Tensor, torch.Tensor]:
    """Test-set softmax and labels; reused from test_probs.pt when it is newer than model.pt (nothing new to test)."""
    cache, model_path = run_dir / "test_probs.pt", run_dir / "model.pt"
    if cache.is_file() and model_path.is_file() and cache.stat().st_mtime >= model_path.stat().st_mtime:
        try:
            stored = safe_load(cache)
            probs, labels = stored["probs"], stored["labels"]
            usable = isinstance(probs, torch.Tensor) and isinstance(labels, torch.Tensor)
        except (UnreadableFile, OSError, TypeError, KeyError) as e:
            log(f"{tag} cannot read the stored test results {cache} ({e}); testing the model again")
            usable = False
        if usable and len(labels) == len(loader.dataset):
            log(f"{tag} reusing the stored test results ({cache})")
            return probs, labels
    probs, labels = predict(model, loader, device, amp, on_batch=Progress(tag[1:-1], 0, log=log))
    atomic_write(cache, lambda f: torch.save({"probs": probs, "labels": labels}, f))
    return probs, labels


def _claim(run_dir: Path, settings: dict[str, Any]) -> None:
    """Record what this run folder trains; refuse to resume or reuse one made with other settings."""
    path = run_dir / "run.json"
    if path.is_file():
        old = json.loads(path.read_text())
        diff = [k for k in settings if old.get(k) != json.loads(json.dumps(settings[k]))]
        if diff:
            was = ", ".join(f"{k}={old.get(k)!r}" for k in diff if k not in ("arch", "train")) or ", ".join(diff)
            raise UserError(f"{run_dir} was retrained with other settings ({was}); rerun with those options to "
                            f"resume or reuse it, or pass --fresh to start over")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(settings, indent=1))


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
    doc = {"study": res.name, "trial": plan.number, **plan.record, "arch": plan.spec.to_dict(),
           "train": plan.train.to_dict(), "epochs": plan.train.epochs, "train_on_val": on_val,
           "trained_on": {k: seed0.get(k) for k in ("dataset", "train_images", "images", "subset", "image_size")},
           "augment": seed0.get("augment"), "test_set": test_set_name(res.cfg, len(runs[0].labels)),
           "test": ev.summarise_seeds([r.metrics for r in runs]),
           **({"test_tta": ev.summarise_seeds([r.tta for r in runs])} if all(r.tta for r in runs) else {}),
           "seeds": [{"seed": r.seed, "folder": r.folder.name, **_brief([r])} for r in runs]}
    atomic_write_text(folder / "metrics.json", json.dumps(ev.jsonable(doc), indent=1))
    ev.write_per_class_csv(folder / "per_class.csv", [r.metrics["per_class"] for r in runs])


def write_ensemble(res: StudyResults, runs: dict[int, list[SeedRun]], out: Path,
                   unlabeled: list[Path] | None) -> dict[str, Any]:
    """Average the members' softmax per seed index; write ensemble_<a>-<b>/ next to the single models."""
    members = sorted(runs)
    folder = out / f"ensemble_{'-'.join(map(str, members))}"
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
        run = SeedRun(folder / f"seed_{k}", group[0].seed, metrics, probs, labels)
        if all(g.probs_tta is not None for g in group):
            run.tta = ev.classification_metrics(ev.ensemble_probs([g.probs_tta for g in group]), labels, names)
        per_seed_tta.append(run.tta)
        run.folder.mkdir(exist_ok=True)
        facts = {"study": res.name, "members": members, "seed_index": k,
                 "member_top1": {str(g.folder.parent.name): g.metrics["top1"] for g in group}}
        write_run_files(run, names, facts)
        if unlabeled is not None:
            mean = ev.ensemble_probs([g.unlabeled for g in group])
            write_predictions(run.folder / "predictions.csv", unlabeled, mean, names)
        per_seed.append(metrics)
    doc = {"study": res.name, "members": members, "method": "mean of the members' softmax probabilities",
           "test": ev.summarise_seeds(per_seed),
           "members_test": {str(n): ev.summarise_seeds([r.metrics for r in runs[n]]) for n in members}}
    tta = per_seed_tta if all(per_seed_tta) else []
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
    torch.onnx.export(model, (x,), str(path), input_names=["images"], output_names=["logits"],
                      dynamic_shapes=({0: batch},), external_data=False, verbose=False)


def _need_onnx() -> None:
    """Refuse --onnx up front (before hours of training) when the exporter's packages are missing."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise UserError(f"--onnx needs the onnx exporter's packages ({e.name} is missing): "
                        f"pip install onnx onnxscript") from None


def _unlabeled_paths(cfg: Any) -> list[Path]:
    """The unlabeled test images for --predict (Tiny ImageNet's test/images), or a UserError."""
    from ..data.datasets import tiny_imagenet_unlabeled_test

    if cfg.data.dataset != "tiny_imagenet":
        raise UserError(f"--predict: dataset {cfg.data.dataset!r} has no unlabeled test split (only "
                        f"tiny_imagenet's test/images); its labelled test set is evaluated anyway")
    return tiny_imagenet_unlabeled_test(cfg.data.root)


def test_set_name(cfg: Any, n: int) -> str:
    """Which held-out images the test numbers come from."""
    return f"{TEST_SETS.get(cfg.data.dataset, cfg.data.dataset)} ({n:,} images)"


def _brief(runs: list[SeedRun]) -> dict[str, Any]:
    """Test top-1 (top-5) mean and std over the runs of one trial, plain and (top1_tta ...) with flip TTA."""
    tta = [r.tta for r in runs] if all(r.tta for r in runs) else []
    return {**_brief_metrics([r.metrics for r in runs]), **_brief_metrics(tta, "_tta")}


def _brief_metrics(metrics: list[dict[str, Any]], suffix: str = "") -> dict[str, Any]:
    """{'top1': mean, 'top1_std': std, ...} for the scalar test metrics (keys + suffix)."""
    out: dict[str, Any] = {}
    for key, stats in (ev.summarise_seeds(metrics) if metrics else {}).items():
        out[f"{key}{suffix}"], out[f"{key}{suffix}_std"] = stats["mean"], stats["std"]
    return out


def summary_lines(res: StudyResults, plans: list[Plan], runs: dict[int, list[SeedRun]],
                  ensemble: dict[str, Any] | None) -> str:
    """The table printed at the end: search accuracy next to test accuracy (mean +- std over seeds)."""

    def pm(b: dict[str, Any], key: str) -> str:
        if key not in b:
            return "-"
        return f"{b[key]:.4f}" + (f" ± {b[f'{key}_std']:.4f}" if b.get(f"{key}_std") is not None else "")

    n = len(runs[plans[0].number][0].labels)
    lines = [f"test set: {test_set_name(res.cfg, n)}; 'plain' = one pass, 'flip TTA' = mean softmax of each "
             f"image and its mirror"]
    for p in plans:
        lines.append(f"trial {p.number} trained on {_recipe_of(runs[p.number][0])}")
    lines.append(f"{'trial':>6}  {'search val_acc':>14}  {'test top-1 plain':>17}  {'top-1 flip TTA':>17}  "
                 f"{'test top-5 plain':>17}  {'params':>9}  folder")
    for p in plans:
        b = _brief(runs[p.number])
        val = p.record.get("val_acc")
        lines.append(f"{p.number:>6}  {val if val is None else f'{val:.4f}':>14}  {pm(b, 'top1'):>17}  "
                     f"{pm(b, 'top1_tta'):>17}  {pm(b, 'top5'):>17}  {p.record['params']:>9,}  "
                     f"{runs[p.number][0].folder.parent}")
    if ensemble is not None:
        lines.append(f"{'ens.':>6}  {'':>14}  {pm(ensemble, 'top1'):>17}  {pm(ensemble, 'top1_tta'):>17}  "
                     f"{pm(ensemble, 'top5'):>17}  {'':>9}  {ensemble['folder']}")
    return "\n".join(lines)


def _recipe_of(run: SeedRun) -> str:
    """The recipe line recorded in a seed run's metrics.json."""
    return json.loads((run.folder / "metrics.json").read_text()).get("recipe", "?")


def main(argv: list[str] | None = None) -> int:
    """Entry point: one-line errors, exit status 2 for bad input, 130 for Ctrl-C (rerun to resume)."""
    args = parse_args(argv)
    return main_guard(lambda: retrain(args))


if __name__ == "__main__":
    sys.exit(main())
