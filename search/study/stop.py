"""A stop request: SIGINT/SIGTERM/SIGPIPE only set a flag, and the loops check it at points where stopping is safe.

SIGPIPE is a closed stdout (`resnet-search run ... | head` after head left): the reader is gone as a user who pressed
Ctrl-C is, so the run stops the same way and resumes the same way. Python ignores SIGPIPE by default (a write
then only raises BrokenPipeError, wherever it happens); while a handler is installed the kernel delivers it
along with that error, and `search.cli.say` turns the error itself into nothing more than a dropped line.

Training checks it between batches (search.trainer.fit), the worker loop between trials and while it
waits. Nothing is raised from inside a signal handler, so a stop never cuts Optuna's bookkeeping or a
database call in half (an exception raised mid-way through SQLAlchemy can leave an SQLite connection
holding the write lock). A third signal still stops at once, for a process stuck somewhere.

Waiting is a self-pipe (`signal.set_wakeup_fd`): the interpreter's C-level handler writes a byte to it in
whichever thread the kernel delivered the signal to, so a `wait` in the main thread wakes even when the
signal landed in another thread (a blocking system call in the main thread, such as `waitpid`, would
sleep through that). The handlers take no lock: a Python handler that sets a `threading.Event` can
deadlock on the lock the interrupted main thread holds inside `Event.wait`.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import weakref
from typing import Any, TypeVar

from ..errors import StopRequested

S = TypeVar("S", bound="Signals")


class Signals:
    """SIGINT/SIGTERM/SIGPIPE counted, and a `wait` that any of them (or `wake`) ends. `with` installs the handlers."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE)

    def __init__(self) -> None:
        self.count = 0  # signals received
        self.last = ""  # the name of the last one (SIGINT, SIGTERM, SIGPIPE)
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)  # a wakeup fd must not block: a full pipe already means "wake"
        weakref.finalize(self, _close, self._read, self._write)
        self._previous: dict[int, Any] = {}
        self._previous_fd: int | None = None

    def handle(self, signum: int, frame: Any) -> None:
        """The Python-level handler: count the signal (the wakeup byte is already written)."""
        self.count += 1
        self.last = signal.Signals(signum).name

    def wake(self) -> None:
        """End a `wait` in progress, or the next one (callable from any thread)."""
        with contextlib.suppress(BlockingIOError):  # the pipe is full of wakeups already
            os.write(self._write, b"\0")

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`, waking early on a signal or a `wake`; returns whether one came."""
        woken, _, _ = select.select([self._read], [], [], seconds)
        try:
            while os.read(self._read, 4096):
                pass
        except BlockingIOError:
            pass  # drained
        return bool(woken)

    def __enter__(self: S) -> S:
        if threading.current_thread() is threading.main_thread():  # handlers can only live there
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self.handle)
            self._previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous_fd is not None:
            signal.set_wakeup_fd(self._previous_fd)
            self._previous_fd = None
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


class Stop(Signals):
    """The stop flag of one process; truthy once requested. `with Stop() as stop:` installs the handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.requested = False
        self.reason = ""  # the name of the signal that asked to stop (SIGINT, SIGTERM, SIGPIPE)

    def __bool__(self) -> bool:
        return self.requested

    def __call__(self) -> bool:
        """Whether a stop was requested (the form fit() takes)."""
        return self.requested

    def request(self, reason: str) -> None:
        """Ask every loop that checks this flag to stop at its next safe point (callable from any thread)."""
        if not self.requested:
            self.reason = reason
            self.requested = True
        self.wake()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`, waking early on a stop request; returns whether one came."""
        if not self.requested:
            super().wait(seconds)
        return self.requested

    def check(self) -> None:
        """Raise StopRequested if a stop was requested."""
        if self.requested:
            raise StopRequested(self.reason)

    def handle(self, signum: int, frame: Any) -> None:
        """First signal: request a stop; second: ignored; third: stop now."""
        super().handle(signum, frame)
        if self.count == 1:
            # Ctrl-C in a terminal reaches every worker and the parent forwards it too: one stop per press.
            self.request(self.last)
        elif self.count >= 3:
            raise KeyboardInterrupt(self.reason or self.last)


def _close(*fds: int) -> None:
    """Close the pipe of a Signals that is gone."""
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
