"""Accuracy with and without bf16 autocast: the same model, seed and batches trained twice (fp32, bf16).

    python -m benchmarks.experiments.bench_amp_accuracy --root <cifar-10-images-jpg> --subset 5000 --epochs 4

Prints per-epoch validation accuracy of both runs and the time per epoch; the data is an image folder
(CIFAR-10 JPEG copy) or any dataset of the YAML via --space/--set. The record goes to
benchmarks/results/bench_amp_accuracy-<commit>.json (benchmarks.harness).
"""

from __future__ import annotations

import argparse
import json

import torch

from benchmarks.harness import describe, machine, record
from blocks import ArchSpec, build, complexity
from search.config import DataConfig, TrainSpec
from search.data.datasets import dataset_info, make_loaders
from search.trainer import fit, seed_everything

ARCH = {"stages": 3, "blocks": [1, 1, 1], "width": 32}  # ~0.3M params, a small CIFAR ResNet
POLICY = [{"PadIfNeeded": {"min_height": 40, "min_width": 40, "border_mode": 4}},
          {"RandomCrop": {"height": 32, "width": 32}}, {"HorizontalFlip": {"p": 0.5}}]


def run(data: DataConfig, arch: dict, train: TrainSpec, seed: int) -> list:
    """Train once from `seed` and return the history."""
    info = dataset_info(data)
    spec = ArchSpec.from_dict({**arch, "num_classes": info.num_classes, "input_size": info.image_size})
    seed_everything(seed)
    model = build(spec)
    loaders = make_loaders(data, POLICY, train.batch_size, seed=seed)
    return fit(model, loaders.train, loaders.val, train, torch.device("cpu"), seed=seed)


def main() -> None:
    """Train fp32 then bf16 and print both curves."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True, help="image folder root (train/<class>/*, test/<class>/*)")
    p.add_argument("--subset", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arch", default=json.dumps(ARCH))
    args = p.parse_args()
    data = DataConfig(dataset="imagefolder", root=args.root, subset=args.subset, num_workers=1)
    arch = json.loads(args.arch)
    facts = machine()
    print(describe(facts))
    info = dataset_info(data)
    cx = complexity(ArchSpec.from_dict({**arch, "num_classes": info.num_classes, "input_size": info.image_size}))
    print(f"model {cx.params / 1e6:.2f}M params, {args.subset} training images, {args.epochs} epochs, seed {args.seed}")
    curves = {}
    for amp in (False, True):
        train = TrainSpec(epochs=args.epochs, batch_size=args.batch_size, lr=0.1, schedule="onecycle", amp=amp)
        curves[amp] = run(data, arch, train, args.seed)
    print("epoch  val_acc fp32  val_acc bf16  s/epoch fp32  s/epoch bf16")
    for a, b in zip(curves[False], curves[True], strict=True):
        print(f"{a.epoch:5d}  {a.val_acc:12.4f}  {b.val_acc:12.4f}  {a.time_s:12.1f}  {b.time_s:12.1f}")
    figures = {name: {"val_acc": [e.val_acc for e in curves[amp]], "epoch_s": [e.time_s for e in curves[amp]]}
               for name, amp in (("fp32", False), ("bf16", True))}
    record("bench_amp_accuracy", {"arch": arch, **figures}, facts)


if __name__ == "__main__":
    main()
