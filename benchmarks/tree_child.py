"""One code tree's training step or `fit` epoch, timed in a process of its own (bench_separable's old and new).

    cd TREE && PYTHONPATH=REPO python -m benchmarks.tree_child --arch JSON --train JSON steps --threads N --steps S --rounds R
    cd TREE && PYTHONPATH=REPO python -m benchmarks.tree_child --arch JSON --train JSON fit --threads N --root DATA

Run from TREE, `blocks` and `search` are that tree's (the current directory comes first on sys.path): the
repository itself (the new path) or an old commit's files (`git archive COMMIT blocks search`), each with
the process-wide settings its own trainer makes (malloc thresholds, threads); `benchmarks` comes from
REPO. `steps` builds the design and sets it up as that
tree's `fit` does, then times one round of S `train_step`s for every line read from stdin and prints its
images/s, so that a parent can alternate rounds between two trees. `fit` prints the seconds of one `fit`
epoch on the 50,000 training images of DATA/cifar-10-batches-py (no validation). Only APIs that commit
9f6f631 and today share are used: ArchSpec.from_dict, build, TrainSpec.from_dict, setup_training,
train_step, fit, make_loaders (`steps` times with benchmarks.steps' timer, which calls this tree's
setup_training and train_step).
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", required=True, help="the design, as ArchSpec.from_dict's JSON")
    p.add_argument("--train", required=True, help="the TrainSpec, as JSON")
    p.add_argument("mode", choices=("steps", "fit"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--rounds", type=int, default=5, help="steps: the rounds the schedule is sized to")
    p.add_argument("--root", help="fit: the folder holding cifar-10-batches-py")
    args = p.parse_args()
    import torch

    from blocks import ArchSpec, build
    from search.config import TrainSpec

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, train = build(ArchSpec.from_dict(json.loads(args.arch))), TrainSpec.from_dict(json.loads(args.train))
    if args.mode == "fit":
        print(fit_seconds(model, train, args.root), flush=True)
    else:
        time_rounds(model, train, args.steps, args.rounds)


def time_rounds(model, train, steps: int, rounds: int) -> None:  # type: ignore[no-untyped-def]
    """One round of `steps` train_steps per stdin line (at most `rounds`), its images/s printed: benchmarks.steps'
    timer on a batch of random images, with this tree's trainer."""
    from benchmarks.steps import random_batch, step_timer

    timer = step_timer(model, train, random_batch(train.batch_size), steps, rounds)
    print("ready", sys.modules["blocks"].__file__, flush=True)
    for _ in sys.stdin:
        print(timer(), flush=True)


def fit_seconds(model, train, root: str) -> float:  # type: ignore[no-untyped-def]
    """Seconds of one `fit` epoch on the training images (pad-2 crop, flip), two loader workers as `auto` picks."""
    import torch

    from search.config import DataConfig
    from search.data.augment import DEFAULT_POLICY, policy_steps
    from search.data.datasets import make_loaders
    from search.trainer import fit

    augment = [{"PadIfNeeded": {"min_height": 36, "min_width": 36, "border_mode": 4}},
               {"RandomCrop": {"height": 32, "width": 32}}, {"HorizontalFlip": {"p": 0.5}}]
    cfg = DataConfig(dataset="cifar10", root=root, download=False, num_workers="auto")
    loaders = make_loaders(cfg, policy_steps(augment, DEFAULT_POLICY), train.batch_size, seed=0, train_on_val=True)
    start = time.perf_counter()
    fit(model, loaders.train, None, train, torch.device("cpu"), seed=0)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
