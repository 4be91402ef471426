"""The trainer: schedules, progressive resizing, and a resumed run equal to an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from blocks import ArchSpec, build
from search.data import DataConfig, make_loaders
from search.trainer import TrainSpec, fit, make_optimizer, make_schedule

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


@pytest.mark.parametrize("schedule", ["onecycle", "cyclic", "cosine"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_momentum_is_what_train_momentum_says(schedule: str, optimizer: str) -> None:
    # Issue 8: onecycle and cyclic cycled SGD momentum (0.85-0.95, 0.8-0.9) and Adam's beta1 whatever was set.
    spec = TrainSpec(epochs=2, lr=0.1, schedule=schedule, optimizer=optimizer, momentum=0.5)
    opt = make_optimizer(torch.nn.Linear(2, 2), spec)
    sched = make_schedule(opt, spec, 10)
    seen = set()
    for _ in range(20):
        group = opt.param_groups[0]
        seen.add(group["momentum"] if optimizer == "sgd" else group["betas"][0])
        opt.step()
        sched.step()
    assert seen == {0.5 if optimizer == "sgd" else 0.9}  # Adam's beta1 stays at torch's default


@pytest.mark.parametrize("cycles", [1, 2, 3])
def test_cyclic_schedule_ends_annealed(cycles: int) -> None:
    # Issue 8: cycles=2 ended at lr/10 (0.0207 of a 0.2 peak), cycles=3 on an upswing.
    spec = TrainSpec(epochs=10, lr=0.2, schedule="cyclic", cycles=cycles)
    opt = make_optimizer(torch.nn.Linear(2, 2), spec)
    sched = make_schedule(opt, spec, 21)
    seen = []
    for _ in range(spec.epochs * 21):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    final = opt.param_groups[0]["lr"]  # what the last epoch reports
    peaks = [i for i in range(1, len(seen) - 1) if seen[i - 1] < seen[i] >= seen[i + 1]]
    assert len(peaks) == cycles and max(seen) == pytest.approx(0.2, rel=0.05)
    assert min(seen[: peaks[-1]]) == pytest.approx(0.02, rel=0.05)  # earlier cycles still bottom out at lr/10
    tail = seen[peaks[-1]:]
    assert tail == sorted(tail, reverse=True)  # the last half-cycle only goes down ...
    assert seen[-1] < 0.2 / 20 and final < 1e-6  # ... to well below lr/10, and to 0 at the end of the run


class _PersistentLoader(torch.utils.data.DataLoader):
    """A DataLoader that keeps its workers between epochs, as the CUDA path does."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **{**kw, "persistent_workers": kw.get("num_workers", 0) > 0})


@pytest.mark.parametrize("workers", [0, 1])
def test_resumed_run_with_augmentation_equals_uninterrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           workers: int) -> None:
    # Issue 8: worker seeding ran once per persistent worker (and never without workers), so the per-epoch
    # reseed never reached the augmentation and a resumed run augmented differently.
    import search.data

    monkeypatch.setattr(search.data, "DataLoader", _PersistentLoader)
    data = DataConfig(**{**DATA.__dict__, "num_workers": workers})
    steps = [{"PadIfNeeded": {"min_height": 20, "min_width": 20}}, {"RandomCrop": {"height": 16, "width": 16}},
             {"HorizontalFlip": {"p": 0.5}}]
    spec = TrainSpec(epochs=2, batch_size=32, lr=0.05)

    def run(checkpoint: Path | None, stop_after: int | None = None) -> list:
        torch.manual_seed(0)
        loaders = make_loaders(data, steps, spec.batch_size, seed=3)
        assert loaders.train.persistent_workers == (workers > 0)

        def on_epoch(r) -> None:
            if r.epoch == stop_after:
                raise KeyboardInterrupt

        return fit(build(SPEC), loaders.train, loaders.val, spec, torch.device("cpu"), on_epoch=on_epoch,
                   checkpoint=checkpoint, seed=3)

    straight = run(None)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "c.pt", stop_after=1)
    resumed = run(tmp_path / "c.pt")
    assert [(h.train_loss, h.val_acc) for h in resumed] == [(h.train_loss, h.val_acc) for h in straight]
