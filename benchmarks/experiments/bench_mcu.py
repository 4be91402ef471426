"""MLPerf Tiny's image-classification problem on this CPU: search CIFAR-10 under ResNet-8's budget, retrain.

Phases (each resumes where it stopped; after each, commit benchmarks/experiments/mcu/, which holds what a later
session needs: the study database, the cost of every segment run, and every finished retrain's metrics and weights),
each `python -m benchmarks.experiments.bench_mcu PHASE` from the repository root (below: `bench_mcu PHASE`):
  bench_mcu dryrun  --data-root DIR   # the dry run's estimate of the search, kept to compare
  bench_mcu search  --data-root DIR   # spaces/cifar10_mcu.yaml, 45,000 / 5,000 split
  bench_mcu retrain --data-root DIR   # winner, resnet8, resnet14: 3 seeds on 50,000, tested once
  bench_mcu retrain --epochs 120 --only 'baseline resnet8' --seeds 1 ...  # a longer recipe
  bench_mcu search --sampler random --sampler-seed 1 ...  # a control arm, its own folders
  bench_mcu table                     # the table for BENCHMARKS.md, every recipe's rows (and a JSON record)
  bench_mcu samplers                  # TPE's search against the control arms
  bench_mcu retrain --ranks 2 --seeds 1 ... # the runner-up (for the ranking check)
  bench_mcu ranking                   # search validation against final test, Spearman's rho (and a JSON record)
  bench_mcu verify  --data-root DIR   # every committed model.pt against its metrics.json
  bench_mcu int8    --data-root DIR   # every committed model_int8.tflite in TFLite Micro
DIR holds `cifar-10-batches-py/`, made offline from the JPEG copy with
`python ../shared/tools/cifar-pickle.py <dir>/cifar-10-images-jpg DIR`: label the figures "CIFAR-10 (JPEG copy)".
The search and retrains run through the user's own commands (`python -m search.run`, `python -m search retrain`);
this script only chooses what to run, snapshots the study, and times each command (wall and CPU seconds of
the command and its children, from `resource.getrusage`).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks import harness
from benchmarks.harness import commit

ROOT = harness.ROOT
SPACE = ROOT / "spaces" / "cifar10_mcu.yaml"
STUDY = "cifar10_mcu"
DATA = Path(__file__).resolve().parent / "mcu"  # committed: study.db, cost.json, retrain/<label>/seed_k/*
KEPT = ("metrics.json", "run.json", "curves.csv", "model.pt")  # a retrained seed's files in the snapshot
SNAPSHOT = DATA  # this run's arm: DATA, or DATA/<sampler>_seed<k> for a control arm (main() sets it)
DESIGNS = ("search winner", "baseline resnet8", "baseline resnet14")
PLATEAU_GAIN = 0.003  # a doubling of the epochs that adds less test top-1 than this (0.3 points) marks the plateau
# mlcommons/tiny PR #116: the reference ResNet-8 on CIFAR-10's own pixels (not our JPEG copy), 500 epochs of
# Adam at batch 32, lr 1e-3 decayed 0.99 an epoch, rotation, shifts and flips; full-integer int8 via TFLite.
OFFICIAL = ("| official ResNet-8 (mlcommons/tiny PR #116: CIFAR-10's own pixels, 500 epochs Adam, batch 32) | - | "
            "78,666 | 12,677,760 | - | - | 500 | 1 | 87.2 | - | 87.0 | - |")


def machine() -> str:
    """CPU model, cores and whether it runs bf16 natively (which `train.amp: auto` follows): as cost.json's
    segments have always named their machine."""
    model, flags = harness.cpu_info()
    bf16 = bool(flags & {"avx512_bf16", "amx_bf16"})
    return f"{model}, {os.cpu_count()} cores, {'bf16' if bf16 else 'no bf16 (fp32)'}"


def timed(label: str, cmd: list[str], threads: int | None = None, rederive: bool = False) -> int:
    """Run `cmd` with this checkout on PYTHONPATH; append its wall and CPU seconds to cost.json under `label`,
    with the commit it started on and the threads it had (OMP_NUM_THREADS; unset = all cores); `rederive` marks
    a seed trained again (`retrain --rederive`), so the table's cost per seed counts it as a training of its own."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    print("$", " ".join(cmd), flush=True)
    load, rev = os.getloadavg()[0], commit()
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.time()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
    # Ctrl-C or SIGTERM (a session's end) goes on to the command, which stops at a safe point; this process
    # waits for it and still records the segment, whose epochs a rerun resumes from.
    previous = {s: signal.signal(s, lambda signum, frame: proc.send_signal(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    segment = {"label": label, "start": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(start)),
               "wall_s": round(time.time() - start, 1), "cpu_s": round(cpu, 1), "exit": code,
               "load_before": round(load, 2), "commit": rev, "machine": machine(),
               "threads": env.get("OMP_NUM_THREADS", "all"), "cmd": cmd[2:], **({"rederive": True} if rederive else {})}
    with snapshot_lock():
        costs = json.loads((SNAPSHOT / "cost.json").read_text()) if (SNAPSHOT / "cost.json").exists() else []
        (SNAPSHOT / "cost.json").write_text(json.dumps(costs + [segment], indent=1))
    return code


@contextlib.contextmanager
def snapshot_lock() -> Iterator[None]:
    """Held while cost.json or the snapshot is written: two retrain chains may run side by side."""
    SNAPSHOT.mkdir(parents=True, exist_ok=True)
    with open(SNAPSHOT / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def recipe(args: argparse.Namespace) -> str:
    """The snapshot suffix of a retrain recipe other than the shipped one ('' or e.g. '_60ep')."""
    return f"_{args.epochs}ep" if getattr(args, "epochs", None) else ""


def arm(args: argparse.Namespace) -> str:
    """The search arm's folder name: '' for the shipped TPE search (seed 0), e.g. 'random_seed1' for a control."""
    return "" if (args.sampler, args.sampler_seed) == ("tpe", 0) else f"{args.sampler}_seed{args.sampler_seed}"


def results(args: argparse.Namespace) -> Path:
    """The study's results folder, restored from the committed snapshot when this machine has none; a recipe
    with other epochs gets a folder of its own, so that its seeds never resume another recipe's."""
    folder = Path(args.results_dir) / arm(args) / recipe(args).lstrip("_") / STUDY
    for name in ("study.db", "config.yaml"):  # retrain reads the study's config.yaml (its retrain: recipe)
        if not (folder / name).exists() and (SNAPSHOT / name).exists():
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy2(SNAPSHOT / name, folder / name)
            print(f"restored {folder / name} from {SNAPSHOT / name}")
    return folder


def kept_run(label: str, suffix: str = "") -> Path:
    """A design's retrain folder in the snapshot: retrain/<label with underscores><recipe suffix>/."""
    return SNAPSHOT / "retrain" / (label.replace(" ", "_") + suffix)


def restore_seeds(folder: Path, designs: dict[int, str], suffix: str = "") -> None:
    """Each seed the snapshot holds weights or a training state of, into a results folder that has neither:
    `search retrain` then tests a finished seed's model.pt again instead of training it anew (a fresh
    machine's retrain of seed 2 would otherwise train seeds 0 and 1 first), and resumes an unfinished seed
    from its last epoch's train_state.pt (a run longer than a session goes on in the next one)."""
    for number, label in designs.items():
        for kept in sorted(kept_run(label, suffix).glob("seed_*")):
            out = folder / "retrain" / f"{number:05d}" / kept.name
            state = (kept / "model.pt").is_file() or (kept / "train_state.pt").is_file()
            if not state or (out / "model.pt").exists() or (out / "train_state.pt").exists():
                continue
            out.mkdir(parents=True, exist_ok=True)
            for name in (*KEPT, "train_state.pt"):
                if (kept / name).is_file():
                    shutil.copy2(kept / name, out / name)
            print(f"restored {out} from {kept}")


def snapshot(folder: Path, suffix: str = "") -> None:
    """Copy the study database (SQLite's online backup: consistent while a worker writes) and retrain metrics."""
    with snapshot_lock():
        _snapshot(folder, suffix)


def _snapshot(folder: Path, suffix: str = "") -> None:
    """snapshot(), under its lock; another recipe's folder holds a copy of the study, not to be copied back."""
    if (folder / "study.db").exists() and not suffix:
        with sqlite3.connect(folder / "study.db") as src, sqlite3.connect(SNAPSHOT / "study.db.tmp") as dst:
            src.backup(dst)
        os.replace(SNAPSHOT / "study.db.tmp", SNAPSHOT / "study.db")
    if (folder / "config.yaml").exists() and not suffix:
        shutil.copy2(folder / "config.yaml", SNAPSHOT / "config.yaml")
    for number, label in contenders(folder).items():
        for seed in (folder / "retrain" / f"{number:05d}").glob("seed_*"):
            kept = kept_run(label, suffix) / seed.name
            finished = (seed / "model.pt").is_file()
            # model.pt (a few hundred KB): every figure can be re-evaluated without retraining; an unfinished
            # seed's train_state.pt (weights, momentum, EMA: about 1 MB) lets the next session resume it
            for f in [seed / name for name in (*KEPT, *(() if finished else ("train_state.pt",)))]:
                if not f.is_file():
                    continue
                kept.mkdir(parents=True, exist_ok=True)
                if f.name == "metrics.json" and (kept / f.name).exists():
                    _copy_metrics(f, kept / f.name)
                else:
                    shutil.copy2(f, kept / f.name)
            if finished:
                (kept / "train_state.pt").unlink(missing_ok=True)


def _copy_metrics(new: Path, kept: Path) -> None:
    """The results folder's metrics.json over the snapshot's, keeping the snapshot's `int8` record (written by the
    `int8` phase into the snapshot only) while the seed's model.pt is the one it was measured on: a retrain that
    only tested a finished seed again dropped it."""
    from search.files import atomic_write_text

    doc, old = json.loads(new.read_text()), json.loads(kept.read_text())
    same_model = (new.parent / "model.pt").is_file() and (kept.parent / "model.pt").is_file() and \
        (new.parent / "model.pt").read_bytes() == (kept.parent / "model.pt").read_bytes()
    if "int8" in old and "int8" not in doc and same_model:
        doc["int8"] = old["int8"]
    atomic_write_text(kept, json.dumps(doc, indent=1))


def trials(folder: Path) -> list:
    """The study's trials (optuna imported here: the script's --help needs nothing)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{folder / 'study.db'}")
    return study.get_trials(deepcopy=False)


def contenders(folder: Path, ranks: tuple[int, ...] = ()) -> dict[int, str]:
    """Trial number -> label: the best complete searched trial, every complete baseline, and the searched trials
    of the given ranks by validation top-1 or with a retrain folder already ('search rank 2': the runner-up)."""
    if not (folder / "study.db").exists():
        return {}
    done = [t for t in trials(folder) if t.state.name == "COMPLETE" and t.values]
    searched = sorted((t for t in done if "baseline" not in t.user_attrs), key=lambda t: -t.values[0])
    out = {searched[0].number: "search winner"} if searched else {}
    out.update({t.number: f"baseline {t.user_attrs['baseline']}" for t in done if "baseline" in t.user_attrs})
    out.update({t.number: f"search rank {r}" for r, t in enumerate(searched[1:], start=2)
                if r in ranks or (folder / "retrain" / f"{t.number:05d}").is_dir()})
    return out


def search_cmd(args: argparse.Namespace) -> list[str]:
    """`python -m search.run` on the space, as this benchmark runs it."""
    return [sys.executable, "-m", "search.run", str(SPACE), "--results-dir", str(Path(args.results_dir) / arm(args)),
            "--workers", str(args.workers), "--data-root", args.data_root, "--set", "data.download=false",
            *(["--set", f"search.sampler={args.sampler}", "--set", f"search.seed={args.sampler_seed}",
               "--set", "train.amp=false"] if arm(args) else []),  # fp32 as TPE's search ran, on any VM
            *[a for s in args.set for a in ("--set", s)]]


def dryrun(args: argparse.Namespace) -> int:
    """The dry run's estimate of this search (same workers and settings), saved to compare with the search."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([*search_cmd(args), "--dry-run"], env=env, cwd=ROOT, capture_output=True, text=True)
    print(proc.stdout + proc.stderr, end="")
    if proc.returncode == 0:
        SNAPSHOT.mkdir(parents=True, exist_ok=True)
        head = f"# {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC, {machine()}, commit {commit()}\n"
        (SNAPSHOT / "dryrun.txt").write_text(head + proc.stdout)
    return proc.returncode


def search(args: argparse.Namespace) -> int:
    """The search, resumed where it stopped: `--workers` processes, one thread each; `--timeout` bounds a
    segment (no new trial starts after it), so that a segment ends, and is timed, inside a session."""
    folder = results(args)
    cmd = search_cmd(args) + (["--timeout", str(args.timeout)] if args.timeout else [])
    code = timed("search", cmd, threads=None)
    snapshot(folder)
    return code


def retrain(args: argparse.Namespace) -> int:
    """Each design's retrain, a seed at a time (timed and snapshotted each, so that a session's end loses at
    most one seed's progress); a finished seed is kept and only tested again, an interrupted one resumes.
    fp32 always (`retrain.amp=false`): the search ran in fp32, and a session on a bf16 VM would otherwise
    retrain some designs in bf16."""
    folder = results(args)
    designs = contenders(folder, tuple(args.ranks))
    restore_seeds(folder, designs, recipe(args))
    missing = [d for d in DESIGNS if d not in designs.values()]
    if missing:
        sys.exit(f"error: the study has no complete {', '.join(missing)} yet: finish `search` first")
    for number, label in designs.items():
        if (args.only and label not in args.only) or (args.ranks and not label.startswith("search rank ")):
            continue
        for k in range(args.seeds):
            done = kept_run(label, recipe(args)) / f"seed_{k}"
            if (done / "metrics.json").exists() and ((done / "model.pt").exists() or not args.rederive):
                continue
            cmd = [sys.executable, "-m", "search", "retrain", str(folder), "--trial", str(number),
                   "--seeds", str(k + 1), "--data-root", args.data_root, "--set", "retrain.amp=false",
                   *(["--epochs", str(args.epochs)] if args.epochs else [])]
            code = timed(f"retrain {label}{recipe(args).replace('_', ' ')}", cmd,
                         rederive=(done / "metrics.json").exists())
            snapshot(folder, recipe(args))
            if code:
                return code
    return 0


def load_retrain_epochs(folder: Path) -> int:
    """The shipped recipe's epochs, from the study's config.yaml."""
    from search.config import load_config

    return load_config(folder / "config.yaml").retrain.epochs


def int8_cell(int8: list[tuple[float, float]], seeds: int) -> str:
    """The int8 column: over every seed, or, where fewer seeds were exported, which ones and their own fp32."""
    if not int8:
        return "-"
    if len(int8) == seeds:
        return fmt([a for a, _ in int8])
    return f"{fmt([a for a, _ in int8])} ({len(int8)} of {seeds} seeds; their fp32 {fmt([f for _, f in int8])})"


def fmt(values: list[float]) -> str:
    """mean +- std (n-1) of accuracies, in %; one seed has no spread, so none is shown."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} +- {100 * statistics.stdev(values):.2f}"


def search_summary(study: list, costs: list[dict], workers: int) -> str:
    """The search's cost, what became of its trials (pruned after which epoch), and how busy its workers were:
    the trials' own durations against `workers` x the segments' wall time."""
    from collections import Counter

    from search.trials import count_finished, count_kinds, is_baseline, is_rejected

    segments = [c for c in costs if c["label"] == "search"]
    wall_s = sum(c["wall_s"] for c in segments)
    kinds = count_kinds(t for t in study if not is_baseline(t))
    pruned_after = Counter(t.last_step for t in study if t.state.name == "PRUNED" and not is_rejected(t))
    busy_s = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in study
                 if t.datetime_start and t.datetime_complete)
    counted = count_finished(study)
    return (f"\nsearch: {len(segments)} segment(s), {wall_s / 3600:.2f} h wall, "
            f"{sum(c['cpu_s'] for c in segments) / 3600:.2f} CPU-h, {counted} searched trials counted "
            f"({kinds['complete']} complete, {kinds['pruned']} pruned: "
            f"{', '.join(f'{n} after epoch {e}' for e, n in sorted(pruned_after.items()))}), "
            f"{kinds['rejected']} rejected before building, {kinds['failed']} failed (interrupted, then retried), "
            f"{sum(map(is_baseline, study))} baselines; {counted / (wall_s / 3600) if wall_s else 0:.1f} searched "
            f"trials per hour; {workers} workers busy {busy_s:,.0f} of {workers * wall_s:,.0f} worker-seconds "
            f"({busy_s / (workers * wall_s) if wall_s else 0:.0%}); "
            f"machines: {sorted({c['machine'] for c in segments})}")


def retrained(folder: Path) -> Iterator[tuple[str, str, int, list[Path]]]:
    """(design, recipe suffix, trial number, seed folders) for every snapshot folder under retrain/: the
    shipped recipe ('') and each other one ('_60ep'), in the order of contenders(), runners-up included."""
    ranks = tuple(int(r.name.split("_")[2]) for r in (SNAPSHOT / "retrain").glob("search_rank_*")
                  if r.name.split("_")[2].isdigit())
    for number, label in contenders(folder, ranks).items():
        stem = label.replace(" ", "_")
        runs = sorted((SNAPSHOT / "retrain").glob(f"{stem}*"), key=lambda r: int("0" + r.name[len(stem) + 1:-2]))
        for run in runs:  # the shipped recipe, then longer ones by their epochs
            suffix = run.name[len(stem):]
            if suffix and not (suffix.startswith("_") and suffix.endswith("ep") and suffix[1:-2].isdigit()):
                continue  # another design whose name starts with this one's
            seeds = sorted(p.parent for p in run.glob("seed_*/metrics.json"))
            if seeds:  # a recipe whose first seed is still training (its train_state.pt only) has no row yet
                yield label, suffix, number, seeds


def int8_top1(seed: Path) -> float | None:
    """The int8 model's test top-1 from its export sidecar: TFLite Micro's (`int8` phase) where it ran, else
    LiteRT's interpreter's (`search export ... --evaluate 10000`); None when neither covered all 10,000 images."""
    sidecar = seed / "model_int8.json"
    doc = json.loads(sidecar.read_text()) if sidecar.exists() else {}
    for acc in (doc.get("accuracy_micro"), doc.get("accuracy")):
        if acc and acc.get("images") == 10000:
            return float(acc["int8_top1"])
    return None


def plateau_lines(recipes: dict[str, dict[int, list[float]]]) -> list[str]:
    """For each design retrained at doubling recipes (30, 60, 120 epochs...), the mean test top-1 each doubling
    added, and its plateau recipe: the first E whose doubling to 2E added less than PLATEAU_GAIN."""
    lines = []
    for label, by_epochs in recipes.items():
        gains = [(e, 2 * e, statistics.mean(by_epochs[2 * e]) - statistics.mean(by_epochs[e]))
                 for e in sorted(by_epochs) if 2 * e in by_epochs]
        if not gains:
            continue
        flat = next((e for e, _, gain in gains if gain < PLATEAU_GAIN), None)
        said = ", ".join(f"{e} -> {e2} {100 * gain:+.2f}" for e, e2, gain in gains)
        verdict = (f"plateau at {flat} epochs (doubling them added less than {100 * PLATEAU_GAIN:.1f} points)"
                   if flat is not None else
                   f"NOT at its plateau by {gains[-1][1]} epochs (each doubling added {100 * PLATEAU_GAIN:.1f} "
                   f"points or more)")
        lines.append(f"{label}: test top-1 per doubling of the epochs {said}: {verdict}")
    return lines


def same_recipe_lines(recipes: dict[str, dict[int, list[float]]], shipped: int) -> list[str]:
    """The winner against each design trained with the same longer recipe. A pair of single seeds has no spread
    of its own: the winner's seed std at the shipped recipe stands in for it (the table's test: the margin
    beats twice the larger seed std)."""
    winner = recipes.get("search winner", {})
    at_shipped = winner.get(shipped, [])
    stand_in = statistics.stdev(at_shipped) if len(at_shipped) > 1 else None
    lines = []
    for epochs, w in sorted(winner.items()):
        if epochs == shipped:
            continue  # the shipped recipe's margins are the lines above
        for label, by_epochs in recipes.items():
            ref = by_epochs.get(epochs)
            if label == "search winner" or not ref:
                continue
            own = [statistics.stdev(x) for x in (w, ref) if len(x) > 1]
            spread = max(own) if own else stand_in
            if spread is None:
                continue
            diff = statistics.mean(w) - statistics.mean(ref)
            whose = (f" (one seed each: the winner's std at {shipped} epochs stands in)" if not own else
                     "" if len(w) > 1 and len(ref) > 1 else f" ({len(w)} seed(s) of the winner, {len(ref)} of {label})")
            lines.append(f"search winner - {label}, both {epochs} epochs: {100 * diff:+.2f} points of test top-1; "
                         f"twice the larger seed std is {200 * spread:.2f}{whose}: "
                         f"{'beats it' if diff > 2 * spread else 'does NOT beat it'} by that test")
    return lines


def retrain_cost(costs: list[dict], label: str, finished: int) -> tuple[float, int]:
    """CPU-hours of a recipe's finished seeds and how many trainings they paid for. cost.json has the segments that
    ended (a seed may take several: a session's end stops one); a segment run with `--seeds k` above the seeds
    finished was training one still under way, which counts once it finishes."""
    segments = [c for c in costs if c["label"] == label and int(seeds_of(c)) <= finished]
    rederived = {seeds_of(c) for c in segments if c.get("rederive") and c["exit"] == 0}
    return sum(c["cpu_s"] for c in segments) / 3600, finished + len(rederived)


def seeds_of(cost: dict) -> str:
    return cost["cmd"][cost["cmd"].index("--seeds") + 1]


def table(args: argparse.Namespace) -> int:
    """Test top-1 per design and recipe (plain, flip-TTA, int8), its counts and CPU-hours, and the margins."""
    folder = results(args)
    costs = json.loads((SNAPSHOT / "cost.json").read_text()) if (SNAPSHOT / "cost.json").exists() else []
    by_number = {t.number: t for t in trials(folder)}
    shipped = load_retrain_epochs(folder)
    accs: dict[str, list[float]] = {}
    recipes: dict[str, dict[int, list[float]]] = {}  # design -> epochs -> each seed's test top-1
    rows: list[dict] = []
    print("| design | trial | params | multiply-adds | peak act. | search val | epochs | seeds | "
          "test top-1 % | flip-TTA % | int8 top-1 % (TFLite Micro) | retrain CPU-h per seed |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for label, suffix, number, seeds in retrained(folder):
        docs = [json.loads((s / "metrics.json").read_text()) for s in seeds]
        plain = [d["test"]["top1"] for d in docs]
        tta = [d["test_tta"]["top1"] for d in docs if "test_tta" in d]
        int8 = [(a, d["test"]["top1"]) for a, d in zip(map(int8_top1, seeds), docs, strict=True) if a is not None]
        accs[label + suffix.replace("_", " ")] = plain
        recipes.setdefault(label, {})[int(suffix[1:-2]) if suffix else shipped] = plain
        cpu_h, trainings = retrain_cost(costs, f"retrain {label}{suffix.replace('_', ' ')}", len(plain))
        t = by_number[number]
        rows.append({"design": label, "recipe_epochs": int(suffix[1:-2]) if suffix else shipped, "trial": number,
                     "params": t.user_attrs.get("params"), "flops": t.user_attrs.get("flops"), "search_val": t.values[0],
                     "test_top1": plain, "test_tta_top1": tta, "int8_top1": [a for a, _ in int8],
                     "retrain_cpu_h_per_seed": round(cpu_h / trainings, 3) if trainings else None})
        print(f"| {label} | {number} | {t.user_attrs.get('params', 0):,} | {t.user_attrs.get('flops', 0):,} | "
              f"{t.user_attrs.get('peak_activations', '-')} | {t.values[0]:.4f} | "
              f"{suffix[1:-2] if suffix else shipped} | {len(plain)} | {fmt(plain)} | "
              f"{fmt(tta) if len(tta) == len(plain) else '-'} | {int8_cell(int8, len(plain))} | "
              f"{cpu_h / trainings if trainings else 0:.2f} |")
    print(OFFICIAL)
    print(search_summary(list(by_number.values()), costs, args.workers))
    estimate = SNAPSHOT / "dryrun.txt"
    if estimate.exists():
        said = [ln for ln in estimate.read_text().splitlines() if ln.startswith(("probe:", "expected duration:"))]
        print("dry run (" + estimate.read_text().splitlines()[0].lstrip("# ") + "):\n  " + "\n  ".join(said))
    w = accs.get("search winner")
    for label, ref in accs.items():
        if label.startswith("search winner") or not w or len(w) < 2 or not ref:  # its own longer recipes too
            continue
        # one seed of a row has no spread of its own: the winner's alone stands in for it
        spread = max(statistics.stdev(w), statistics.stdev(ref) if len(ref) > 1 else 0.0)
        diff = statistics.mean(w) - statistics.mean(ref)
        print(f"search winner - {label}: {100 * diff:+.2f} points of test top-1; twice the larger seed std is "
              f"{200 * spread:.2f}{' (one seed of ' + label + ')' if len(ref) == 1 else ''}: "
              f"{'beats it' if diff > 2 * spread else 'does NOT beat it'} by that test")
    for line in same_recipe_lines(recipes, shipped) + plateau_lines(recipes):
        print(line)
    for label, plain in accs.items():
        if plain:
            print(f"{label} {'reaches' if statistics.mean(plain) >= 0.85 else 'does NOT reach'} MLPerf Tiny's 85% "
                  f"(mean test top-1 {100 * statistics.mean(plain):.2f}%)")
    harness.record(f"bench_mcu_table{'_' + arm(args) if arm(args) else ''}", {"rows": rows})
    return 0


def samplers(args: argparse.Namespace) -> int:
    """TPE's search against each control arm's (mcu/<sampler>_seed<k>/study.db): best validation
    top-1 of the searched trials at the trial length, the top three, the median, and the improvement over the
    average random architecture (Yang et al., ICLR 2020), here the mean of the random arms' complete trials:
    pruned trials stopped early, so their last value is no 8-epoch figure."""
    import optuna

    from search.trials import is_baseline

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    arms = {"tpe_seed0": DATA / "study.db", **{p.parent.name: p for p in sorted(DATA.glob("*_seed*/study.db"))}}
    values = {}
    for name, db in arms.items():
        study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{db}")
        values[name] = sorted((t.values[0] for t in study.get_trials(deepcopy=False)
                               if t.state.name == "COMPLETE" and t.values and not is_baseline(t)), reverse=True)
    randoms = [v for name, vs in values.items() if name.startswith("random") for v in vs]
    average = statistics.mean(randoms) if randoms else None
    print("| arm | complete searched trials | best val | top three | median | best - average random |")
    print("|---|---|---|---|---|---|")
    for name, vs in values.items():
        gain = f"{100 * (vs[0] - average):+.2f} points" if vs and average is not None else "-"
        print(f"| {name} | {len(vs)} | {100 * vs[0]:.2f} | {', '.join(f'{100 * v:.2f}' for v in vs[:3])} | "
              f"{100 * statistics.median(vs):.2f} | {gain} |" if vs else f"| {name} | 0 | - | - | - | - |")
    if average is not None:
        print(f"average random architecture: {100 * average:.2f}% validation top-1 over {len(randoms)} complete trials")
    return 0


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation: Pearson's on the ranks, ties given their average rank."""
    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=v.__getitem__)
        r = [0.0] * len(v)
        for i in order:
            tied = [j for j in order if v[j] == v[i]]
            r[i] = statistics.mean(order.index(j) + 1 for j in tied)
        return r
    return statistics.correlation(ranks(x), ranks(y))


def ranking(args: argparse.Namespace) -> int:
    """Does the search's ranking (validation top-1 after the trial's epochs, one run) predict the final one (mean
    test top-1 at the shipped retrain recipe)? Every design retrained in any arm, and Spearman's rho over them."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    for arm_dir in [DATA, *sorted(p.parent for p in DATA.glob("*_seed*/study.db"))]:
        study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{arm_dir / 'study.db'}")
        val = {t.number: t.values[0] for t in study.get_trials(deepcopy=False) if t.values}
        for run in sorted((arm_dir / "retrain").glob("*")):
            if run.name.endswith("ep") and run.name.rsplit("_", 1)[-1][:-2].isdigit():
                continue  # a longer recipe: the shipped one is compared
            docs = [json.loads(m.read_text()) for m in sorted(run.glob("seed_*/metrics.json"))]
            if docs:
                test = statistics.mean(d["test"]["top1"] for d in docs)
                rows.append((arm_dir.name if arm_dir != DATA else "tpe_seed0", run.name, docs[0]["trial"],
                             val[docs[0]["trial"]], test, len(docs)))
    print("| arm | design | trial | search val top-1 % | test top-1 % (mean) | seeds |")
    print("|---|---|---|---|---|---|")
    for arm_name, design, number, v, t, n in sorted(rows, key=lambda r: -r[3]):
        print(f"| {arm_name} | {design} | {number} | {100 * v:.2f} | {100 * t:.2f} | {n} |")
    if len(rows) < 3:
        print(f"{len(rows)} retrained design(s): too few for a rank correlation")
        return 1
    rho = spearman([r[3] for r in rows], [r[4] for r in rows])
    # the smallest |rho| that a two-sided test at 5% can call non-zero, n = 5 .. 8 (exact tables)
    print(f"Spearman's rho between search validation and final test top-1: {rho:+.2f} over {len(rows)} designs "
          f"(two-sided 5% needs |rho| >= 1.00, 0.89, 0.79, 0.74 for n = 5, 6, 7, 8)")
    keys = ("arm", "design", "trial", "search_val", "test_top1_mean", "seeds")
    harness.record("bench_mcu_ranking", {"rows": [dict(zip(keys, r, strict=True)) for r in rows], "spearman_rho": rho})
    return 0


def verify(args: argparse.Namespace) -> int:
    """Re-evaluate every committed model.pt on the test set; each plain and flip-TTA top-1 must equal its
    metrics.json within 0.1 points. Exit 1 on a mismatch."""
    import dataclasses

    import torch

    from blocks import load
    from search.config import load_config
    from search.data.datasets import make_loaders
    from search.trainer import predict

    cfg = load_config(SNAPSHOT / "config.yaml")
    data = dataclasses.replace(cfg.data, root=args.data_root, download=False)
    test = make_loaders(data, [], 256, seed=0, test=True).test
    assert test is not None  # test=True always builds it
    models = sorted((SNAPSHOT / "retrain").glob("*/seed_*/model.pt"))
    if not models:
        print(f"no committed model.pt under {SNAPSHOT / 'retrain'} yet")
        return 1
    bad = 0
    for path in models:
        said = json.loads((path.parent / "metrics.json").read_text())
        model = load(path)
        for key, tta in (("test", False), ("test_tta", True)):
            if key not in said:
                continue
            probs, labels = predict(model, test, torch.device("cpu"), amp=False, tta=tta)
            top1 = (probs.argmax(1) == labels).float().mean().item()
            ok = abs(top1 - said[key]["top1"]) <= 0.001
            bad += not ok
            print(f"{path.parent.relative_to(SNAPSHOT)} {key}: {100 * top1:.2f}% now, "
                  f"{100 * said[key]['top1']:.2f}% in metrics.json: {'ok' if ok else 'MISMATCH'}", flush=True)
    print(f"{len(models)} model(s), {bad} mismatch(es)")
    unweighted = [p.parent for p in sorted((SNAPSHOT / "retrain").glob("*/seed_*/metrics.json"))
                  if not (p.parent / "model.pt").exists()]
    if unweighted:  # figures from before weights were committed: `retrain --rederive` replaces them
        print(f"{len(unweighted)} seed figure(s) without committed weights, not verifiable: "
              + ", ".join(str(p.relative_to(SNAPSHOT / "retrain")) for p in unweighted))
    return 1 if bad else 0


def int8_files(args: argparse.Namespace) -> list[Path]:
    """The committed model_int8.tflite files `int8` runs: every one, or with --only those of the named designs at
    --epochs' recipe (the shipped one without it), so that a newly exported file is measured without rerunning,
    and re-stamping, every earlier one."""
    files = sorted((SNAPSHOT / "retrain").glob("*/seed_*/model_int8.tflite"))
    if not args.only:
        return files
    folders = {kept_run(label, recipe(args)) for label in args.only}
    return [path for path in files if path.parent.parent in folders]


def int8(args: argparse.Namespace) -> int:
    """Every committed model_int8.tflite (or --only's) in TFLite Micro's own interpreter (reference kernels, with which CMSIS-NN
    is bit-exact) on the first --images test images, beside LiteRT's interpreter and the fp32 model.pt it came
    from; the figures go into its sidecar (`accuracy_micro`) and the seed's metrics.json (`int8`)."""
    import dataclasses
    import hashlib

    import numpy as np
    import torch

    from blocks import load
    from search.config import load_config
    from search.data.datasets import make_loaders
    from search.files import atomic_write_text
    from search.review import tflite

    cfg = load_config(SNAPSHOT / "config.yaml")
    test = make_loaders(dataclasses.replace(cfg.data, root=args.data_root, download=False, num_workers=0), [], 250, seed=0,
                        test=True).test
    assert test is not None  # test=True always builds it
    files = int8_files(args)
    for path in files:
        data, sidecar = path.read_bytes(), json.loads(path.with_suffix(".json").read_text())
        if hashlib.sha256(data).hexdigest() != sidecar["sha256"]:
            sys.exit(f"error: {path} is not the file its sidecar describes (sha256 differs)")
        start = time.time()
        micro, labels = tflite.int8_predictions(data, test, "micro", limit=args.images)
        seconds = time.time() - start
        litert, _ = tflite.int8_predictions(data, test, "litert", limit=args.images)
        model = load(path.with_name("model.pt"))
        with torch.no_grad():
            fp32 = np.concatenate([model(x.float()).argmax(1).numpy() for x, _ in test])[: len(labels)]
        rates = {"int8_top1": float((micro == labels).mean()), "litert_int8_top1": float((litert == labels).mean()),
                 "fp32_top1": float((fp32 == labels).mean()), "agreement_litert": float((micro == litert).mean()),
                 "agreement_fp32": float((micro == fp32).mean())}
        doc = {"images": len(labels), **rates, "runtime": tflite.RUNTIMES["micro"],
               "tflite_micro": tflite.versions().get("tflite-micro"), "commit": commit()}
        print(f"{path.relative_to(SNAPSHOT)}: TFLite Micro int8 top-1 {100 * rates['int8_top1']:.2f}% on "
              f"{len(labels):,} test images; LiteRT {100 * rates['litert_int8_top1']:.2f}%, fp32 "
              f"{100 * rates['fp32_top1']:.2f}%; the same class as LiteRT for {100 * rates['agreement_litert']:.2f}% "
              f"and as fp32 for {100 * rates['agreement_fp32']:.2f}% ({seconds:.0f} s wall)", flush=True)
        atomic_write_text(path.with_suffix(".json"), json.dumps({**sidecar, "accuracy_micro": doc}, indent=1))
        metrics = json.loads((path.parent / "metrics.json").read_text())
        atomic_write_text(path.parent / "metrics.json", json.dumps({**metrics, "int8": doc}, indent=1))
    if not files:
        print(f"no committed model_int8.tflite under {SNAPSHOT / 'retrain'}"
              + (" for --only's designs at this recipe" if args.only else ""))
        return 1
    print(f"{len(files)} int8 file(s)")
    return 0


def main() -> int:
    """Run one phase."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("phase", choices=["dryrun", "search", "retrain", "table", "samplers", "ranking", "verify", "int8"])
    p.add_argument("--data-root", default=str(ROOT / "data"), help="holds cifar-10-batches-py/")
    p.add_argument("--results-dir", default=str(ROOT / "results"))
    p.add_argument("--workers", type=int, default=2, help="search worker processes (one per core)")
    p.add_argument("--timeout", type=int, help="search: start no new trial after this many seconds")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, help="retrain: this many epochs instead of the shipped recipe's "
                   "(its own results folder, snapshot under retrain/<design>_<E>ep/)")
    p.add_argument("--rederive", action="store_true", help="retrain: also retrain finished seeds whose model.pt was "
                   "never committed, replacing their figures with ones whose weights are committed")
    p.add_argument("--only", nargs="*", help="retrain, int8: only these designs (e.g. 'baseline resnet8'), at "
                   "--epochs' recipe")
    p.add_argument("--ranks", type=int, nargs="*", default=[], help="retrain: the searched trials of these ranks by "
                   "validation top-1 instead (2 = the runner-up), snapshot under retrain/search_rank_<r>/")
    p.add_argument("--set", action="append", default=[], help="passed to search.run (e.g. search.n_trials=24)")
    p.add_argument("--sampler", default="tpe", choices=["tpe", "random"],
                   help="a control arm: its own results folder and snapshot benchmarks/experiments/mcu/<sampler>_seed<k>/")
    p.add_argument("--sampler-seed", type=int, default=0)
    p.add_argument("--images", type=int, default=10_000, help="int8: test images each file runs on")
    args = p.parse_args()
    if arm(args):
        global SNAPSHOT
        SNAPSHOT = DATA / arm(args)
    print(f"{args.phase} on {harness.describe(harness.machine())}", flush=True)
    return {"dryrun": dryrun, "search": search, "retrain": retrain, "table": table,
            "samplers": samplers, "ranking": ranking, "verify": verify, "int8": int8}[args.phase](args)


if __name__ == "__main__":
    sys.exit(main())
