"""Several workers on one study: PostgreSQL across processes, exact trial counts, bad results input and flags."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Callable, Iterator

import optuna
import pytest

from search import run
from search.config import load_config
from search.space import sample
from search.storage import make_storage
from search.study.study import StudyLock, make_sampler
from search.trials import WORKER, count_finished
from tests.helpers.spaces import write_space
from tests.helpers.studies import PG_URL, check_finished_study, needs_postgres

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def procs() -> Iterator[Callable[..., subprocess.Popen]]:
    """Start `python -m search.run ...` processes; whatever is still running at the end is killed."""
    started: list[subprocess.Popen] = []

    def start(*args: str, cwd: Path) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        p = subprocess.Popen([sys.executable, "-m", "search.run", *args], cwd=cwd, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        started.append(p)
        return p

    yield start
    for p in started:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)  # its own session: the workers it started go too
        p.communicate(timeout=30)


@needs_postgres
def test_two_workers_share_one_postgres_study(tmp_path: Path, procs: Callable[..., subprocess.Popen]) -> None:
    name = f"pg-{uuid.uuid4().hex[:8]}"
    space = write_space(tmp_path, {"search": {"n_trials": 5}})
    both = [procs(str(space), "--storage", PG_URL, "--study-name", name, "--results-dir", str(tmp_path / f"m{i}"),
                  "--device", "cpu", cwd=tmp_path) for i in range(2)]  # as on two machines: two results folders
    for p in both:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
    study = optuna.load_study(study_name=name, storage=PG_URL)
    try:
        finished = check_finished_study(study, 5, tmp_path / "m0" / name, tmp_path / "m1" / name)
        assert len({t.user_attrs[WORKER] for t in finished}) == 2, "both workers ran trials"
        assert {t.user_attrs[WORKER].split(":")[1] for t in finished} == {str(p.pid) for p in both}
    finally:
        optuna.delete_study(study_name=name, storage=PG_URL)


@needs_postgres
def test_study_lock_spans_machines_on_postgres(tmp_path: Path) -> None:
    """Two workers with their own results folders (two machines) exclude each other through the database."""
    name = f"lock-{uuid.uuid4().hex[:8]}"
    optuna.create_study(study_name=name, storage=make_storage(PG_URL))
    try:
        first, second = (StudyLock(optuna.load_study(study_name=name, storage=make_storage(PG_URL)),
                                   tmp_path / f"machine{i}.lock") for i in range(2))
        first.acquire()
        waiter = threading.Thread(target=second.acquire, daemon=True)
        waiter.start()
        waiter.join(timeout=1.0)
        assert waiter.is_alive(), "the second worker got the lock while the first held it"
        first.release()
        waiter.join(timeout=10)
        assert not waiter.is_alive()
        second.release()
    finally:
        optuna.delete_study(study_name=name, storage=PG_URL)


@pytest.mark.parametrize("sampler", ["random", "tpe", "nsga2", "gp"])
def test_workers_with_one_seed_draw_different_trials(sampler: str, tmp_path: Path) -> None:
    """Each worker process builds its sampler from the same YAML seed; their draws must still differ."""
    cfg = load_config(write_space(tmp_path, {"search": {"sampler": sampler}}))
    storage = optuna.storages.InMemoryStorage()
    w0 = optuna.create_study(study_name="s", storage=storage, sampler=make_sampler(cfg), direction="maximize")
    w1 = optuna.load_study(study_name="s", storage=storage, sampler=make_sampler(cfg))

    def draw(study: optuna.Study) -> dict:
        trial = study.ask()
        sample(trial, cfg, 4, 8)
        study.tell(trial, float(trial.number))
        return trial.params

    drawn = [draw(w) for _ in range(3) for w in (w0, w1)]  # two workers taking turns
    drawn.append(draw(optuna.load_study(study_name="s", storage=storage, sampler=make_sampler(cfg))))  # a rerun
    assert all(a != b for i, a in enumerate(drawn) for b in drawn[i + 1:]), drawn
    again = optuna.create_study(sampler=make_sampler(cfg), direction="maximize")
    assert draw(again) == drawn[0], "a one-worker search is reproducible from its seed"


def test_second_space_under_the_same_study_name_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    first = write_space(tmp_path, name="a.yaml")
    other = write_space(tmp_path, {"budget": {"params": 5000}}, name="b.yaml")
    common = ["--study-name", "shared", "--results-dir", str(tmp_path / "r"), "--n-trials", "1"]
    assert run.main([str(first), *common]) == 0
    results = tmp_path / "r" / "shared"
    before = (results / "config.yaml").read_text(), (results / "study.db").stat().st_size
    capsys.readouterr()
    assert run.main([str(other), *common, "--n-trials", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "made from a different space" in err[0] and "a.yaml" in err[0], err
    study = optuna.load_study(study_name="shared", storage=f"sqlite:///{results / 'study.db'}")
    assert len(study.get_trials()) == 1 and count_finished(study.get_trials()) == 1
    assert (results / "config.yaml").read_text() == before[0], "the refused YAML is not saved over the study's"


def test_unwritable_results_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    space = write_space(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert run.main([str(space), "--results-dir", str(blocker / "results")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: results folder") and "cannot write" in err[0], err
    if os.geteuid() == 0:
        return  # root writes through permission bits; the file in the way above is the read-only case for root
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert run.main([str(space), "--results-dir", str(locked)]) == 2
    assert "Permission denied" in capsys.readouterr().err


@pytest.mark.parametrize("flags, expected", [(["--workers", "0"], "--workers 0"),
                                             (["--heartbeat", "5", "--grace", "5"], "heartbeat < grace")])
def test_bad_worker_flags(flags: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run.main([str(write_space(tmp_path)), "--results-dir", str(tmp_path / "r"), *flags]) == 2
    assert expected in capsys.readouterr().err
