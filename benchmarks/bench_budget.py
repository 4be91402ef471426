"""Budget utilisation of the shipped spaces: 10,000 designs each from Optuna's random sampler.

Run: python -m benchmarks.bench_budget [--samples 10000] [--seed 0] [spaces/x.yaml ...]
For every space, each sampled shape is sized two ways on the same draw: the old rule (C solved as
a multiple of 8, doubling per stage) and the space's rule (search.space.fill_widths: C solved,
then each stage widened by 8 channels, last stage first, while the analytic count fits). Prints
the utilisation (params / budget) distribution of the designs that pass the budget and rules,
how many were over budget (must be 0) and how many were rejected. No model is built. The record goes to
benchmarks/results/bench_budget-<commit>.json (benchmarks.harness).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import optuna

from benchmarks.harness import describe, machine, record
from blocks import ArchSpec, complexity
from search.config import load_config
from search.data.datasets import dataset_info
from search.distributions import from_trial
from search.space import Resolved, resolve, solve_width

SPACES = ("spaces/cifar10_5m.yaml", "spaces/tiny_26m.yaml", "spaces/smoke.yaml")


def utilisations(path: str, samples: int, seed: int) -> dict:
    """Sample `samples` designs; the utilisation of each accepted one under both width rules."""
    cfg = load_config(path)
    info = dataset_info(cfg.data)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed), direction="maximize")
    new, old, over, rejected = [], [], 0, 0
    for _ in range(samples):
        trial = study.ask()
        verdict = resolve(cfg, from_trial(trial), info.num_classes, info.image_size)
        design = verdict if isinstance(verdict, Resolved) else verdict.design
        over += design is not None and design.cx.params > cfg.budget.params
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)  # keeps the in-memory study small to query
        if not isinstance(verdict, Resolved):
            rejected += 1
            continue
        new.append(verdict.cx.params / cfg.budget.params)
        fill = trial.params.get("fill", cfg.space.get("fill", 1.0))
        doubling = {k: v for k, v in verdict.spec.to_dict().items() if k != "widths"}
        c = solve_width(doubling, float(fill) * cfg.budget.params, cfg.budget.flops)
        old.append(complexity(ArchSpec.from_dict({**doubling, "width": c})).params / cfg.budget.params)
    return {"new": new, "old": old, "over": over, "rejected": rejected}


def spread(values: list[float]) -> dict[str, float]:
    """Median, p10, min and the shares under 0.9 / 0.8 of a list of utilisations."""
    return {"median": statistics.median(values), "p10": statistics.quantiles(values, n=10)[0], "min": min(values),
            "under_0.90": sum(v < 0.9 for v in values) / len(values),
            "under_0.80": sum(v < 0.8 for v in values) / len(values)}


def summary(values: list[float]) -> str:
    """spread() in one line."""
    s = spread(values)
    return (f"median {s['median']:.3f}  p10 {s['p10']:.3f}  min {s['min']:.3f}  <0.90 {s['under_0.90']:5.1%}  "
            f"<0.80 {s['under_0.80']:5.1%}")


def main() -> None:
    """Print one block per space."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("spaces", nargs="*", default=list(SPACES))
    p.add_argument("--samples", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    facts = machine()
    print(describe(facts))
    print(f"{args.samples} random-sampler draws per space, seed {args.seed}")
    figures = {}
    for path in args.spaces:
        t0 = time.process_time()
        r = utilisations(path, args.samples, args.seed)
        n = len(r["new"])
        print(f"{Path(path).name}: {n} accepted, {r['rejected']} rejected by rules, {r['over']} over budget "
              f"({time.process_time() - t0:.0f} CPU s)")
        print(f"  doubling only (old): {summary(r['old'])}")
        print(f"  filled (new):        {summary(r['new'])}")
        figures[Path(path).name] = {"accepted": n, "rejected": r["rejected"], "over": r["over"],
                                    "doubling_only": spread(r["old"]), "filled": spread(r["new"])}
    record("bench_budget", figures, facts)


if __name__ == "__main__":
    main()
