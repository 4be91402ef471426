"""Faults in the middle of a run (issue 29): a closed stdout, a diverging retrain, a disk that fills."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

from search import commands
from search.trials import INTERRUPTED
from tests.helpers.hostile import full_disk_at
from tests.helpers.processes import child_env
from tests.helpers.spaces import ROOT, write_space
from tests.helpers.studies import WAIT_S, assert_one_line_error, quickest, records, study_at

S = optuna.trial.TrialState
INTERRUPTED_LINE = "interrupted: rerun the same command to resume"


def close_stdout_after(args: list[str], marker: str, cwd: Path) -> tuple[int, str]:
    """Run `python -m search ARGS`, read its stdout until a line holds `marker`, close it (as `| head` does on
    leaving) and wait: its exit status and stderr. Its next line meets the closed pipe, whenever it comes."""
    env = child_env(ROOT, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "search", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        for line in proc.stdout:
            if marker in line:
                break
        else:
            raise AssertionError(f"{marker!r} never printed: {proc.stderr.read()}")
        proc.stdout.close()
        err = proc.stderr.read()  # ends when the process does
        return proc.wait(timeout=WAIT_S), err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_closed_stdout_interrupts_a_search_that_resumes(tmp_path: Path) -> None:
    """`search.run ... | head`: the trial stops as for Ctrl-C (interrupted, checkpoint kept), exit 130, one line."""
    space = write_space(tmp_path, {"train": {"epochs": 30}, "search": {"n_trials": 1}, "augment": []})
    results = tmp_path / "r" / "space"
    rc, err = close_stdout_after(["run", str(space), "--results-dir", str(tmp_path / "r"), "--device", "cpu"],
                                 "epoch 1/30", tmp_path)
    assert rc == 130 and err.strip().splitlines()[-1] == INTERRUPTED_LINE, err
    assert "Traceback" not in err and "BrokenPipeError" not in err
    (trial,) = study_at(results).get_trials()
    assert trial.state == S.FAIL and trial.user_attrs[INTERRUPTED] == "SIGPIPE"
    assert records(results)[0]["state"] == "interrupted"
    assert (results / "checkpoints" / "trial_0.pt").is_file()


def test_a_closed_stdout_interrupts_a_retrain_that_resumes(smoke_copy: Path, tmp_path: Path) -> None:
    """`search retrain ... | head`: stops within a batch, keeps the last epoch's train_state.pt, exit 130."""
    n = quickest(smoke_copy)
    run_dir = smoke_copy / "retrain" / f"{n:05d}" / "seed_0"
    rc, err = close_stdout_after(["retrain", str(smoke_copy), "--trial", str(n), "--epochs", "30", "--device", "cpu"],
                                 "epoch 1/30", tmp_path)
    assert rc == 130 and err.strip().splitlines()[-1] == INTERRUPTED_LINE, err
    assert "Traceback" not in err and "BrokenPipeError" not in err
    state = torch.load(run_dir / "train_state.pt", weights_only=True)
    assert 1 <= len(state["history"]) < 30 and not (run_dir / "model.pt").exists()


def retrain_main(capsys: pytest.CaptureFixture, *args: str) -> subprocess.CompletedProcess[str]:
    """`search retrain ARGS` in-process: its exit status and output."""
    code = commands.retrain_main([*args, "--device", "cpu"])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["retrain", *args], code, out, err)


def test_a_retrain_that_diverges_is_one_line(smoke_copy: Path, capsys: pytest.CaptureFixture) -> None:
    """A learning rate that makes the loss NaN: which trial, seed and epoch, and what to lower; exit 2."""
    n = quickest(smoke_copy)
    proc = retrain_main(capsys, str(smoke_copy), "--trial", str(n), "--epochs", "2", "--set", "retrain.lr=1e30")
    assert_one_line_error(proc, f"[trial {n} seed 0] training loss became nan at epoch ", "retrain.lr", "--fresh",
                          quiet=False)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full to fill a disk")
def test_a_disk_that_fills_during_a_retrain_is_one_line(smoke_copy: Path, capsys: pytest.CaptureFixture,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """train_state.pt meets a full disk: the file and the reason in one line, exit 2, no partial file left."""
    n = quickest(smoke_copy)
    run_dir = smoke_copy / "retrain" / f"{n:05d}" / "seed_0"
    full_disk_at(monkeypatch, "train_state.pt")
    proc = retrain_main(capsys, str(smoke_copy), "--trial", str(n), "--epochs", "2")
    assert_one_line_error(proc, f"cannot write checkpoint {run_dir / 'train_state.pt'}", "No space left on device",
                          "rerun the same command to resume", quiet=False)
    assert sorted(p.name for p in run_dir.iterdir()) == ["run.json"], "no partial checkpoint"
