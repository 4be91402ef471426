"""A stop request: SIGINT/SIGTERM only set a flag, and the loops check it at points where stopping is safe.

Training checks it between batches (search.trainer.fit), the worker loop between trials and while it
waits. Nothing is raised from inside a signal handler, so a stop never cuts Optuna's bookkeeping or a
database call in half (an exception raised mid-way through SQLAlchemy can leave an SQLite connection
holding the write lock). A third signal still stops at once, for a process stuck somewhere.
"""

from __future__ import annotations

import signal
import threading
from typing import Any


class StopRequested(KeyboardInterrupt):
    """Raised at a safe point after a stop was requested; its message is the signal's name."""


class Stop:
    """The stop flag of one process; truthy once requested. `with Stop() as stop:` installs the handlers."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""  # the name of the signal that asked to stop (SIGINT, SIGTERM)
        self.count = 0  # signals received
        self._previous: dict[int, Any] = {}

    def __bool__(self) -> bool:
        return self.event.is_set()

    def __call__(self) -> bool:
        """Whether a stop was requested (the form fit() takes)."""
        return self.event.is_set()

    def request(self, reason: str) -> None:
        """Ask every loop that checks this flag to stop at its next safe point."""
        if not self.event.is_set():
            self.reason = reason
            self.event.set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`, waking early on a stop request; returns whether one came."""
        return self.event.wait(seconds)

    def check(self) -> None:
        """Raise StopRequested if a stop was requested."""
        if self.event.is_set():
            raise StopRequested(self.reason)

    def handle(self, signum: int, frame: Any) -> None:
        """First signal: request a stop; second: ignored; third: stop now."""
        self.count += 1
        name = signal.Signals(signum).name
        if self.count == 1:
            # Ctrl-C in a terminal reaches every worker and the parent forwards it too: one stop per press.
            self.request(name)
        elif self.count >= 3:
            raise KeyboardInterrupt(self.reason or name)

    def __enter__(self) -> "Stop":
        if threading.current_thread() is threading.main_thread():  # handlers can only live there
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self.handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
