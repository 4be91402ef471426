"""search/storage.py: concurrent creation of a new SQLite study, storage URLs checked without opening them and
printed without their password, bad storage in one line, a failing sampler that leaves no trial running."""

from __future__ import annotations

import fcntl
import importlib.util
import threading
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.storages._rdb import models

from search import SPACES_DIR, run, storage
from search.errors import UserError
from search.storage import ask, make_storage, redact_url
from tests.helpers.errors import one_error
from tests.helpers.spaces import write_space

S = optuna.trial.TrialState


def test_two_runs_creating_one_sqlite_study_both_succeed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second run arrives while the first is between checking for Optuna's tables and creating them.

    The second is started from inside the first one's creation (SQLAlchemy's before_create event of
    the `studies` table), and the first goes on once the second has either finished (no lock: it
    creates the tables under the first one's feet) or is about to wait for the schema lock.
    """
    url = f"sqlite:///{tmp_path / 'study.db'}"
    arrived, errors, second = threading.Event(), [], []
    real_flock = fcntl.flock

    def flock(f, op):  # the second run says it reached the lock, then waits for it as usual
        if threading.current_thread() in second:
            arrived.set()
        return real_flock(f, op)

    def open_second() -> None:
        try:
            optuna.create_study(study_name="s", storage=storage.make_storage(url), load_if_exists=True)
        except Exception as e:  # noqa: BLE001 (reported by the assertion below)
            errors.append(e)
        finally:
            arrived.set()

    def before_create(target, connection, **kw) -> None:
        if second:
            return  # only the first run's creation lets another in
        second.append(threading.Thread(target=open_second))
        second[0].start()
        arrived.wait()

    monkeypatch.setattr(fcntl, "flock", flock)
    sqlalchemy.event.listen(models.StudyModel.__table__, "before_create", before_create)
    try:
        optuna.create_study(study_name="s", storage=storage.make_storage(url), load_if_exists=True)
    finally:
        sqlalchemy.event.remove(models.StudyModel.__table__, "before_create", before_create)
        for t in second:
            t.join()
    assert not errors, errors
    assert [s.study_name for s in storage.make_storage(url).get_all_studies()] == ["s"]


@pytest.mark.parametrize("url, message", [
    ("foo://bar", "storage 'foo://bar': unknown database 'foo'"),
    ("not a url", "storage 'not a url': not a database URL"),
    ("mysql://u:secret@host/db", "storage 'mysql://u:***@host/db': no database driver for mysql"),
])
def test_dry_run_checks_the_storage_url(tmp_path: Path, url: str, message: str,
                                        capsys: pytest.CaptureFixture) -> None:
    """--dry-run refuses a storage URL the real run would refuse, and creates nothing."""
    if "mysql" in url and importlib.util.find_spec("MySQLdb") is not None:
        pytest.skip("a MySQL driver is installed here")
    before = set(tmp_path.iterdir())
    code = run.main([str(SPACES_DIR / "smoke.yaml"), "--dry-run", "--dry-run-samples", "2",
                     "--storage", url, "--results-dir", str(tmp_path / "results"), "--set", "data.synthetic_train=40",
                     "--set", "data.synthetic_test=10", "--set", "data.num_workers=0"])
    one_error(capsys, code, start=message)
    assert set(tmp_path.iterdir()) == before


def test_check_url_opens_nothing(tmp_path: Path) -> None:
    """A valid SQLite URL is accepted by the check without creating its file."""
    db = tmp_path / "study.db"
    assert storage.check_url(f"sqlite:///{db}").get_backend_name() == "sqlite"
    assert not db.exists()
    with pytest.raises(UserError, match="unknown database"):
        storage.check_url("foo://bar")


def test_printed_urls_hide_only_a_password() -> None:
    assert redact_url("postgresql://search:s3cret@db:5432/search") == "postgresql://search:***@db:5432/search"
    assert redact_url("postgresql://search@db/search") == "postgresql://search@db/search"  # copy-paste works
    assert redact_url("sqlite:///results/x/study.db") == "sqlite:///results/x/study.db"


BAD_STORAGE = {
    "invalid scheme": ("foo://bar", "unknown database 'foo'"),
    "not a URL": ("no-scheme-here", "not a database URL"),
    "unreachable server": ("postgresql://nobody@127.0.0.1:1/x", "Connection refused"),
    "missing folder": ("sqlite:////nonexistent-folder/study.db", "cannot open"),
}


@pytest.mark.parametrize("case", sorted(BAD_STORAGE))
def test_bad_storage_is_one_line(case: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    url, expected = BAD_STORAGE[case]
    space = write_space(tmp_path)
    assert run.main([str(space), "--storage", url, "--results-dir", str(tmp_path / "r")]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: storage ") and expected in err[0], err


def test_a_sampler_that_fails_leaves_no_trial_running(tmp_path: Path) -> None:
    class Broken(optuna.samplers.RandomSampler):
        def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            raise OverflowError("Python int too large to convert to C long")

    study = optuna.create_study(study_name="s", storage=make_storage(f"sqlite:///{tmp_path / 'study.db'}"),
                                sampler=Broken())
    with pytest.raises(OverflowError):
        ask(study, study.get_trials())
    assert [t.state for t in study.get_trials()] == [S.FAIL]


def test_optunas_private_parts_we_use_still_do_what_we_rely_on(tmp_path: Path) -> None:
    """pyproject pins no upper Optuna: each private access in search/storage.py is held here on the installed
    release (a new one that moves them fails this test, not a user's search)."""
    from search.storage import default_storage, heartbeat, rdb_storage, stored_trial, trial_id, with_heartbeat

    storage = make_storage(default_storage(tmp_path), heartbeat_s=1, grace_s=2)
    study = optuna.create_study(storage=storage, study_name="private")
    assert rdb_storage(study) is storage  # through Optuna's private cache layer
    trial = ask(study, study.get_trials())
    trial.set_user_attr("k", 1)
    assert stored_trial(trial).user_attrs == {"k": 1} and stored_trial(trial).number == trial.number
    assert trial_id(trial) == trial_id(study.get_trials()[0])
    assert with_heartbeat(storage, [trial_id(trial)]) == set()
    with heartbeat(study, trial):
        deadline = time.monotonic() + 60  # the thread writes its first beat as it starts: wait for it, not a time
        while not with_heartbeat(storage, [trial_id(trial)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert with_heartbeat(storage, [trial_id(trial)]) == {trial_id(trial)}
    study.tell(trial, 0.5)
    assert study.get_trials()[0].state == optuna.trial.TrialState.COMPLETE
