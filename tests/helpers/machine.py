"""A machine whose load a test sets: search.threads' meter over fake readings, no real load and no real clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from search.threads import LoadMeter


class FakeMachine:
    """`cores` CPUs under a load average a test sets; this process uses `own_rate` cores, `step_s` between readings."""

    def __init__(self, cores: int = 2, average: float = 0.0, own_rate: float = 0.0, step_s: float = 60.0):
        self.cores, self.average, self.own_rate, self.step_s = cores, average, own_rate, step_s
        self.used = self.at = 0.0

    def cpu(self) -> tuple[float, float]:
        """CPU seconds this process used and the wall clock, `step_s` on from the last reading."""
        self.at += self.step_s
        self.used += self.own_rate * self.step_s
        return self.used, self.at

    def meter(self) -> LoadMeter:
        """A meter reading this machine (torch would start with one thread per core here)."""
        return LoadMeter(average=lambda: self.average, cpu=self.cpu, cores=lambda: self.cores, most=self.cores)


@pytest.fixture
def free_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Threads not fixed by the environment (the session fixes them), and torch's count restored afterwards."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """A module that imports this runs on one intra-op thread: its models are tiny, and on a shared 2-core machine a
    second spinning OpenMP thread made the suite several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
