"""CPU threads for training: this process's share of the cores other processes leave free, re-read every epoch.

Two threads of one training step that share the CPU with another process wait for each other at every
operation: on 2 cores with a busy loop on one, the MCU winner's step ran 159 images/s on two threads against
324 on one (491 on two when the machine was quiet; BENCHMARKS.md, "Threads when a core is taken"). So the
search and retrain give `fit` an `EpochThreads` hook, which reads the load before every epoch and picks
the threads from the cores that are free. Free cores are the usable CPUs minus the load of other
processes: the 1-minute load average (threads running or waiting for a CPU, machine-wide) minus this
process's own part of it, its CPU use averaged the way the kernel averages the load. The load average
counts what other processes want to run, not only what they got, and needs no sampling thread.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .describe import plural
from .device import cpu_cores

# torch reads these at start-up for its intra-op threads (ATen's intraop_default_num_threads): a user who
# sets one has chosen the threads, and nothing here changes them.
FIXED_BY = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
# The 1-minute load average's time constant, seconds: every 5 s Linux folds the count of runnable threads
# into it with weight 1 - exp(-5/60) (kernel/sched/loadavg.c, EXP_1 = 1884/2048).
LOAD_TAU_S = 60.0
# A core counts as taken once another process keeps it busy half the time or more: from the figures above,
# two threads beat one only while the other process holds its core under half the time
# (491 (1 - p) + 159 p = 324 at p = 0.503).
TAKEN_AT = 0.5
# The threads torch started with in this process (the physical cores, or what FIXED_BY says): no more are used.
STARTED_WITH = torch.get_num_threads()

CpuClock = Callable[[], tuple[float, float]]  # (CPU seconds this process has used, wall seconds)


def fixed_by() -> str | None:
    """`OMP_NUM_THREADS=1` when the environment fixes torch's threads, else None."""
    return next((f"{name}={os.environ[name]}" for name in FIXED_BY if name in os.environ), None)


def load_average() -> float | None:
    """The machine's 1-minute load average, or None where the OS has none."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):  # Windows has no load average
        return None


def own_cpu() -> tuple[float, float]:
    """CPU seconds used by this process and its finished children, and the wall clock, seconds."""
    t = os.times()  # finished children: DataLoader workers, which end with each pass over their loader
    return t.user + t.system + t.children_user + t.children_system, t.elapsed


@dataclass(frozen=True)
class Load:
    """One reading of the machine: its load average and the part of it that is this search's own."""

    average: float  # 1-minute load average: threads running or waiting for a CPU, machine-wide
    own: float  # the part of it this search's processes account for (their CPU use, averaged alike)
    cores: int  # CPUs this process may run on
    most: int = STARTED_WITH  # threads one process takes on a quiet machine

    @property
    def others(self) -> float:
        """Cores other processes keep busy (or wait for)."""
        return max(0.0, self.average - self.own)

    @property
    def free(self) -> int:
        """Cores the other processes leave free."""
        return max(0, self.cores - math.floor(self.others + 1 - TAKEN_AT))

    def says(self, whose: str) -> str:
        """`load average 1.9 on 2 cores, 0.9 of it this search's: 1 core free`."""
        return (f"load average {self.average:.1f} on {plural(self.cores, 'core')}, {self.own:.1f} of it {whose}: "
                f"{plural(self.free, 'core')} free")


def threads_for(load: Load, workers: int = 1) -> int:
    """Intra-op threads for one of `workers` training processes: an equal share of the free cores, at least 1.

    The share is rounded down: a core idle costs its share, a thread too many stalls every step.
    """
    return max(1, min(load.most, load.free // workers))


class LoadMeter:
    """Reads the machine's load and this process's part of it (its CPU use, averaged as the kernel averages load)."""

    def __init__(self, average: Callable[[], float | None] = load_average, cpu: CpuClock = own_cpu,
                 cores: Callable[[], int] = cpu_cores, most: int = STARTED_WITH):
        self.average, self.cpu, self.cores, self.most = average, cpu, cores, most
        self.used, self.at = cpu()
        self.own = 0.0  # cores this process kept busy, averaged over LOAD_TAU_S

    def read(self, share: int = 1) -> Load | None:
        """The load now, with `share` processes like this one as the search's own (its workers); None: no load average."""
        used, at = self.cpu()
        if at > self.at:  # the kernel's update, over the time since the last reading at its mean rate
            keep = math.exp(-(at - self.at) / LOAD_TAU_S)
            self.own = keep * self.own + (1 - keep) * (used - self.used) / (at - self.at)
        self.used, self.at = used, at
        average = self.average()
        return None if average is None else Load(average, share * self.own, self.cores(), self.most)


# This process's meter, from its import on: its own CPU use must be followed across trials and retrain seeds.
PROCESS = LoadMeter()


class EpochThreads:
    """fit's `threads` hook: before each epoch, this worker's share of the free cores; one line when it changes."""

    def __init__(self, workers: int = 1, log: Callable[[str], None] = print, meter: LoadMeter | None = None):
        self.workers, self.log, self.meter = workers, log, meter or PROCESS

    def __call__(self, epoch: int) -> int:
        """The threads 0-based `epoch` trains on."""
        now = torch.get_num_threads()
        load = self.meter.read(self.workers)
        if load is None:
            return now
        n = threads_for(load, self.workers)
        if n != now:
            whose = "this search's" + (f" ({self.workers} workers)" if self.workers > 1 else "")
            self.log(f"threads: {now} -> {n} from epoch {epoch + 1} ({load.says(whose)})")
        return n


def epoch_threads(device: torch.device, workers: int = 1, log: Callable[[str], None] = print,
                  meter: LoadMeter | None = None) -> EpochThreads | None:
    """The threads hook the search and retrain give fit on the CPU; None on a GPU or where FIXED_BY fixes them."""
    if device.type != "cpu" or fixed_by() is not None:
        return None
    return EpochThreads(workers, log, meter)
