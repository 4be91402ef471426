"""Files an adversary or a failing disk leaves behind: hostile pickles, broken checkpoints, a full disk at one write."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from blocks import atomic


class Touch:
    """Unpickling this calls os.system('touch <marker>'): the proof that a load ran code from a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch '{self.marker}'",)


def plant_hostile(path: Path, marker: Path, **valid: object) -> Path:
    """A torch.save'd dict whose `history` holds a Touch next to the `valid` entries; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**valid, "history": [Touch(marker)]}, path)
    return path


def truncate(path: Path) -> None:
    """Cut a file to half its size (a copy or a write that stopped part-way)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def rewrite(path: Path, **change: object) -> None:
    """Save a checkpoint again with entries changed: it loads, and holds what it should not."""
    state = torch.load(path, weights_only=True)  # the test's own file: trusted
    torch.save({**state, **change}, path)


def more_epochs(path: Path, n: int = 20) -> None:
    """A checkpoint whose history says `n` epochs (its first repeated), more than any test's run trains."""
    first = torch.load(path, weights_only=True)["history"][0]
    rewrite(path, history=[{**first, "epoch": e, "val_acc": 0.99} for e in range(1, n + 1)])


# Ways to break a saved file in place; "hostile" writes a hostile pickle (marker: a file it would touch).
# From "optimizer {}" on, the file loads: what it holds is wrong.
BREAKERS: dict[str, Callable[[Path, Path], object]] = {
    "hostile": lambda path, marker: plant_hostile(path, marker, model={}, optimizer={}, schedule={}),
    "empty": lambda path, marker: path.write_bytes(b""),
    "truncated": lambda path, marker: truncate(path),
    "not a zip": lambda path, marker: path.write_bytes(b"\x00not a checkpoint\xff" * 64),
    "no model": lambda path, marker: torch.save({"history": []}, path),
    "fifo": lambda path, marker: (path.unlink(), os.mkfifo(path)),  # a read would wait for a writer forever
    "optimizer {}": lambda path, marker: rewrite(path, optimizer={}),
    "no param groups": lambda path, marker: rewrite(path, optimizer={"state": {}, "param_groups": []}),
    "rng of 100 bytes": lambda path, marker: rewrite(path, rng=torch.zeros(100, dtype=torch.uint8)),
    "20 epochs": lambda path, marker: more_epochs(path),
    "a JSON list": lambda path, marker: path.write_text("[1, 2]"),  # for records: valid JSON, not a record
}


def full_disk_at(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make every atomic write of a file called `name` meet a full disk (its temporary file writes to /dev/full)."""
    create = atomic._create

    def create_full(path: Path) -> tuple[Path, int]:
        tmp, fd = create(path)
        if path.name == name:
            full = os.open("/dev/full", os.O_WRONLY)
            os.dup2(full, fd)  # the temporary file exists (and must be cleaned up); its writes fail with ENOSPC
            os.close(full)
        return tmp, fd

    monkeypatch.setattr(atomic, "_create", create_full)


@contextmanager
def fifo_watch(path: Path, after_s: float = 15.0) -> Iterator[list[Path]]:
    """Unblock a reader still waiting on the FIFO at `path` after `after_s` seconds (open it to write, close it):
    a hang becomes a failed assertion, not a stuck test. Yields a list that names the FIFO once a reader waited."""
    blocked: list[Path] = []
    done = threading.Event()

    def watch() -> None:
        done.wait(after_s)
        while not done.is_set():
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # on a FIFO, succeeds only while a reader waits
            except OSError:
                done.wait(0.2)
                continue
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                blocked.append(path)
            os.close(fd)
            done.wait(0.2)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield blocked
    finally:
        done.set()
        thread.join()
