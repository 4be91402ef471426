"""Training throughput (images/s): the real loop with its data pipeline, the compute limit, the pipeline alone.

    python benchmarks/bench_train.py                                  # synthetic 32px data, CPU or GPU
    python benchmarks/bench_train.py --space spaces/cifar10_5m.yaml --set data.root=/data/cifar

The real loop is `search.trainer.fit` over `search.data.make_loaders` (augmentation in DataLoader
workers); the compute limit is the same model and optimiser stepping on one batch held on the
device; the pipeline alone iterates the train loader without a model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from blocks import ArchSpec, build, complexity  # noqa: E402
from search.data.augment import DEFAULT_POLICY, policy_steps  # noqa: E402
from search.config import load_config  # noqa: E402
from search.data.datasets import make_loaders  # noqa: E402
from search.config import TrainSpec  # noqa: E402
from search.device import autocast, prepare_model, resolve_device  # noqa: E402
from search.optim import make_optimizer  # noqa: E402
from search.trainer import fit  # noqa: E402

DEFAULT_ARCH = {"stages": 4, "blocks": [2, 2, 2, 2], "width": 32}  # ~2.8M params, CIFAR-style


def pipeline_only(loader, batches: int) -> float:
    """Images/s of iterating the train loader alone (decode + augment + collate)."""
    n, t0 = 0, None
    for i, (x, _) in enumerate(loader):
        if i == 1:
            t0, n = time.perf_counter(), 0  # the first batch pays for worker start-up
        n += x.shape[0]
        if i >= batches:
            break
    return n / (time.perf_counter() - t0)


def compute_limit(spec: ArchSpec, train: TrainSpec, device: torch.device, batches: int) -> float:
    """Images/s of training steps on one batch already on the device (no data pipeline)."""
    model = prepare_model(build(spec), device)  # the layout fit uses on every device
    opt = make_optimizer(model, train)
    x = torch.randn(train.batch_size, 3, spec.input_size, spec.input_size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, spec.num_classes, (train.batch_size,), device=device)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    for i in range(batches + 2):
        if i == 2:  # two warm-up steps (cuDNN autotune, allocator)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        with autocast(device, train.amp):
            loss = loss_fn(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batches * train.batch_size / (time.perf_counter() - t0)


def real_loop(cfg, spec: ArchSpec, train: TrainSpec, device: torch.device, batches: int) -> float:
    """Images/s of one epoch of `fit` over `batches` batches of the real loader (augmentation included)."""
    data = cfg.data.__class__(**{**cfg.data.__dict__, "subset": batches * train.batch_size, "val_fraction": 0.1})
    loaders = make_loaders(data, policy_steps(cfg.augment, DEFAULT_POLICY), train.batch_size, seed=0,
                           device=device.type)
    history = fit(build(spec), loaders.train, None, TrainSpec.from_dict({**train.to_dict(), "epochs": 1}), device)
    return len(loaders.train) * train.batch_size / history[0].time_s


def main() -> None:
    """Print the three throughputs for one architecture and training setting."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="spaces/cifar10_5m.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--arch", default=json.dumps(DEFAULT_ARCH), help="ArchSpec keys as JSON")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    overrides = args.overrides or ["data.dataset=synthetic", "data.synthetic_train=4000", "data.synthetic_size=32"]
    cfg = load_config(args.space, overrides)
    device = resolve_device(args.device)
    from search.data.datasets import dataset_info

    info = dataset_info(cfg.data)
    spec = ArchSpec.from_dict({**json.loads(args.arch), "num_classes": info.num_classes, "input_size": info.image_size})
    fixed = {k: v for k, v in cfg.train.items() if not hasattr(v, "kind")}
    train = TrainSpec.from_dict({**fixed, **({"batch_size": args.batch_size} if args.batch_size else {})})
    cx = complexity(spec)
    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}), "
          f"threads {torch.get_num_threads()}, dataset {cfg.data.dataset}, workers {cfg.data.num_workers}")
    print(f"model {cx.params / 1e6:.2f}M params, {cx.flops / 1e6:.1f} MFLOPs/image, "
          f"{info.image_size}px, batch {train.batch_size}, {args.batches} batches")
    loaders = make_loaders(cfg.data, policy_steps(cfg.augment, DEFAULT_POLICY), train.batch_size, seed=0,
                           device=device.type)
    pipe = pipeline_only(loaders.train, args.batches)
    print(f"data pipeline alone   {pipe:10.0f} images/s")
    limit = compute_limit(spec, train, device, args.batches)
    print(f"compute limit         {limit:10.0f} images/s (in-memory batch)")
    real = real_loop(cfg, spec, train, device, args.batches)
    print(f"real training loop    {real:10.0f} images/s ({real / limit:.0%} of the compute limit)")


if __name__ == "__main__":
    main()
