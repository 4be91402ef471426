"""The trainer: schedules, progressive resizing, and a resumed run equal to an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from blocks import ArchSpec, build
from search.data import DataConfig, make_loaders
from search.trainer import TrainSpec, fit, make_optimizer, make_schedule, native_bf16, use_amp

SPEC = ArchSpec.from_dict({"stages": 2, "blocks": [1, 1], "width": 8, "num_classes": 4, "input_size": 16})
DATA = DataConfig(dataset="synthetic", synthetic_train=160, synthetic_test=40, synthetic_classes=4,
                  synthetic_size=16, num_workers=0)


def lrs(spec: TrainSpec, steps_per_epoch: int = 10) -> list[float]:
    """The learning rate at every step of a run under `spec`."""
    model = torch.nn.Linear(2, 2)
    opt = make_optimizer(model, spec)
    sched = make_schedule(opt, spec, steps_per_epoch)
    out = []
    for _ in range(spec.epochs * steps_per_epoch):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_schedules_shape_the_learning_rate() -> None:
    cos = lrs(TrainSpec(epochs=4, lr=0.1, schedule="cosine"))
    assert cos[0] == pytest.approx(0.1) and cos[-1] < 0.002 and cos == sorted(cos, reverse=True)
    one = lrs(TrainSpec(epochs=4, lr=0.1, schedule="onecycle"))
    assert max(one) == pytest.approx(0.1, rel=1e-3) and one[0] < 0.01 and one[-1] < 1e-3
    cyc = lrs(TrainSpec(epochs=4, lr=0.1, schedule="cyclic", cycles=2))
    assert min(cyc) == pytest.approx(0.01) and max(cyc) == pytest.approx(0.1, rel=0.05)
    peaks = [i for i in range(1, len(cyc) - 1) if cyc[i - 1] < cyc[i] >= cyc[i + 1]]
    assert len(peaks) == 2  # two triangular cycles
    step = lrs(TrainSpec(epochs=4, lr=0.1, schedule="step"))
    assert sorted(set(round(v, 6) for v in step), reverse=True) == [0.1, 0.01, 0.001]
    warm = lrs(TrainSpec(epochs=4, lr=0.1, schedule="cosine", warmup_epochs=1))
    assert warm[0] == pytest.approx(0.001) and max(warm) == pytest.approx(0.1, rel=0.02)
    assert lrs(TrainSpec(epochs=2, lr=0.05, schedule="constant")) == [0.05] * 20


def test_progressive_resizing_trains_at_each_size() -> None:
    spec = TrainSpec(epochs=3, batch_size=32, lr=0.05, progressive=((0, 8), (1, 12), (2, 16)))
    assert [spec.size_at(e, 16) for e in range(3)] == [8, 12, 16]
    loaders = make_loaders(DATA, [], spec.batch_size, seed=0)
    history = fit(build(SPEC), loaders.train, loaders.val, spec, torch.device("cpu"), native_size=16)
    assert [h.image_size for h in history] == [8, 12, 16]
    assert all(0.0 <= h.val_acc <= 1.0 for h in history)


def test_resumed_run_equals_uninterrupted_run(tmp_path: Path) -> None:
    spec = TrainSpec(epochs=3, batch_size=32, lr=0.05, schedule="cosine")
    device = torch.device("cpu")

    def run(checkpoint: Path | None, stop_after: int | None = None) -> list:
        torch.manual_seed(0)
        loaders = make_loaders(DATA, [], spec.batch_size, seed=0)

        def on_epoch(r) -> None:
            if stop_after is not None and r.epoch == stop_after:
                raise KeyboardInterrupt

        return fit(build(SPEC), loaders.train, loaders.val, spec, device, on_epoch=on_epoch,
                   checkpoint=checkpoint, seed=7)

    straight = run(None)
    ckpt = tmp_path / "trial.pt"
    with pytest.raises(KeyboardInterrupt):
        run(ckpt, stop_after=1)
    assert ckpt.is_file()
    resumed = run(ckpt)
    assert len(resumed) == 3
    flat = [v for h in straight for v in (h.train_loss, h.val_acc, h.lr)]
    assert [v for h in resumed for v in (h.train_loss, h.val_acc, h.lr)] == pytest.approx(flat, rel=1e-5)


def test_bf16_flags_decide_auto_amp() -> None:
    cpu = torch.device("cpu")
    assert native_bf16(cpu, {"avx2", "avx512_bf16"}) and native_bf16(cpu, {"amx_bf16"})
    assert not native_bf16(cpu, {"avx2", "avx512f"})
    assert use_amp(True, cpu) and not use_amp(False, cpu)
    assert use_amp("auto", cpu) == native_bf16(cpu)
    with pytest.raises(ValueError, match="train.amp"):
        TrainSpec.from_dict({"amp": "fp16"})


@pytest.mark.parametrize("amp", [True, False])
def test_fit_runs_the_gpu_path_on_the_cpu(amp: bool) -> None:
    """The lines a GPU runs (channels_last weights and batches, bf16 autocast) run here on the CPU."""
    model = build(SPEC)
    seen = []
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda m, inp, out: seen.append(
        (out.dtype, inp[0].is_contiguous(memory_format=torch.channels_last))))
    loaders = make_loaders(DATA, [], 32, seed=0)
    history = fit(model, loaders.train, loaders.val, TrainSpec(epochs=1, batch_size=32, lr=0.05, amp=amp),
                  torch.device("cpu"))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert seen and all(s == (torch.bfloat16 if amp else torch.float32, True) for s in seen)
    assert 0.0 <= history[0].val_acc <= 1.0 and history[0].train_loss > 0
