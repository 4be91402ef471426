"""Where a study lives: SQLite (the embedded default) or any SQLAlchemy URL, with heartbeats and retries.

The one module that reaches into Optuna's private parts (`study._storage`, `_trial_id`, the
heartbeat thread and table), each behind a named function: rdb_storage, trial_id, stored_trial, ask,
heartbeat, with_heartbeat.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import sqlite3
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from blocks.text import one_line

from .errors import UserError
from .locks import advisory_key, hold_advisory_lock, hold_lock, release_advisory_lock
from .names import check_path
from .trials import INTERRUPTED, WORKER

# Heartbeats, trial grouping and retry are marked experimental by Optuna; they are what we rely on.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

HEARTBEAT_S = 30  # a running trial writes a heartbeat this often (--heartbeat)
GRACE_S = 120  # a trial silent for this long belongs to a dead worker: failed, then retried (--grace)
# Upper bounds of --heartbeat and --grace, seconds: past ~9e9 s the heartbeat thread's wait overflows
# (threading.TIMEOUT_MAX), and a worker silent for longer than a day is dead by any measure.
HEARTBEAT_MAX_S, GRACE_MAX_S = 3600, 86400
MAX_RETRY = 3  # retries of one trial killed with its worker
SQLITE_TIMEOUT_S = 60  # a writer waits this long for the SQLite file lock instead of failing
SCHEMA_LOCK = ".schema.lock"  # beside an SQLite database: the longest of the names made from its name (-wal, .lock)
SCHEMES = "sqlite:///FILE, postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE or mysql://..."
SCHEMA_LOCK_KEY = advisory_key("search.schema")  # the PostgreSQL advisory lock serialising table creation


def default_storage(results: Path) -> str:
    """The embedded default: an SQLite file in the study's results folder."""
    return f"sqlite:///{results / 'study.db'}"


