"""Training threads follow the free cores: the choice for a load, the meter's averaging, the epoch boundary,
the search and its workers."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch

from blocks import build
from search import run, threads
from search.config import TrainSpec
from search.data.datasets import make_loaders
from search.study import supervisor
from search.threads import EpochThreads, Load, LoadMeter, epoch_threads, threads_for
from search.trainer import fit
from tests.helpers.machine import FakeMachine, free_threads  # noqa: F401 (a fixture)
from tests.helpers.spaces import write_space
from tests.helpers.studies import records
from tests.helpers.training import DATA, SPEC


@pytest.mark.parametrize("cores, average, own, workers, expected", [
    (2, 0.1, 0.0, 1, 2),  # quiet: every core
    (2, 1.0, 0.0, 1, 1),  # another process on one core (the retrain beside a dry run)
    (2, 2.0, 1.0, 1, 1),  # this process on one thread beside it: stays on one
    (2, 3.0, 1.4, 1, 1),  # two threads beside it, both waiting their turn: down to one
    (2, 2.0, 2.0, 1, 2),  # all the load is this process's own
    (2, 1.0, 1.0, 1, 2),  # the load of the other process went away: back to two
    (2, 0.4, 0.0, 1, 2),  # a core busy under half the time still counts as free
    (2, 0.6, 0.0, 1, 1),  # ... and over half the time as taken
    (2, 7.0, 0.0, 1, 1),  # more load than cores: one thread, never none
    (2, 0.0, 0.0, 64, 1),  # 64 workers on 2 cores: one thread each
    (16, 16.0, 16.0, 4, 4),  # 4 workers, 4 threads each, nothing else running
    (16, 16.0, 12.0, 4, 3),  # 4 cores taken by another process: 12 free, 3 each
    (3, 0.0, 0.0, 2, 1),  # shares round down: an idle core costs less than a thread too many
])
def test_threads_are_a_share_of_the_free_cores(cores: int, average: float, own: float, workers: int,
                                               expected: int) -> None:
    assert threads_for(Load(average, own, cores, most=cores), workers) == expected


def test_never_more_threads_than_torch_started_with() -> None:
    assert threads_for(Load(0.0, 0.0, cores=16, most=8)) == 8  # e.g. 8 physical cores with two threads each


def test_own_use_is_averaged_as_the_kernel_averages_the_load() -> None:
    """A process alone on the machine: the meter's part of the load equals the load average Linux computes."""
    machine = FakeMachine(step_s=5.0)
    meter = machine.meter()
    kernel = 0.0  # kernel/sched/loadavg.c: every 5 s, load = load * e + running * (1 - e), e = exp(-5/60)
    for running in [1.0] * 6 + [0.0] * 6 + [2.0] * 30:  # busy 30 s, idle 30 s, then two threads for 150 s
        machine.own_rate = running
        own = meter.read().own
        kernel = kernel * math.exp(-5 / 60) + running * (1 - math.exp(-5 / 60))
        assert own == pytest.approx(kernel)
    assert own == pytest.approx(2.0, abs=0.2)


def test_workers_count_their_siblings_use_as_the_search_s_own() -> None:
    machine = FakeMachine(cores=16, average=16.0, own_rate=4.0, step_s=600.0)  # 4 workers at 4 threads each
    load = machine.meter().read(share=4)
    assert load.own == pytest.approx(16.0, abs=1e-3) and load.free == 16


def test_fit_picks_threads_at_every_epoch_boundary(free_threads: None) -> None:  # noqa: F811
    """The load changes while a run trains: each epoch starts on the share the load leaves, with a line on a change."""
    machine = FakeMachine(cores=2, average=0.0)
    loads = iter([1.0, 0.2])  # after epoch 1 another process takes a core; after epoch 2 it is gone
    lines: list[str] = []
    torch.set_num_threads(1)
    loaders = make_loaders(DATA, [], 32, seed=0)
    history = fit(build(SPEC), loaders.train, loaders.val, TrainSpec(epochs=3, batch_size=32), torch.device("cpu"),
                  on_epoch=lambda r: setattr(machine, "average", next(loads, 0.0)),
                  threads=EpochThreads(log=lines.append, meter=machine.meter()))
    assert [h.threads for h in history] == [2, 1, 2]
    said = "(load average {} on 2 cores, 0.0 of it this search's: {} free)"
    assert lines == ["threads: 1 -> 2 from epoch 1 " + said.format("0.0", "2 cores"),
                     "threads: 2 -> 1 from epoch 2 " + said.format("1.0", "1 core"),
                     "threads: 1 -> 2 from epoch 3 " + said.format("0.2", "2 cores")]


def test_fixed_threads_and_gpus_are_left_alone(monkeypatch: pytest.MonkeyPatch, free_threads: None) -> None:  # noqa: F811
    assert isinstance(epoch_threads(torch.device("cpu")), EpochThreads)
    assert epoch_threads(torch.device("cuda")) is None  # threads matter for CPU compute only
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert epoch_threads(torch.device("cpu")) is None  # the user's choice


@pytest.mark.parametrize("flags, average, expected", [([], 0.0, 2), ([], 1.0, 1),
                                                      (["--workers", "2", "--worker-index", "0"], 0.0, 1)])
def test_trials_train_on_their_share_of_the_free_cores(flags: list[str], average: float, expected: int,
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture, free_threads: None) -> None:  # noqa: F811
    """A search alone, beside another process, and as one of two workers, on a fake 2-core machine."""
    monkeypatch.setattr(threads, "PROCESS", FakeMachine(cores=2, average=average).meter())
    torch.set_num_threads(2)
    space = write_space(tmp_path, {"search": {"n_trials": 1}})
    assert run.main([str(space), "--results-dir", str(tmp_path / "r"), "--device", "cpu", *flags]) == 0
    trained = [r for r in records(tmp_path / "r" / "space").values() if r["epochs"]]
    assert trained and all(e["threads"] == expected for r in trained for e in r["epochs"])
    said = "threads: 2 -> 1 from epoch 1 (load average" in capsys.readouterr().out
    assert said == (expected == 1)


def test_workers_are_started_to_pick_their_own_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       free_threads: None) -> None:  # noqa: F811
    """Each worker is told how many workers share the machine, and no OMP_NUM_THREADS fixes its threads."""
    started: list[tuple[list[str], dict]] = []

    class Exited:
        """A worker process that has already ended, without output."""

        def __init__(self, cmd: list[str], env: dict, **kwargs: object) -> None:
            started.append((cmd, env))
            self.pid, self.returncode, self.stdout = 4000 + len(started), 0, io.StringIO("")

        def poll(self) -> int:
            return 0

    monkeypatch.setattr(supervisor.subprocess, "Popen", Exited)
    space = write_space(tmp_path)
    assert run.main([str(space), "--workers", "3", "--results-dir", str(tmp_path / "r"), "--device", "cpu"]) == 0
    assert [cmd[cmd.index("--workers"):][:2] + cmd[-2:] for cmd, _ in started] == [
        ["--workers", "3", "--worker-index", str(i)] for i in range(3)]
    assert not any("OMP_NUM_THREADS" in env for _, env in started)


def test_the_process_meter_reads_this_machine() -> None:
    load = LoadMeter().read()
    assert load is None or (load.average >= 0 and load.cores >= 1 and load.own >= 0)
