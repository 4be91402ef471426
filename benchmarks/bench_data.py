"""Data pipeline throughput: images/s of a training DataLoader with a given augmentation policy.

    PYTHONPATH=. python benchmarks/bench_data.py                      # synthetic 32x32, CIFAR-style policy
    PYTHONPATH=. python benchmarks/bench_data.py --dataset cifar10 --root data --workers 4 --batches 200
    PYTHONPATH=. python benchmarks/bench_data.py --augment '[{"HorizontalFlip": {"p": 0.5}}]' --workers 0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from search.config import DATASETS, DataConfig  # noqa: E402
from search.data.datasets import make_loaders  # noqa: E402
from search.errors import UserError  # noqa: E402

# The usual CIFAR-10 policy (pad 4 + random crop, flip, cutout) plus two colour transforms: five in all.
CIFAR_POLICY = [
    {"PadIfNeeded": {"min_height": 40, "min_width": 40, "border_mode": 4}},  # 4 = cv2.BORDER_REFLECT_101
    {"RandomCrop": {"height": 32, "width": 32}},
    {"HorizontalFlip": {"p": 0.5}},
    {"ColorJitter": {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.0, "p": 0.5}},
    {"CoarseDropout": {"num_holes_range": [1, 1], "hole_height_range": [8, 8], "hole_width_range": [8, 8], "p": 0.5}},
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="synthetic", choices=DATASETS)
    p.add_argument("--root", default="data", help="dataset folder (data.root)")
    p.add_argument("--download", action="store_true", help="download the dataset when missing")
    p.add_argument("--augment", default=None, help="JSON list of transforms (default: a 5-transform CIFAR policy)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (0 = main process)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--batches", type=int, default=50, help="training batches to time (after one warm-up batch)")
    p.add_argument("--synthetic-size", type=int, default=32, help="synthetic image side in pixels")
    p.add_argument("--synthetic-train", type=int, default=20000, help="synthetic training images")
    return p.parse_args(argv)


def policy_for(args: argparse.Namespace, image_size: int) -> list:
    """The augmentation steps to time: --augment, or the CIFAR policy scaled to the image size."""
    if args.augment is not None:
        return json.loads(args.augment)
    steps = json.loads(json.dumps(CIFAR_POLICY))
    pad = image_size // 8
    steps[0]["PadIfNeeded"].update(min_height=image_size + 2 * pad, min_width=image_size + 2 * pad)
    steps[1]["RandomCrop"].update(height=image_size, width=image_size)
    hole = max(1, image_size // 4)
    steps[4]["CoarseDropout"].update(hole_height_range=[hole, hole], hole_width_range=[hole, hole])
    return steps


def main(argv: list[str] | None = None) -> None:
    """Time the training loader and print images/s."""
    args = parse_args(argv)
    cfg = DataConfig(dataset=args.dataset, root=args.root, download=args.download, num_workers=args.workers,
                     synthetic_size=args.synthetic_size, synthetic_train=args.synthetic_train)
    size = {"cifar10": 32, "tiny_imagenet": 64}.get(args.dataset, args.synthetic_size)
    steps = policy_for(args, size)
    try:
        loaders = make_loaders(cfg, steps, args.batch_size, seed=0)
    except UserError as exc:
        sys.exit(f"error: {exc}")
    images, timed = 0, 0.0
    it = iter(loaders.train)
    next(it)  # warm-up: worker start and first batch
    start = time.perf_counter()
    for _ in range(args.batches):
        try:
            x, _ = next(it)
        except StopIteration:  # a short dataset: go round again (workers restart, which is counted)
            it = iter(loaders.train)
            x, _ = next(it)
        images += x.shape[0]
    timed = time.perf_counter() - start
    print(f"dataset={args.dataset} image={tuple(x.shape[1:])} transforms={len(steps)} workers={args.workers} "
          f"batch={args.batch_size} batches={args.batches}")
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{images / timed:,.0f} images/s ({timed / args.batches * 1e3:.1f} ms/batch)")


if __name__ == "__main__":
    main()
