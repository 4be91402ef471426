"""Faults: a worker killed mid-trial, Ctrl-C then rerun, a full disk; and seeds that reproduce a trial."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import optuna
import pytest
import sqlalchemy

from search import run
from search import storage as storage_mod
from search.cli import main_guard
from search.storage import make_storage
from search.trials import INTERRUPTED, RESUMED_FROM, RETRY_OF
from tests.helpers.datasets import corrupt_one, make_imagefolder
from tests.helpers.hostile import full_disk_at
from tests.helpers.spaces import FAST_HEARTBEAT, write_space
from tests.helpers.studies import WAIT_S, check_finished_study, records, retry_of, study_at, wait_for
from tests.helpers.training import reproduce, same_metrics

S = optuna.trial.TrialState
# Many short epochs: a trial lasts a few seconds, so a test can stop it with epochs done and epochs to go.
LONG = {"train": {"epochs": 16}, "search": {"n_trials": 3}}


def mid_trial(results: Path) -> Callable[[], dict | None]:
    """A probe for a running trial with 1 to 14 of its 16 epochs recorded (at least a whole epoch to go)."""
    def probe() -> dict | None:
        for path in results.glob("trials/*.json"):
            r = read_record(path)
            if r is not None and r["state"] == "running" and 1 <= len(r["epochs"]) <= 14:
                return r
        return None
    return probe


def read_record(path: Path) -> dict | None:
    """A trial record, or None while it is missing or being replaced."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def freeze_mid_trial(results: Path) -> tuple[dict, int]:
    """SIGSTOP the worker of a trial that is mid-way, and return its record and pid.

    The record is read again once the worker is stopped: with at most 14 of 16 epochs written (a
    write in flight adds one), the frozen trial has a whole epoch of batches left, so whatever the
    test does next (a signal, a kill) meets it mid-trial, however loaded the machine is.
    """
    while True:
        seen = wait_for(mid_trial(results), WAIT_S, "a trial in the middle of its epochs")
        pid = int(seen["worker"].rsplit(":", 1)[1])
        os.kill(pid, signal.SIGSTOP)
        wait_for(partial(stopped, pid), WAIT_S, f"worker {pid} to stop")
        now = read_record(results / "trials" / f"{seen['number']:05d}.json")
        if now is not None and now["state"] == "running" and 1 <= len(now["epochs"]) <= 14:
            return now, pid
        os.kill(pid, signal.SIGCONT)  # it moved on between the probe and the stop: look again


