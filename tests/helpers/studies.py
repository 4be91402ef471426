"""Running a search as a user would, and reading what it leaves: its study, trial records and retries."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
import torch

from blocks import ArchSpec
from search.config import load_config
from search.review.results import StudyResults, open_results
from search.trials import REJECTED, RETRY_OF, count_finished
from tests.helpers.errors import error_line
from tests.helpers.processes import child_env
from tests.helpers.spaces import ROOT, write_space

S = optuna.trial.TrialState
PG_URL = os.environ.get("TEST_POSTGRES_URL")
needs_postgres = pytest.mark.skipif(not PG_URL, reason="TEST_POSTGRES_URL is not set (.ci/run starts a PostgreSQL "
                                                       "server on loopback and sets it)")
WAIT_S = 900  # a bound on waiting for a worker under any load, never a margin a test races against


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run `python -m search.run ...` as a user would."""
    env = child_env(ROOT)
    return subprocess.run([sys.executable, "-m", "search.run", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str, quiet: bool = True) -> None:
    """Exit status 2, one `error: ...` line on stderr naming every needle, no traceback; with `quiet`, nothing on
    stdout (a command that trains has printed its progress there before it failed)."""
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" or not quiet
    error_line(proc.stderr, *needles)


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> object:
    """Poll `predicate` until it returns something truthy."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def records(*results: Path) -> dict[int, dict]:
    """trials/<n>.json of one or more results folders, by trial number (a number in two folders fails)."""
    out: dict[int, dict] = {}
    for folder in results:
        for path in sorted(folder.glob("trials/*.json")):
            record = json.loads(path.read_text())
            assert record["number"] not in out, f"trial {record['number']} recorded twice"
            out[record["number"]] = record
    return out


def check_finished_study(study: optuna.Study, target: int, *results: Path,
                         epochs: int = 3) -> list[optuna.trial.FrozenTrial]:
    """Exactly `target` finished trials, none left running or waiting, each with its record; returns them."""
    trials = study.get_trials()
    assert count_finished(trials) == target
    assert not [t for t in trials if t.state in (S.RUNNING, S.WAITING)]
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    finished = [t for t in trials if t.state in (S.COMPLETE, S.PRUNED) and REJECTED not in t.user_attrs]
    found = records(*results)
    for t in finished:
        assert found[t.number]["state"] == "complete" and found[t.number]["seed"] == t.user_attrs["seed"]
        assert len(found[t.number]["epochs"]) == epochs
    return finished


def study_at(results: Path) -> optuna.Study:
    """The study of a results folder (default SQLite storage)."""
    return optuna.load_study(study_name="space", storage=f"sqlite:///{results / 'study.db'}")


def retry_of(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    """The finished trial that retried trial `number`, checked to be linked to it and to continue it."""
    original = study.trials[number]
    retries = [t for t in study.get_trials() if t.user_attrs.get(RETRY_OF) == number and t.state == S.COMPLETE]
    assert len(retries) == 1, f"trial {number} retried {len(retries)} times"
    retry = retries[0]
    assert retry.system_attrs["failed_trial"] == number  # Optuna's own link, as RetryFailedTrialCallback makes it
    assert retry.params == original.params and retry.user_attrs["seed"] == original.user_attrs["seed"]
    return retry


def best(results: Path, k: int) -> list[int]:
    """The k best complete trials of a study."""
    return [t.number for t in open_results(results).complete()[:k]]


def quickest(results: Path) -> int:
    """The complete trial whose search epochs took the least time (to keep multi-epoch tests short)."""
    done = open_results(results).complete()
    return min(done, key=lambda t: sum(t.user_attrs["epoch_times_s"])).number


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@contextmanager
def sqlite_file(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection to an SQLite file; on leaving, committed, its write-ahead log folded into the file, and closed.

    sqlite3's own `with` only commits. A study in WAL mode keeps a commit in study.db-wal until the last
    connection closes (another may be open: a study that a helper read), which writes it into study.db at a
    moment no test chose: a test comparing the file's bytes then sees its own edit land late."""
    db = sqlite3.connect(path)
    try:
        with db:
            yield db
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # a no-op in rollback mode
    finally:
        db.close()


def copy_results(folder: Path, dst: Path) -> Path:
    """A copy of a results folder at `dst` (config, study.db through SQLite's backup API, trial JSONs; no
    retrain output). The backup API, because the study may still be open in this process, with pages in its WAL."""
    dst.mkdir()
    shutil.copy2(folder / "config.yaml", dst / "config.yaml")
    with sqlite_file(folder / "study.db") as src, sqlite_file(dst / "study.db") as out:
        src.backup(out)
    shutil.copytree(folder / "trials", dst / "trials")
    return dst


def small_study(tmp_path: Path, values: list[float]) -> StudyResults:
    """A study with one complete trial per value (no training), next to the smoke space's config."""
    study = optuna.create_study(direction="maximize", storage=f"sqlite:///{tmp_path / 'study.db'}",
                                study_name="tiny")
    for i, v in enumerate(values):
        study.add_trial(optuna.trial.create_trial(
            params={"lr": 0.1}, distributions={"lr": optuna.distributions.FloatDistribution(0.01, 1)}, value=v,
            user_attrs={"params": 1000 * (i + 1), "flops": 5000, "val_acc_curve": [v / 2, v],
                        "arch": {"stages": 1, "blocks": [1], "width": 8}}))
    cfg = load_config(ROOT / "spaces" / "smoke.yaml")
    return StudyResults(tmp_path, cfg, study, f"sqlite:///{tmp_path / 'study.db'}")


def search_watching_builds(tmp_path: Path, space: dict, monkeypatch: pytest.MonkeyPatch,
                           seen: Callable[[ArchSpec, torch.nn.Module], object]) -> tuple[optuna.Study, list]:
    """Run the search of `space` on the CPU with the objective's build watched: the study, and `seen` of every
    design it built (rejections happen before building, so a rejected design is never seen)."""
    import search.objective
    from search import run

    built, real_build = [], search.objective.build

    def watched(spec: ArchSpec) -> torch.nn.Module:
        model = real_build(spec)
        built.append(seen(spec, model))
        return model

    monkeypatch.setattr(search.objective, "build", watched)
    path = write_space(tmp_path, base=space)
    assert run.main([str(path), "--results-dir", str(tmp_path / "r"), "--device", "cpu"]) == 0
    return study_at(tmp_path / "r" / "space"), built
