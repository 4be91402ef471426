"""Estimated GPU-hours of each shipped space's search and retrain, from analytic FLOPs (no GPU here).

Run: python -m benchmarks.estimate_gpu_hours [--samples 2000] [--tflops 312] [--mfu 0.2]

An estimate, not a measurement. Per trained image: 3 x forward (the backward pass costs about
twice the forward, as in Kaplan et al. 2020, "Scaling Laws for Neural Language Models", sec. 2.1),
and 2 hardware FLOPs per fvcore FLOP (fvcore counts a multiply-add as one). Forward FLOPs: the
median over `--samples` designs of the space from the random sampler, at the native image size
(progressive resizing and pruning only lower the cost: these are upper bounds for the search).
Throughput: `--tflops` peak (default 312, NVIDIA A100 bf16 dense tensor-core peak, from NVIDIA's
A100 datasheet) times `--mfu`, the share of the peak small-image ResNets reach (default 0.2, an
assumption: small convolutions and batch norm are memory-bound; change it to your own measurement).
The record goes to benchmarks/results/estimate_gpu_hours-<commit>.json (benchmarks.harness).
"""

from __future__ import annotations

import argparse
import statistics

import optuna

from benchmarks.harness import record
from search.config import load_config
from search.data.datasets import dataset_info
from search.distributions import from_trial
from search.space import Resolved, resolve

SPACES = {"spaces/cifar10_5m.yaml": (50_000, 10_000), "spaces/tiny_26m.yaml": (100_000, 10_000)}  # train, test


def median_flops(path: str, samples: int) -> float:
    """Median fvcore forward FLOPs (batch 1) of the accepted designs the random sampler draws."""
    cfg = load_config(path)
    info = dataset_info(cfg.data)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    flops = []
    for _ in range(samples):
        trial = study.ask()
        verdict = resolve(cfg, from_trial(trial), info.num_classes, info.image_size)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        if isinstance(verdict, Resolved):
            flops.append(verdict.cx.flops)
    return statistics.median(flops)


def main() -> None:
    """Print the estimate for each shipped space."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--tflops", type=float, default=312.0, help="peak hardware TFLOP/s of the GPU")
    p.add_argument("--mfu", type=float, default=0.2, help="share of the peak reached (assumption)")
    args = p.parse_args()
    rate = args.tflops * 1e12 * args.mfu
    print(f"assumed throughput {args.tflops:g} TFLOP/s peak x {args.mfu:g} = {rate / 1e12:.1f} TFLOP/s; "
          f"training = 3 x forward; 2 hardware FLOPs per fvcore FLOP")
    figures = {}
    for path, (n_train, n_test) in SPACES.items():
        cfg = load_config(path)
        fwd = 2 * median_flops(path, args.samples)
        val = int(n_train * cfg.data.val_fraction)
        epochs = cfg.train["epochs"] if isinstance(cfg.train["epochs"], int) else max(cfg.train["epochs"].choices)
        trials = cfg.search.n_trials + len(cfg.baselines)
        search = trials * epochs * ((n_train - val) * 3 * fwd + val * fwd) / rate / 3600
        retrain = (cfg.retrain.epochs * n_train * 3 * fwd + n_test * fwd) / rate / 3600
        print(f"{path}: median forward {fwd / 2e6:.0f} MFLOPs (fvcore); search {trials} trials x {epochs} epochs "
              f"<= {search:.1f} GPU-h; retrain {cfg.retrain.epochs} epochs on {n_train:,} images "
              f"{retrain:.2f} GPU-h per seed")
        figures[path] = {"median_forward_flops": fwd / 2, "trials": trials, "epochs": epochs, "search_gpu_h": search,
                         "retrain_epochs": cfg.retrain.epochs, "retrain_gpu_h_per_seed": retrain}
    record("estimate_gpu_hours", figures)


if __name__ == "__main__":
    main()
