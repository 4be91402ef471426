"""Does the search beat the hand designs? A CPU-sized search on real CIFAR-10, then retrain and test.

Run (each phase resumes; results go to --results-dir/<study>):
  python -m benchmarks.experiments.bench_search_vs_baselines search --data-root /work/data
  python -m benchmarks.experiments.bench_search_vs_baselines retrain --epochs 6 [retrain options]
  python -m benchmarks.experiments.bench_search_vs_baselines seeds --only winner --epochs 6  # seeds in parallel
`seeds` calls search.review.retrain_seed.train_and_test directly: the same run as the CLI's for the retrain of
commit b053697 (used for BENCHMARKS.md); the later retrain recipe (full data, EMA, TTA) is laid on
in search.review.retrain.retrain, so with it use the `retrain` phase.
  python -m benchmarks.experiments.bench_search_vs_baselines table

`search` runs spaces/cifar10_5m.yaml (its space, training and baselines) shrunk to a shared 2-core
CPU: a 300k-parameter, 16 MFLOP budget, a 2,000-image training subset (1,000 validation images),
2 epochs, 8 trials + 2 baselines, 2 single-threaded workers. `retrain` trains
the best searched trial and every baseline (`--only` splits them, so the
baselines can retrain while the search still runs) with the same final recipe, 3 seeds each, and tests
them on the 10,000 test images. `table` prints test accuracy mean +- std (plain, and with flip
TTA when the retrain recorded it) and the winner's margin against the seed-to-seed spread, and records it in
benchmarks/results/bench_search_vs_baselines-<commit>.json (benchmarks.harness).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import optuna

from benchmarks.harness import ROOT, describe, machine, record

SPACE = ROOT / "spaces" / "cifar10_5m.yaml"


def search_overrides(args: argparse.Namespace) -> list[str]:
    """The cifar10_5m space shrunk to this machine."""
    sets = {"budget.params": args.params, "budget.flops": args.flops, "data.root": args.data_root,
            "data.download": "false", "data.subset": args.subset, "data.val_fraction": args.val_fraction,
            "data.num_workers": 0, "train.epochs": args.search_epochs, "train.batch_size": 64,
            "search.n_trials": args.trials, "search.pruner_startup_trials": 3, "search.pruner_warmup_epochs": 1,
            "search.timeout": "null",
            "search.study_name": args.study}
    return [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]


def run(cmd: list[str]) -> None:
    """Run a command with this checkout on PYTHONPATH, echoing it; stop on failure."""
    print("$", " ".join(cmd), flush=True)
    # one thread per process: on an oversubscribed CPU, 2 torch threads ran one step 5x slower than 1 thread
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    code = subprocess.run(cmd, env=env, cwd=ROOT).returncode
    if code != 0:
        sys.exit(f"error: exit status {code} from {cmd[2]}")


def study(args: argparse.Namespace) -> optuna.Study:
    """The benchmark's study."""
    folder = Path(args.results_dir) / args.study
    return optuna.load_study(study_name=args.study, storage=f"sqlite:///{folder}/study.db")


def contenders(args: argparse.Namespace) -> dict[int, str]:
    """Trial number -> label: the best searched trial and every baseline (`--only` splits them, so the
baselines can retrain while the search still runs), complete ones only."""
    done = [t for t in study(args).get_trials(deepcopy=False) if t.state.name == "COMPLETE" and t.values]
    searched = sorted((t for t in done if "baseline" not in t.user_attrs), key=lambda t: -t.values[0])
    out = {searched[0].number: "search winner"} if searched else {}
    out.update({t.number: f"baseline {t.user_attrs['baseline']}" for t in done if "baseline" in t.user_attrs})
    return out