def normalize_url(url: str) -> str:
    """Accept `postgres://` and pick the installed PostgreSQL driver for a bare `postgresql://`."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):  # SQLAlchemy 2.1 defaults to psycopg 3; the postgres extra ships psycopg2
        has = importlib.util.find_spec
        if has("psycopg") is None and has("psycopg2") is not None:
            url = "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def check_url(url: str) -> sqlalchemy.engine.URL:
    """The storage URL parsed, its database known and its driver installed; opens and creates nothing."""
    given = url
    try:
        parsed = sqlalchemy.engine.make_url(normalize_url(url))
    except sqlalchemy.exc.ArgumentError:
        raise UserError(f"storage {redact_url(given)!r}: not a database URL (expected {SCHEMES})") from None
    try:
        parsed.get_dialect().import_dbapi()
    except sqlalchemy.exc.NoSuchModuleError:
        raise UserError(f"storage {redact_url(given)!r}: unknown database {parsed.drivername!r} "
                        f"(expected {SCHEMES})") from None
    except ImportError:
        extra = " (pip install 'resnet-budget-search[postgres]')" if parsed.get_backend_name() == "postgresql" else ""
        raise UserError(f"storage {redact_url(given)!r}: no database driver for {parsed.drivername}{extra}") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        check_path(parsed.database, "storage file", room=len(SCHEMA_LOCK))
    return parsed


def make_storage(url: str, heartbeat_s: int = HEARTBEAT_S, grace_s: int = GRACE_S) -> RDBStorage:
    """An RDB storage (SQLite or PostgreSQL) with heartbeats and retry of trials of dead workers."""
    given, url = url, normalize_url(url)
    parsed = check_url(given)
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
        _sqlite_wal(parsed.database)
    elif backend == "postgresql":  # fail fast on an unreachable server; survive connections the server dropped
        kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    try:
        with _schema_lock(url, parsed, kwargs):
            storage = RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=heartbeat_s, grace_period=grace_s,
                                 heartbeat_stale_trial_callback=RetryCallback(max_retry=MAX_RETRY))
    except Exception as e:  # unreachable server, wrong password, unwritable file
        raise UserError(f"storage {redact_url(given)!r}: cannot open: {one_line(e)}") from None
    if backend == "sqlite":
        _begin_immediate(storage.engine)
    return storage


@contextlib.contextmanager
def _schema_lock(url: str, parsed: sqlalchemy.engine.URL, engine_kwargs: dict[str, Any]) -> Iterator[None]:
    """One process at a time creates or checks Optuna's tables.

    Runs started together on an empty database otherwise race between checking for a table and
    creating it: SQLite fails with `table studies already exists` or a UNIQUE constraint on
    alembic_version, PostgreSQL with `duplicate key value violates unique constraint
    "pg_type_typname_nsp_index"`. SQLite takes a lock file beside the database, PostgreSQL an advisory lock.
    """
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        with _lock_file(parsed.database):
            yield
        return
    if backend != "postgresql":
        yield
        return
    engine = sqlalchemy.create_engine(url, **engine_kwargs)
    try:
        conn = hold_advisory_lock(engine, SCHEMA_LOCK_KEY)
        try:
            yield
        finally:
            release_advisory_lock(conn, SCHEMA_LOCK_KEY)
    finally:
        engine.dispose()


@contextlib.contextmanager
def _lock_file(database: str | None) -> Iterator[None]:
    """Hold `DATABASE.schema.lock` exclusively (a file apart from the study lock's: neither waits on the other)."""
    try:
        f = hold_lock(f"{database}{SCHEMA_LOCK}", "the schema lock") if database and database != ":memory:" else None
    except (UserError, OSError):  # not opened: a read-only folder holds an existing study (RDBStorage reports
        f = None  # anything else); or not locked: a file system without locks (some NFS mounts), unserialised as before
    with f or contextlib.nullcontext():
        yield


def _sqlite_wal(database: str | None) -> None:
    """Switch an SQLite file to write-ahead logging (kept in the file): readers stop blocking the writer."""
    if not database or database == ":memory:" or not Path(database).parent.is_dir():
        return  # RDBStorage reports a missing folder in its own words
    try:
        con = sqlite3.connect(database, timeout=SQLITE_TIMEOUT_S)
        try:
            con.execute("PRAGMA journal_mode=WAL")
        finally:
            con.close()
    except sqlite3.Error:
        pass  # e.g. read-only: RDBStorage reports it, or the file stays in rollback mode (slower, as safe)


def rdb_storage(study: optuna.Study) -> RDBStorage | None:
    """The study's RDBStorage (Optuna wraps it in a private cache layer), or None for other storages."""
    storage = study._storage
    storage = getattr(storage, "_backend", storage)  # optuna.storages._CachedStorage
    return storage if isinstance(storage, RDBStorage) else None


def ask(study: optuna.Study, known: list[optuna.trial.FrozenTrial]) -> optuna.Trial:
    """study.ask() for our own trial loop; a trial the sampler fails to prepare is failed, not left RUNNING.

    `known` is the study's trials read under the study lock, so a RUNNING trial not among them is the
    one this call created (Optuna creates it before the sampler's before_trial and sample_relative run).
    """
    with warnings.catch_warnings():  # we run heartbeats around the objective as study.optimize does
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        try:
            return study.ask()
        except Exception:
            seen = {trial_id(t) for t in known}
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                if trial_id(t) not in seen:
                    study._storage.set_trial_state_values(trial_id(t), state=optuna.trial.TrialState.FAIL)
            raise


def readable_trials(study: optuna.Study, url: str) -> list[optuna.trial.FrozenTrial]:
    """Every trial of `study` (`url`: its storage, for the message); a row Optuna cannot read is a UserError."""
    try:
        return study.get_trials(deepcopy=False)
    except AssertionError:  # Optuna's reader asserts on a value stored as NULL, which is how SQLite keeps a NaN
        raise UserError(f"study {study.study_name!r} in {redact_url(url)}: a trial's value is NULL (a NaN written "
                        f"into the database), which Optuna cannot read; restore the database from a copy") from None


def trial_id(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """The storage's id of a trial (Optuna keeps it private: `_trial_id`)."""
    return trial._trial_id


def stored_trial(trial: optuna.Trial) -> optuna.trial.FrozenTrial:
    """A running trial as stored, system attributes included (Optuna 5's Trial no longer exposes them)."""
    return trial.study._storage.get_trial(trial._trial_id)


def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Any:
    """Optuna's heartbeat thread for a running trial, as study.optimize starts it around the objective."""
    from optuna.storages._heartbeat import get_heartbeat_thread

    return get_heartbeat_thread(trial._trial_id, study._storage)


def with_heartbeat(storage: RDBStorage, ids: list[int]) -> set[int]:
    """Which of the trials with storage ids `ids` have written a heartbeat (Optuna 5 has no public call for it)."""
    query = sqlalchemy.text("SELECT trial_id FROM trial_heartbeats WHERE trial_id IN :ids").bindparams(
        sqlalchemy.bindparam("ids", expanding=True))  # Optuna's own table (optuna.storages._rdb.models)
    with storage.engine.connect() as conn:
        return {row[0] for row in conn.execute(query, {"ids": ids})}


def close_storage(study: optuna.Study) -> None:
    """Close the study's database connections.

    For SQLite this is what leaves study.db whole: the last connection to close folds the
    write-ahead log back into the file and deletes study.db-wal (https://sqlite.org/wal.html).
    """
    storage = rdb_storage(study)
    if storage is not None:
        storage.engine.dispose()


def _begin_immediate(engine: sqlalchemy.engine.Engine) -> None:
    """Make every SQLite transaction take the write lock up front (SQLAlchemy's pysqlite recipe).

    A deferred transaction that reads, then writes, fails at once with `database is locked` when
    another process wrote in between; an immediate one waits (SQLITE_TIMEOUT_S) for its turn.
    In WAL mode, synchronous=NORMAL syncs at checkpoints instead of every commit: a crash of the
    machine may lose the last commits, never the file's consistency (https://sqlite.org/wal.html).
    """
    @sqlalchemy.event.listens_for(engine, "connect")
    def _no_pysqlite_begin(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    @sqlalchemy.event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened while the tables were checked predate the listeners


class RetryCallback(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry (same params, linked by system attrs) without the attributes of the run that stopped."""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        trial = copy.deepcopy(trial)
        trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in (WORKER, INTERRUPTED)}
        super().__call__(study, trial)


def redact_url(url: str) -> str:
    """The URL with any password hidden."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        if ":" in creds:  # a password to hide
            return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url
