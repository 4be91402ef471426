"""Progress inside an epoch: batch i/N, img/s and time estimates; a tqdm bar on a terminal, else a plain line."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm

PLAIN_EVERY_S = 30.0  # seconds between plain progress lines when the output is a file or a pipe
BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar:16}| batch {n_fmt}/{total_fmt}{postfix}"  # tqdm puts ", " before the postfix


def fmt_s(seconds: float | None) -> str:
    """1:02:05 (tqdm's format, to the nearest second), or ? when unknown."""
    return "?" if seconds is None else tqdm.format_interval(max(0, round(seconds)))


class Progress:
    """The per-batch hook of one run (a trial, a retrain seed): pass it as `on_batch` to fit() or predict().

    Speed is measured from this run's batches (the first batch of an epoch, which pays for starting the
    loader workers, only starts the clock). Estimates: the epoch from its remaining batches; the run from
    its remaining epochs at the last whole epoch's wall time (training + validation), or at the measured
    speed before one has ended; `later_runs` more runs of the same length after this one (e.g. the rest
    of the study, assuming no pruning) give the total.
    """

    def __init__(self, label: str, epochs: int, *, later_runs: int = 0, run_name: str = "trial",
                 total_name: str = "study",
                 stream: TextIO | None = None, log: Callable[[str], None] | None = None,
                 every_s: float = PLAIN_EVERY_S, clock: Callable[[], float] = time.monotonic,
                 refresh_s: float = 0.5) -> None:
        self.label, self.epochs, self.later_runs = label, epochs, later_runs
        self.run_name, self.total_name = run_name, total_name
        self.stream = stream if stream is not None else sys.stdout
        self.log = log or (lambda line: print(line, file=self.stream, flush=True))
        self.every_s, self.clock, self.refresh_s = every_s, clock, refresh_s
        self.terminal = is_terminal(self.stream)
        self.bar: tqdm | None = None
        self.epoch = -1
        self.t_first = self.t_epoch = self.t_line = self.clock()
        self.images = 0  # images since the epoch's first batch
        self.epoch_s: float | None = None  # wall time of the last whole epoch

    def __call__(self, epoch: int, i: int, n: int, images: int) -> None:
        """Batch `i` of `n` (1-based) of `epoch` (1-based; 0 = a test pass) just ended with `images` images."""
        now = self.clock()
        if epoch != self.epoch or i == 1:
            self._start(epoch, n, now)
        else:
            self.images += images
        rate = self.images / (now - self.t_first) if self.images and now > self.t_first else None
        text = self._estimates(epoch, i, n, rate, images)
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(i - self.bar.n)
            if i >= n:
                self.close()
        elif now - self.t_line >= self.every_s:
            self.t_line = now
            self.log(f"[{self.label}] {self._where(epoch)} batch {i}/{n} {text}")

    def _start(self, epoch: int, n: int, now: float) -> None:
        """A new epoch (or test pass) began with this batch: time the last one, restart the speed clock."""
        if self.epoch > 0 and epoch == self.epoch + 1:
            self.epoch_s = now - self.t_epoch
        self.close()
        self.epoch, self.t_epoch, self.t_first, self.images = epoch, now, now, 0
        if self.terminal:
            wide = _has_width(self.stream)  # a terminal that reports 0 columns would get no bar at all
            self.bar = tqdm(total=n, desc=f"[{self.label}] {self._where(epoch)}", file=self.stream, leave=False,
                            bar_format=BAR_FORMAT, mininterval=self.refresh_s, dynamic_ncols=wide,
                            ncols=None if wide else 120, nrows=None if wide else 40)  # tqdm hides bars past row 0
            self.bar.update(1)

    def _where(self, epoch: int) -> str:
        """`epoch 2/15` or `test`."""
        return f"epoch {epoch}/{self.epochs}" if epoch > 0 else "test"

    def _estimates(self, epoch: int, i: int, n: int, rate: float | None, batch_images: int) -> str:
        """`312 img/s, epoch ETA 0:20, trial ETA 5:12, study ETA 1:02:00` from the measured speed."""
        if rate is None:
            return "measuring speed..."
        left = (n - i) * batch_images / rate
        parts = [f"{rate:,.0f} img/s", f"{'epoch' if epoch else 'pass'} ETA {fmt_s(left)}"]
        if epoch > 0:
            per_epoch = self.epoch_s or n * batch_images / rate
            run_left = left + (self.epochs - epoch) * per_epoch
            parts.append(f"{self.run_name} ETA {fmt_s(run_left)}")
            if self.later_runs > 0:
                parts.append(f"{self.total_name} ETA {fmt_s(run_left + self.later_runs * self.epochs * per_epoch)}")
        return ", ".join(parts)

    def close(self) -> None:
        """Remove the bar (the epoch's own line follows it)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def is_terminal(stream: TextIO) -> bool:
    """Whether `stream` is a terminal (a closed or odd stream is not)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _has_width(stream: TextIO) -> bool:
    """Whether the terminal reports its size (a fresh pseudo-terminal, e.g. under `script`, says 0 x 0)."""
    try:
        size = os.get_terminal_size(stream.fileno())
        return size.columns > 0 and size.lines > 0
    except (OSError, AttributeError, ValueError):
        return False
