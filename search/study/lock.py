"""The study-wide lock that every worker of a study takes: PostgreSQL's advisory lock, else a lock file."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy

from ..locks import hold_lock, release_lock
from ..storage import rdb_storage


class StudyLock:
    """One mutex for every worker of a study: a PostgreSQL advisory lock, else a lock file on this machine."""

    def __init__(self, study: optuna.Study, fallback: Path):
        storage = rdb_storage(study)
        engine = storage.engine if storage is not None else None
        self.engine = engine if engine is not None and engine.dialect.name == "postgresql" else None
        digest = hashlib.sha256(f"search.study:{study.study_name}".encode()).digest()
        self.key = int.from_bytes(digest[:8], "big", signed=True)  # pg_advisory_lock takes one bigint
        database = engine.url.database if engine is not None and engine.dialect.name == "sqlite" else None
        self.path = Path(database + ".lock") if database and database != ":memory:" else fallback
        self._held: Any = None

    def acquire(self) -> None:
        """Block until this process holds the lock (a dead holder's lock is freed by the OS or the server)."""
        if self._held is not None:
            return
        if self.engine is not None:
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
            self._held = conn
        else:
            self._held = hold_lock(self.path, "the study lock")  # a link planted at its name is refused, never opened

    def release(self) -> None:
        """Release the lock if held (safe to call twice)."""
        held, self._held = self._held, None
        if held is None:
            return
        if self.engine is not None:
            try:
                held.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            finally:
                held.close()
        else:
            release_lock(held)

    def __enter__(self) -> StudyLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
