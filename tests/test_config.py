"""Bad values are caught when the config is loaded, before any study exists: one line, exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from search import run
from search.config import load_config
from search.space import sample
from search.study.study import make_sampler, open_study
from tests.helpers.spaces import ROOT, write_space

BAD = {  # name: (--set values, what the one line must say)
    "negative momentum": (["train.momentum=-0.5"], "train.momentum -0.5: expected in [0, 1)"),
    "label smoothing over 1": (["train.label_smoothing=2.0"], "train.label_smoothing 2.0: expected in [0, 1)"),
    "momentum range past 1": (["train.momentum={float: [0.5, 1.5]}"], "train.momentum 1.5"),
    "negative weight decay": (["train.weight_decay=-0.1"], "train.weight_decay -0.1: expected >= 0"),
    "warm-up as long as the run": (["train.warmup_epochs=3"], "train.warmup_epochs 3: expected in [0, epochs)"),
    "string step": (["train.lr={float: [0.05, 0.2], step: x}"], "train.lr.step: expected a positive float"),
    "negative step": (["space.stages={int: [1, 2], step: -1}"], "space.stages.step: expected a positive int"),
    "step with log": (["train.lr={float: [0.05, 0.2], step: 0.01, log: true}"], "step and log cannot be combined"),
    "seed past numpy's range": (["search.seed=4294967296"], "search.seed: expected an integer in [0, 4294967295]"),
    "malformed --set value": (["train.epochs=[1,"], "--set 'train.epochs=[1,': the value is not valid YAML"),
    "stages as a list": (["space.stages=[1, 3]"], "space.stages: expected an integer >= 1"),
    "fill above 1": (["space.fill=1.5"], "space.fill: expected a fraction of the budget in (0, 1]"),
    "no validation images": (["data.val_fraction=0.0"], "data.val_fraction 0.0 of 160 training images leaves no "
                                                        "validation images"),
    "10% of 4 images rounds to 0": (["data.synthetic_train=4"], "leaves no validation images"),
    "crop larger than the image": (["augment=[{RandomCrop: {height: 32, width: 32}}]"], "fails on a 8x8 image"),
    "unknown policy": (["train.augment_policy=strong"], "train.augment_policy: unknown policy 'strong'"),
    "fill under which nothing fits": (["space.fill={float: [0.01, 0.02]}"], "space.fill: at most 0.02 x budget"),
    "progressive never at input size": (["train.progressive=[[0, 4], [2, 6]]"], "ends at 6px, not the dataset's "
                                                                                "image size 8px"),
    "study name outside --results-dir": (["search.study_name=../../x"], "search.study_name '../../x': expected a "
                                                                        "plain name"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_value_is_one_line_before_any_study(case: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sets, expected = BAD[case]
    space = write_space(tmp_path)
    args = [str(space), "--results-dir", str(tmp_path / "r")] + [a for s in sets for a in ("--set", s)]
    assert run.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert not list(tmp_path.rglob("study.db")), "no study is created from bad input"
    assert not (tmp_path / "x").exists()


def test_binary_file_as_the_yaml(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    binary = tmp_path / "space.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    assert run.main([str(binary), "--results-dir", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == f"error: {binary}: not a YAML text file (UnicodeDecodeError)\n"


def test_names_and_urls_from_flags_are_taken_as_typed(tmp_path: Path) -> None:
    """`--study-name 2024` is a name, not the number 2024 (which failed the type check)."""
    args = run.parse_args([str(write_space(tmp_path)), "--study-name", "2024", "--storage", "sqlite:///:memory:",
                           "--data-root", "1e3"])
    cfg = run.config_from_args(args)
    assert cfg.study_name == "2024" and cfg.storage == "sqlite:///:memory:" and cfg.data.root == "1e3"


def test_largest_seed_samples_every_trial(tmp_path: Path) -> None:
    """search.seed = 2**32 - 1: trial 1's sampler seed wraps instead of overflowing (it was left RUNNING)."""
    cfg = load_config(write_space(tmp_path, {"search": {"seed": 2**32 - 1}}))
    study = optuna.create_study(sampler=make_sampler(cfg), direction="maximize")
    for _ in range(2):
        trial = study.ask()
        sample(trial, cfg, 4, 8)
        study.tell(trial, 0.5)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2


def test_fingerprint_covers_the_data_not_the_run_length(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    open_study(load_config(write_space(tmp_path)), url)
    same = write_space(tmp_path, {"search": {"n_trials": 9, "timeout": 60.0, "seed": 3},
                                  "data": {"num_workers": 2, "root": "elsewhere"}}, name="longer.yaml")
    open_study(load_config(same, ["search.study_name=space"]), url)  # accepted: the trials mean the same
    other = write_space(tmp_path, {"data": {"synthetic_classes": 5}}, name="other.yaml")
    with pytest.raises(run.UserError, match=r"made from a different space \(data differs; from .*space.yaml\)"):
        open_study(load_config(other, ["search.study_name=space"]), url)


def test_ctrl_c_while_importing_is_one_line(tmp_path: Path) -> None:
    """SIGINT raised exactly when search.run imports optuna (after its first lines ran)."""
    code = ("import builtins, os, runpy, signal, sys\n"
            "real = builtins.__import__\n"
            "def imp(name, *a, **k):\n"
            "    if name == 'optuna':\n"
            "        builtins.__import__ = real\n"
            "        os.kill(os.getpid(), signal.SIGINT)\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = imp\n"
            f"sys.argv = ['search.run', {str(write_space(tmp_path))!r}]\n"
            "runpy.run_module('search.run', run_name='__main__', alter_sys=True)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 130 and proc.stderr == "interrupted: rerun the same command to resume\n", proc.stderr
