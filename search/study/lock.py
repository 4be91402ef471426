"""The study-wide lock that every worker of a study takes: PostgreSQL's advisory lock, else a lock file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from ..locks import advisory_key, hold_advisory_lock, hold_lock, release_advisory_lock, release_lock
from ..storage import rdb_storage


class StudyLock:
    """One mutex for every worker of a study: a PostgreSQL advisory lock, else a lock file on this machine."""

    def __init__(self, study: optuna.Study, fallback: Path):
        storage = rdb_storage(study)
        engine = storage.engine if storage is not None else None
        self.engine = engine if engine is not None and engine.dialect.name == "postgresql" else None
        self.key = advisory_key(f"search.study:{study.study_name}")
        database = engine.url.database if engine is not None and engine.dialect.name == "sqlite" else None
        self.path = Path(database + ".lock") if database and database != ":memory:" else fallback
        self._held: Any = None

    def acquire(self) -> None:
        """Block until this process holds the lock (a dead holder's lock is freed by the OS or the server)."""
        if self._held is not None:
            return
        if self.engine is not None:
            self._held = hold_advisory_lock(self.engine, self.key)
        else:
            self._held = hold_lock(self.path, "the study lock")  # a link planted at its name is refused, never opened

    def release(self) -> None:
        """Release the lock if held (safe to call twice)."""
        held, self._held = self._held, None
        if held is None:
            return
        if self.engine is not None:
            release_advisory_lock(held, self.key)
        else:
            release_lock(held)

    def __enter__(self) -> StudyLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