def table(args: argparse.Namespace) -> dict[str, dict]:
    """Print test accuracy mean +- std per contender, from the retrain folders; each one's figures."""
    folder = Path(args.results_dir) / args.study / "retrain"
    trials = {t.number: t for t in study(args).get_trials(deepcopy=False)}
    rows: dict[str, list[float]] = {}
    figures: dict[str, dict] = {}
    print(f"{'design':<20} {'trial':>5} {'params':>8} {'search val':>10} {'seeds':>5} {'test top-1':>16} "
          f"{'test top-1 TTA':>16}")
    for number, label in contenders(args).items():
        seeds = sorted((folder / f"{number:05d}").glob("seed_*/metrics.json"))
        docs = [json.loads(p.read_text()) for p in seeds]
        if not docs:
            continue
        plain = [d["test"]["top1"] for d in docs]
        tta = [d["test_tta"]["top1"] for d in docs if "test_tta" in d]  # written by a retrain with tta: true
        rows[label] = plain
        t = trials[number]
        figures[label] = {"trial": number, "params": t.user_attrs["params"], "search_val": t.values[0],
                          "test_top1": plain, "test_top1_tta": tta}
        print(f"{label:<20} {number:>5} {t.user_attrs['params']:>8,} {t.values[0]:>10.4f} {len(plain):>5} "
              f"{fmt(plain):>16} {fmt(tta) if len(tta) == len(plain) else '-':>16}")
    if "search winner" in rows:
        w = rows.pop("search winner")
        for label, accs in rows.items():
            spread = max(statistics.stdev(w) if len(w) > 1 else 0, statistics.stdev(accs) if len(accs) > 1 else 0)
            diff = statistics.mean(w) - statistics.mean(accs)
            print(f"search winner - {label}: {diff:+.4f} test top-1 (largest seed std {spread:.4f}, "
                  f"{abs(diff) / spread if spread else float('inf'):.1f}x)")
    return figures


def seed_run(args: argparse.Namespace) -> None:
    """Seed run k of one contender through search.review.retrain_seed's own train_and_test (train + val images, CPU)."""
    import torch

    from search.review.results import open_results
    from search.review.retrain import make_plans
    from search.review.retrain_seed import SeedJob, train_and_test

    res = open_results(Path(args.results_dir) / args.study)
    number = next(n for n, label in contenders(args).items()
                  if label == ("search winner" if args.only == "winner" else f"baseline {args.only}"))
    plan = make_plans(res, [number], args.epochs)[0]
    folder = res.folder / "retrain" / f"{number:05d}"
    train_and_test(SeedJob(res, plan, args.k, True, torch.device("cpu"), folder, None, False, print))


def fmt(values: list[float]) -> str:
    """mean +- std (n-1) of accuracies, in %."""
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} +- {100 * std:.2f}"


def main() -> None:
    """Run one phase."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("phase", choices=["search", "retrain", "seeds", "table", "_seed"])
    p.add_argument("--k", type=int, help=argparse.SUPPRESS)  # _seed: which seed run of --only's trial
    p.add_argument("--results-dir", default=str(ROOT / "results" / "bench"))
    p.add_argument("--study", default="cifar_cpu")
    p.add_argument("--data-root", default="/work/data", help="holds cifar-10-batches-py (cifar-pickle.py)")
    p.add_argument("--params", type=int, default=300_000)
    p.add_argument("--flops", type=int, default=16_000_000, help="fvcore FLOPs, batch 1 (keeps trials CPU-sized)")
    p.add_argument("--subset", type=int, default=2_000, help="search training images")
    p.add_argument("--val-fraction", type=float, default=0.02, help="of the 50,000: 1,000 validation images")
    p.add_argument("--workers", type=int, default=2, help="search worker processes, one thread each")
    p.add_argument("--search-epochs", type=int, default=2)
    p.add_argument("--trials", type=int, default=8, help="searched trials (baselines come on top)")
    p.add_argument("--epochs", type=int, default=6, help="retrain epochs")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--only", help="retrain only: winner | baselines | a baseline's name (to run them in parallel)")
    args, extra = p.parse_known_args()  # unknown options go to retrain (e.g. --train-on-val)
    facts = machine()
    print(describe(facts), flush=True)
    py = sys.executable
    if args.phase == "search":
        run([py, "-m", "search.run", str(SPACE), "--results-dir", args.results_dir, "--workers", str(args.workers),
             *search_overrides(args)])
    elif args.phase == "seeds":  # the same retrain, its seed runs in parallel processes (one thread each)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        procs = [subprocess.Popen([py, "-m", "benchmarks.experiments.bench_search_vs_baselines", "_seed", "--only",
                                   args.only, "--k", str(k), "--epochs", str(args.epochs), "--results-dir",
                                   args.results_dir, "--study", args.study], env=env, cwd=ROOT)
                 for k in range(args.seeds)]
        if any(p.wait() for p in procs):
            sys.exit("error: a seed run failed")
    elif args.phase == "_seed":
        return seed_run(args)
    elif args.phase == "retrain":
        for number, label in contenders(args).items():
            wanted = {None: True, "winner": label == "search winner", "baselines": label.startswith("baseline")}
            if not wanted.get(args.only, label == f"baseline {args.only}"):
                continue
            run([py, "-m", "search", "retrain", str(Path(args.results_dir) / args.study), "--trial", str(number),
                 "--seeds", str(args.seeds), "--epochs", str(args.epochs), *extra])
    record("bench_search_vs_baselines", table(args), facts)


if __name__ == "__main__":
    main()
