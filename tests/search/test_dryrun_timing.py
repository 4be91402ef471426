"""The dry run's timing probe times the trainer's own step: the function fit calls per batch, set up as fit does."""

from __future__ import annotations

import pytest
import torch

from blocks import ArchSpec, build
from search import dryrun, trainer
from search.config import TrainSpec
from search.trainer import fit

SMALL = ArchSpec(stages=2, blocks=(1, 1), width=8, input_size=12)


class TickClock:
    """A clock that moves by 1 ms each time it is read (no real time is measured)."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 1e-3
        return self.t


def test_the_dry_run_times_the_step_fit_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    real, seen = trainer.train_step, []

    def counting(state: trainer.TrainState, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, loss = real(state, x, y)
        conv = next(p for p in state.model.parameters() if p.ndim == 4)
        seen.append((caller, logits.dtype, x.is_contiguous(memory_format=torch.channels_last),
                     conv.is_contiguous(memory_format=torch.channels_last)))
        return logits, loss

    monkeypatch.setattr(trainer, "train_step", counting)
    spec = TrainSpec(epochs=1, batch_size=4, amp=True)  # bf16 autocast, which the probe used to leave out
    cpu = torch.device("cpu")
    caller = "fit"
    torch.manual_seed(0)
    batches = [(torch.randn(4, 3, 12, 12), torch.randint(0, 10, (4,))) for _ in range(2)]
    fit(build(SMALL), batches, None, spec, cpu)
    caller = "dry run"
    timing = dryrun.time_training(SMALL, spec, cpu, clock=TickClock())
    assert timing.batch == 4
    # fit steps once per batch; the probe twice at two images (warm-up, timed), then once to warm up at 4
    # and PROBE_STEPS timed steps: every one through the same function, under autocast, in channels_last.
    assert seen == [("fit", torch.bfloat16, True, True)] * 2 + [("dry run", torch.bfloat16, True, True)] * (
        3 + dryrun.PROBE_STEPS)
