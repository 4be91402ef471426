"""search/study/stop.py: a stop request is a flag taken at the next check (even when Ctrl-C lands inside a storage
write), a second signal is ignored and a third stops at once, and a wait ends as soon as a stop arrives."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy

from search import storage as storage_mod
from search.storage import make_storage
from search.study.stop import Signals, Stop, StopRequested
from search.trials import INTERRUPTED
from tests.helpers.studies import WAIT_S

S = optuna.trial.TrialState


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_ctrl_c_inside_a_storage_write_only_sets_the_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C that lands inside SQLAlchemy lets the call finish; the stop is taken at the next check.

    Raised mid-call, it could leave the SQLite write lock with a connection that only the traceback
    still referenced; the worker's next writes (the trial marked interrupted, then Optuna's tell)
    waited for their own process until `database is locked`, with a traceback.
    """
    monkeypatch.setattr(storage_mod, "SQLITE_TIMEOUT_S", 1)  # a lock left behind fails in 1 s, not 60
    storage = make_storage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    trial = study.ask()
    pressed: list[str] = []

    @sqlalchemy.event.listens_for(storage.engine, "before_cursor_execute")
    def ctrl_c_mid_write(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        if not pressed and statement.lstrip().upper().startswith("INSERT"):
            pressed.append(statement)
            signal.raise_signal(signal.SIGINT)  # runs the handler here, inside SQLAlchemy's execute

    with Stop() as stop:
        trial.set_user_attr("epoch", 1)
        assert pressed and stop and stop.reason == "SIGINT"
        with pytest.raises(StopRequested, match="SIGINT"):
            stop.check()
    trial.set_user_attr(INTERRUPTED, stop.reason)  # what the worker does next: no lock left to wait for
    study.tell(trial, state=S.FAIL)
    assert study.trials[0].user_attrs == {"epoch": 1, INTERRUPTED: "SIGINT"} and study.trials[0].state == S.FAIL


def test_second_signal_is_ignored_third_stops_at_once() -> None:
    before = signal.getsignal(signal.SIGINT)
    with Stop() as stop:
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGINT)  # the terminal and the parent both deliver one Ctrl-C
        assert stop.reason == "SIGTERM" and stop.count == 2
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before, "the handlers are put back"
    assert not Stop().wait(0.0), "no request: wait returns False"


def test_a_signal_caught_by_another_thread_wakes_the_main_threads_wait() -> None:
    """The kernel may hand a process's SIGINT to any thread; a wait in the main thread still ends at once."""
    with Signals() as signals:
        other = threading.Thread(target=lambda: signal.pthread_kill(threading.get_ident(), signal.SIGINT))
        other.start()
        other.join()
        t0 = time.monotonic()
        signals.wait(WAIT_S)
        assert time.monotonic() - t0 < WAIT_S / 2, "woken by the signal, not by the timeout"
        assert signals.count == 1 and signals.last == "SIGINT"


def test_a_stop_requested_from_another_thread_wakes_its_wait() -> None:
    stop = Stop()
    threading.Thread(target=stop.request, args=("test",)).start()
    assert stop.wait(WAIT_S) and stop.reason == "test"
    with pytest.raises(StopRequested, match="test"):
        stop.check()
