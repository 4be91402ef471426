"""The trainer: schedules, momentum, progressive resizing, EMA, flip TTA, the GPU path on the CPU, compile.

That a resumed run equals an uninterrupted one is tests/search/test_resume.py's one test, for fit and its callers."""

from __future__ import annotations

import pytest
import torch

from blocks import build
from search.config import TrainSpec
from search.data.datasets import make_loaders
from search.device import compiled, native_bf16, use_amp
from search.optim import make_optimizer, make_schedule
from search.trainer import fit
from tests.helpers.training import DATA, SPEC


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


def test_ema_tracks_weights_and_batchnorm_statistics() -> None:
    from search.ema import make_ema, warmed_decay

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema = make_ema(model, 0.9)
    expected: dict[str, torch.Tensor] = {}
    for n in range(25):
        with torch.no_grad():
            model[0].weight.add_(0.1 * (n + 1))
        model.train()
        model(torch.randn(16, 3) + n)  # moves BatchNorm's running statistics
        ema.update_parameters(model)
        now = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
        d = warmed_decay(0.9, n)
        expected = now if not expected else {k: d * expected[k] + (1 - d) * now[k] for k in now}
    got = ema.module.state_dict()
    for key in ("0.weight", "1.running_mean", "1.running_var"):
        assert torch.allclose(got[key], expected[key], atol=1e-5), key
        assert not torch.allclose(got[key], model.state_dict()[key])
    assert int(got["1.num_batches_tracked"]) == 25
    assert warmed_decay(0.999, 0) == pytest.approx(0.1) and warmed_decay(0.999, 10**6) == 0.999


def test_flip_tta_averages_an_image_and_its_mirror() -> None:
    from search.trainer import evaluate, predict

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 14 * 14, 4))
    x, y = torch.randn(32, 3, 16, 16), torch.arange(32) % 4
    loader = [(x, y)]
    plain, _ = predict(model, loader, torch.device("cpu"))
    tta, _ = predict(model, loader, torch.device("cpu"), tta=True)
    mirrored, _ = predict(model, [(x.flip(3), y)], torch.device("cpu"))
    assert torch.allclose(tta, (plain + mirrored) / 2, atol=1e-6) and not torch.allclose(tta, plain)
    again, _ = predict(model, [(x.flip(3), y)], torch.device("cpu"), tta=True)
    assert torch.allclose(again, tta, atol=1e-6)  # flip-invariant
    loss, acc = evaluate(model, loader, torch.device("cpu"), tta=True)
    assert acc == (tta.argmax(1) == y).sum().item() / 32 and len(set(tta.argmax(1).tolist())) > 1
    assert loss == pytest.approx(torch.nn.functional.nll_loss(tta.log(), y).item(), rel=1e-5)


def test_ema_run_validates_the_ema_weights() -> None:
    """With train.ema, the epoch's validation scores the EMA weights the model ends with; a decay of 1.5 is refused."""
    from search.trainer import evaluate

    spec = TrainSpec(epochs=2, batch_size=32, lr=0.05, ema=0.9, tta=True)
    loaders = make_loaders(DATA, [{"HorizontalFlip": {"p": 0.5}}], spec.batch_size, seed=0)
    torch.manual_seed(0)
    model = build(SPEC)
    straight = fit(model, loaders.train, loaders.val, spec, torch.device("cpu"), seed=1)
    assert evaluate(model, loaders.val, torch.device("cpu"), tta=True) == (straight[-1].val_loss, straight[-1].val_acc)
    # that the run resumes exactly: tests/search/test_resume.py, case fit-ema
    with pytest.raises(ValueError, match="train.ema"):
        TrainSpec.from_dict({"ema": 1.5})


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


def test_compile_wraps_the_model_and_shares_its_parameters() -> None:
    model = build(SPEC)
    assert compiled(model, False) is model
    wrapped = compiled(model, True)  # lazy: nothing is compiled until the first call
    assert isinstance(wrapped, torch._dynamo.eval_frame.OptimizedModule) and wrapped._orig_mod is model
    assert [p.data_ptr() for p in wrapped.parameters()] == [p.data_ptr() for p in model.parameters()]
    assert TrainSpec.from_dict({"compile": True}).compile
