"""Several workers on one study: PostgreSQL across processes, exact trial counts, bad results input and flags."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest

from search import run
from search.trials import WORKER
from tests.helpers.processes import child_env
from tests.helpers.spaces import ROOT, write_space
from tests.helpers.studies import PG_URL, check_finished_study, needs_postgres


@pytest.fixture
def procs() -> Iterator[Callable[..., subprocess.Popen]]:
    """Start `python -m search.run ...` processes; whatever is still running at the end is killed."""
    started: list[subprocess.Popen] = []

    def start(*args: str, cwd: Path) -> subprocess.Popen:
        env = child_env(ROOT, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
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
    folders = tmp_path / "m0" / name, tmp_path / "m1" / name
    try:
        finished = check_finished_study(study, 5, *folders)
        # how the 5 split between the two is the scheduler's call (one may start after the other has finished
        # them all, as happened under load), so only who may have run them is asserted here
        assert {t.user_attrs[WORKER].split(":")[1] for t in finished} <= {str(p.pid) for p in both}
        # a worker that joins the shared study later, with a higher target, runs the trials left: that part
        # does not depend on timing
        late = procs(str(space), "--storage", PG_URL, "--study-name", name, "--results-dir", str(tmp_path / "m1"),
                     "--device", "cpu", "--n-trials", "7", cwd=tmp_path)
        out, err = late.communicate(timeout=180)
        assert late.returncode == 0, err
        finished = check_finished_study(study, 7, *folders)
        assert str(late.pid) in {t.user_attrs[WORKER].split(":")[1] for t in finished}, "the late worker ran trials"
    finally:
        optuna.delete_study(study_name=name, storage=PG_URL)


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
