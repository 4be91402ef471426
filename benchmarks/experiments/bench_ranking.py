"""Does a weight EMA or flip TTA at search time rank designs better? Short search-like runs, scored 4 ways.

    python -m benchmarks.experiments.bench_ranking --space spaces/cifar10_5m.yaml --set data.dataset=imagefolder \
        --set data.root=/work/data/cifar-10-images-jpg --set budget.params=150000 --set data.subset=5000 \
        --designs 6 --seeds 2 --epochs 3 --ema 0.99 [--truth-epochs 9]

Random-sampler designs of the space are trained like search trials (their sampled settings, `--epochs`
epochs, seed = design * 100 + seed index) with an EMA tracked alongside; one run gives the validation
accuracy of the last-step weights and of the EMA weights, each plain and with flip TTA. Printed: the mean
accuracy of each way, and how well each way's ranking of the designs agrees between two seeds (Kendall's
tau) and, with --truth-epochs, with the ranking by a longer plain run (seed 0). The record goes to
benchmarks/results/bench_ranking-<commit>.json (benchmarks.harness).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics

import optuna
import torch

from benchmarks.harness import describe, machine, record
from blocks import ArchSpec, build, complexity
from search.config import SearchConfig, TrainSpec, load_config
from search.data.augment import DEFAULT_POLICY, policy_steps
from search.data.datasets import dataset_info, make_loaders
from search.distributions import from_trial
from search.space import Resolved, resolve
from search.trainer import EpochResult, evaluate, fit, seed_everything

WAYS = ("last plain", "last TTA", "EMA plain", "EMA TTA")


def designs(cfg: SearchConfig, n: int, seed: int) -> list[tuple[ArchSpec, TrainSpec]]:
    """n buildable designs drawn by Optuna's random sampler from the space."""
    info = dataset_info(cfg.data)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out: list[tuple[ArchSpec, TrainSpec]] = []
    while len(out) < n:
        trial = study.ask()
        verdict = resolve(cfg, from_trial(trial), info.num_classes, info.image_size)
        if isinstance(verdict, Resolved):
            out.append((verdict.spec, verdict.train))
        study.tell(trial, 0.0)
    return out


def run(cfg: SearchConfig, spec: ArchSpec, train: TrainSpec, seed: int, ema: float | None) -> dict[str, float]:
    """Train once; validation accuracy of the last-step and EMA weights, plain and with flip TTA."""
    steps = policy_steps(cfg.augment, train.augment_policy or DEFAULT_POLICY)
    loaders = make_loaders(cfg.data, steps, train.batch_size, seed=seed)
    seed_everything(seed)
    val = loaders.val
    if val is None:
        raise SystemExit("bench_ranking scores on the validation split: the space's data.val_fraction must be above 0")
    model = build(spec)
    cpu, out = torch.device("cpu"), {}

    def on_epoch(r: EpochResult) -> None:
        if r.epoch == train.epochs:  # fit hands the EMA weights back only after this
            out["last plain"] = evaluate(model, val, cpu, train.amp)[1]
            out["last TTA"] = evaluate(model, val, cpu, train.amp, tta=True)[1]

    fit(model, loaders.train, val, dataclasses.replace(train, ema=ema, tta=False), cpu,
        on_epoch=on_epoch, native_size=loaders.info.image_size, seed=seed)
    if ema is not None:
        out["EMA plain"] = evaluate(model, val, cpu, train.amp)[1]
        out["EMA TTA"] = evaluate(model, val, cpu, train.amp, tta=True)[1]
    return out


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-a between two scorings of the same items (ties count as neither)."""
    pairs = [(i, j) for i in range(len(a)) for j in range(i + 1, len(a))]
    sign = [((a[i] > a[j]) - (a[i] < a[j])) * ((b[i] > b[j]) - (b[i] < b[j])) for i, j in pairs]
    return sum(sign) / max(1, len(pairs))


def main() -> None:
    """Train the designs, print each way's mean and ranking agreement, and record the scores."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="spaces/cifar10_5m.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--designs", type=int, default=6)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--ema", type=float, default=0.99, help="EMA decay per step")
    p.add_argument("--truth-epochs", type=int, default=0, help="also a longer plain run per design (0: none)")
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = load_config(args.space, [*args.overrides, f"train.epochs={args.epochs}"])
    facts = machine()
    print(describe(facts))
    print(f"{args.designs} designs x {args.seeds} seeds x {args.epochs} epochs, "
          f"EMA {args.ema}; {args.space} {' '.join(args.overrides)}", flush=True)
    found = designs(cfg, args.designs, seed=0)
    scores: dict[str, list[list[float]]] = {w: [[] for _ in range(args.seeds)] for w in WAYS}
    truth = []
    for d, (spec, train) in enumerate(found):
        for k in range(args.seeds):
            got = run(cfg, spec, train, d * 100 + k, args.ema)
            for w in WAYS:
                scores[w][k].append(got[w])
            print(f"design {d} ({complexity(spec).params:,} params, lr {train.lr:.3g}) seed {k}: "
                  + ", ".join(f"{w} {got[w]:.4f}" for w in WAYS), flush=True)
        if args.truth_epochs:
            long = dataclasses.replace(train, epochs=args.truth_epochs)
            truth.append(run(cfg, spec, long, d * 100, None)["last plain"])
            print(f"design {d}: {args.truth_epochs}-epoch val_acc {truth[-1]:.4f}", flush=True)
    print(f"{'way':<11} {'mean val_acc':>12} {'tau seed0~seed1':>16}" + (f" {'tau vs long run':>16}" if truth else ""))
    for w in WAYS:
        mean = statistics.mean(v for s in scores[w] for v in s)
        tau = kendall_tau(scores[w][0], scores[w][1]) if args.seeds > 1 else float("nan")
        extra = f" {kendall_tau(scores[w][0], truth):>16.3f}" if truth else ""
        print(f"{w:<11} {mean:>12.4f} {tau:>16.3f}{extra}")
    record("bench_ranking", {"val_acc": scores, "truth": truth}, facts)


if __name__ == "__main__":
    main()
