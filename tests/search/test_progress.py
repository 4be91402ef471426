"""Progress inside an epoch: a tqdm bar in a pseudo-terminal, plain periodic lines in a log file."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import termios
from pathlib import Path

import torch
from torch import nn

from search.config import TrainSpec
from search.progress import Progress
from search.trainer import fit


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def read_all(fd: int) -> str:
    """Everything written to the pseudo-terminal so far (a pty hands it over in chunks of up to 4 kB)."""
    chunks = []
    while select.select([fd], [], [], 0.5)[0]:
        chunks.append(os.read(fd, 65536))
    return b"".join(chunks).decode()


def drive(progress: Progress, clock: Clock, epochs: int, n: int, batch: int, step_s: float) -> None:
    """Feed `epochs` epochs of `n` batches of `batch` images, each taking `step_s` seconds."""
    for e in range(1, epochs + 1):
        for i in range(1, n + 1):
            clock.t += step_s
            progress(e, i, n, batch)


def test_terminal_shows_a_bar_with_speed_and_estimates() -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # 40 rows x 160 columns
    clock = Clock()
    with os.fdopen(slave, "w") as tty:
        assert tty.isatty()
        p = Progress("trial 3", epochs=2, later_runs=4, stream=tty, clock=clock, refresh_s=0)
        drive(p, clock, epochs=1, n=10, batch=50, step_s=0.5)
        tty.flush()
        out = read_all(master)
    os.close(master)
    assert "[trial 3] epoch 1/2" in out
    assert re.search(r"batch 5/10", out)
    # 50 images every 0.5 s = 100 img/s; at batch 5, 5 batches (250 images) left = 2.5 s
    assert "100 img/s, epoch ETA 00:02, trial ETA 00:08" in out  # 2.5 s + one more epoch of 5 s (7.5 s)
    assert "study ETA 00:48" in out  # + 4 later trials x 2 epochs x 5 s (47.5 s)
    assert "\r" in out  # redrawn in place, not one line per batch


def test_a_terminal_without_a_width_still_gets_the_bar() -> None:
    master, slave = pty.openpty()  # 0 rows x 0 columns, as under `script` or some CI runners
    clock = Clock()
    with os.fdopen(slave, "w") as tty:
        p = Progress("trial 0", epochs=1, stream=tty, clock=clock, refresh_s=0)
        drive(p, clock, epochs=1, n=4, batch=10, step_s=1.0)
        tty.flush()
        out = read_all(master)
    os.close(master)
    assert "batch 3/4, 10 img/s, epoch ETA 00:01" in out


def test_log_file_gets_a_plain_line_every_interval(tmp_path: Path) -> None:
    clock = Clock()
    log = tmp_path / "search.log"
    with open(log, "w") as f:
        p = Progress("trial 0", epochs=3, stream=f, clock=clock, every_s=30)
        drive(p, clock, epochs=3, n=20, batch=10, step_s=2.0)  # 40 s per epoch, 120 s in all
    lines = log.read_text().splitlines()
    assert "\r" not in log.read_text() and "|" not in log.read_text()  # no bar in a file
    assert len(lines) == 4  # one per 30 s of a 120 s run
    assert lines[0] == "[trial 0] epoch 1/3 batch 15/20 5 img/s, epoch ETA 00:10, trial ETA 01:30"
    assert lines[-1].startswith("[trial 0] epoch 3/3 batch 20/20 5 img/s, epoch ETA 00:00")


def test_later_epochs_use_the_measured_epoch_time(tmp_path: Path) -> None:
    """After one whole epoch, the trial estimate uses its wall time (training + validation)."""
    clock, lines = Clock(), []
    p = Progress("trial 1", epochs=3, log=lines.append, stream=io.StringIO(), clock=clock, every_s=0)
    drive(p, clock, epochs=1, n=4, batch=10, step_s=1.0)
    clock.t += 6.0 + 1.0  # validation, then the first batch of epoch 2: 10 s from batch 1 to batch 1
    p(2, 1, 4, 10)
    clock.t += 1.0
    p(2, 2, 4, 10)
    assert lines[-1] == "[trial 1] epoch 2/3 batch 2/4 10 img/s, epoch ETA 00:02, trial ETA 00:12"  # 2 + 10 s


def test_fit_calls_the_hook_after_every_step() -> None:
    torch.manual_seed(0)
    xs, ys = torch.randn(20, 3, 8, 8), torch.randint(0, 2, (20,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xs, ys), batch_size=8)
    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 2))
    calls = []
    fit(model, loader, None, TrainSpec(epochs=2, batch_size=8), torch.device("cpu"),
        on_batch=lambda *a: calls.append(a))
    assert calls == [(e, i, 3, b) for e in (1, 2) for i, b in ((1, 8), (2, 8), (3, 4))]