def stopped(pid: int) -> bool:
    """Whether process `pid` is stopped (state T in /proc)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("T", "t")


def pending(pid: int, sig: int) -> bool:
    """Whether `sig` is queued for process `pid` (its shared pending mask in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("ShdPnd:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


@pytest.fixture
def reap() -> Iterator[None]:
    """Kill the workers this test process started that are still running when the test ends."""
    yield
    for task in Path("/proc/self/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue  # the thread ended, or a kernel without /proc/*/task/*/children
        for pid in children:
            try:
                if b"search.run" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass  # already gone


def test_worker_killed_mid_trial_is_retried(tmp_path: Path, capsys: pytest.CaptureFixture, reap: None) -> None:
    space = write_space(tmp_path, LONG)
    results = tmp_path / "r" / "space"
    args = [str(space), "--workers", "2", "--results-dir", str(tmp_path / "r"), "--device", "cpu", *FAST_HEARTBEAT]
    status: dict[str, int] = {}
    parent = threading.Thread(target=lambda: status.update(rc=run.main(args)))  # this process is the parent
    parent.start()
    victim, pid = freeze_mid_trial(results)
    os.kill(pid, signal.SIGKILL)
    parent.join(timeout=WAIT_S)
    assert status.get("rc") == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert re.search(r"^worker \d was killed by SIGKILL", out, re.M), out
    study = study_at(results)
    check_finished_study(study, 3, results, epochs=16)
    killed = study.trials[victim["number"]]
    assert killed.state == S.FAIL
    retry = retry_of(study, killed.number)
    assert retry.user_attrs[RESUMED_FROM] >= len(victim["epochs"]) + 1 >= 2, "resumed from its checkpoint"
    assert records(results)[killed.number]["retried_as"] == retry.number
    assert not list(results.glob("checkpoints/*.pt"))


def test_ctrl_c_then_rerun_resumes(tmp_path: Path, capsys: pytest.CaptureFixture, reap: None) -> None:
    space = write_space(tmp_path, LONG)
    results = tmp_path / "r" / "space"
    # A grace period longer than any wait here: the frozen trial is never failed as stale while frozen.
    args = [str(space), "--workers", "2", "--results-dir", str(tmp_path / "r"), "--device", "cpu", "--grace", "3600"]
    seen: dict = {}

    def press_ctrl_c() -> None:
        """With a trial frozen mid-way, Ctrl-C this process (the parent, which forwards it); then thaw it.

        The signal goes to this helper thread, not to the main thread blocked waiting for the workers:
        the kernel may deliver a process's signal to any of its threads, and the parent must act on it.
        """
        found, pid = freeze_mid_trial(results)
        seen.update(found)
        try:
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)
            wait_for(lambda: pending(pid, signal.SIGINT), WAIT_S, "the parent to forward SIGINT")
        finally:
            os.kill(pid, signal.SIGCONT)  # it wakes with the signal queued: the frozen trial is stopped mid-way

    # A test process started in the background by a shell ignores SIGINT; the parent must not here.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=press_ctrl_c, daemon=True).start()
        assert run.main(args) == 130
    finally:
        signal.signal(signal.SIGINT, previous)
    out, err = capsys.readouterr()
    assert seen, "no trial reached the middle of its epochs"
    assert err.strip().splitlines()[-1] == "interrupted: rerun the same command to resume"
    assert "Traceback" not in err + out and "[w0] interrupted" in out and "[w1] interrupted" in out
    study = study_at(results)
    assert not [t for t in study.get_trials() if t.state == S.RUNNING]
    stopped = study.trials[seen["number"]]
    assert stopped.state == S.FAIL and stopped.user_attrs[INTERRUPTED] == "SIGINT"
    assert records(results)[seen["number"]]["state"] == "interrupted"
    assert (results / "checkpoints" / f"trial_{seen['number']}.pt").is_file()

    assert run.main(args) == 0  # the same command: default heartbeat, so nothing waits for a grace period
    out = capsys.readouterr().out
    check_finished_study(study, 3, results, epochs=16)
    retry = retry_of(study, seen["number"])
    assert retry.user_attrs[RESUMED_FROM] >= len(seen["epochs"]) + 1 >= 2
    assert "resuming interrupted trial(s)" in out
    assert sum(line.startswith("study 'space': ") and "complete" in line for line in out.splitlines()) == 1
    assert {p.name for p in results.glob("worker*.log")} == {"worker0.log", "worker1.log"}


def test_a_storage_failure_mid_run_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    """The database failing under a running search (here: locked by another program) is one line, exit 1."""
    monkeypatch.setattr(storage_mod, "SQLITE_TIMEOUT_S", 0.2)
    db = tmp_path / "study.db"
    study = optuna.create_study(study_name="s", storage=make_storage(f"sqlite:///{db}"))
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # e.g. someone's sqlite3 shell left in a transaction
    try:
        assert main_guard(lambda: study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)) == 1
    finally:
        other.close()
    err = capsys.readouterr().err
    assert err == ("error: study storage failed: (sqlite3.OperationalError) database is locked; "
                   "rerun the same command to resume\n")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full to fill a disk")
def test_full_disk_stops_cleanly_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    space = write_space(tmp_path, {"search": {"n_trials": 2}, "augment": []})
    results = tmp_path / "r" / "space"
    full_disk_at(monkeypatch, "00000.json")  # trial 0's first record write meets a full disk
    args = [str(space), "--results-dir", str(tmp_path / "r"), "--device", "cpu"]
    assert run.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: results folder") and "No space left on device" in err[0], err
    study = study_at(results)
    trials = study.get_trials()
    assert [t.state for t in trials] == [S.FAIL] and "No space left" in trials[0].user_attrs[INTERRUPTED]
    assert not list(results.glob("trials/.*")), "the partial record is removed"
    monkeypatch.undo()
    assert run.main(args) == 0
    check_finished_study(study, 2, results)
    retry = retry_of(study, 0)
    assert retry.user_attrs[RESUMED_FROM] == 2  # epoch 1 was saved before the record failed
    # that the resumed trial equals an uninterrupted run: tests/search/test_resume.py, case "search trial after a full disk"


def test_trial_seed_reproduces_its_metrics(tmp_path: Path) -> None:
    space = write_space(tmp_path, {"search": {"n_trials": 1}})
    assert run.main([str(space), "--results-dir", str(tmp_path / "r"), "--device", "cpu"]) == 0
    record = records(tmp_path / "r" / "space")[0]
    assert same_metrics(reproduce(space, record), record)


def no_running(study: optuna.Study) -> bool:
    """Whether the study has no trial left RUNNING."""
    return not study.get_trials(states=(S.RUNNING,))


def test_storage_failure_mid_trial_interrupts_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    """The database fails once under a running trial: one line, exit 1, the trial `interrupted`, then resumed."""
    space = write_space(tmp_path, {"search": {"n_trials": 1}, "augment": []})
    results = tmp_path / "r" / "space"
    args = [str(space), "--results-dir", str(tmp_path / "r"), "--device", "cpu"]
    report = optuna.trial.Trial.report

    def failing_report(trial: optuna.trial.Trial, value: float, step: int) -> None:
        if step == 2:
            raise sqlalchemy.exc.OperationalError("UPDATE", {}, Exception("server closed the connection"))
        report(trial, value, step)

    monkeypatch.setattr(optuna.trial.Trial, "report", failing_report)
    assert run.main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: study storage failed: "), err
    study = study_at(results)
    assert no_running(study) and study.trials[0].user_attrs[INTERRUPTED] == "study storage failed"
    assert (results / "checkpoints" / "trial_0.pt").is_file()
    monkeypatch.setattr(optuna.trial.Trial, "report", report)
    assert run.main(args) == 0
    assert retry_of(study, 0).user_attrs[RESUMED_FROM] == 3  # epochs 1 and 2 were saved


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full to fill a disk")
def test_full_disk_at_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save meets a full disk: one line, exit 2, the trial `interrupted`, no partial file left behind."""
    space = write_space(tmp_path, {"search": {"n_trials": 1}})
    results = tmp_path / "r" / "space"
    full_disk_at(monkeypatch, "trial_0.pt")
    assert run.main([str(space), "--results-dir", str(tmp_path / "r"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: results folder {results}: cannot write checkpoint "), err
    trial = study_at(results).trials[0]
    assert trial.state == S.FAIL and "cannot write checkpoint" in trial.user_attrs[INTERRUPTED]
    assert not list((results / "checkpoints").iterdir()), "the partial checkpoint is removed"
    assert records(results)[0]["state"] == "interrupted"


def test_a_trial_that_fails_on_its_data_is_not_resumed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A corrupt image: one line naming it, exit 2, the trial FAIL (not `interrupted`); a rerun adds no retries."""
    root = make_imagefolder(tmp_path / "images", classes=3, per_class=6, size=(8, 8))
    bad = corrupt_one(root / "train" / "class_2" / "img_5.png")
    space = write_space(tmp_path, {"data": {"dataset": "imagefolder", "root": str(root), "val_fraction": 0.2,
                                            "num_workers": 0}, "search": {"n_trials": 1}})
    results = tmp_path / "r" / "space"
    args = [str(space), "--results-dir", str(tmp_path / "r"), "--device", "cpu"]
    for _ in range(2):  # the run, then its rerun
        assert run.main(args) == 2
        out, err = capsys.readouterr()
        last = err.strip().splitlines()[-1]  # (a decoding progress bar may come first)
        assert last.startswith(f"error: cannot read image '{bad}'"), err
        assert "resuming interrupted" not in out
    # Found while the images are decoded at start (no trial at all), or by the trial that met it.
    trials = study_at(results).get_trials() if (results / "study.db").exists() else []
    assert len(trials) <= 2 and all(t.state == S.FAIL for t in trials)
    assert not any(INTERRUPTED in t.user_attrs or RETRY_OF in t.user_attrs for t in trials)
    assert all(r["state"] == "failed" for r in records(results).values())
