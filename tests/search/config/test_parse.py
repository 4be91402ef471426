"""Bad values are refused before any folder or study exists: one line, exit status 2 (when the config is loaded,
or by the check step for what needs the dataset)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from search import run
from search.config import load_config
from search.distributions import from_trial
from search.errors import UserError
from search.space import resolve
from search.study.samplers import make_sampler
from search.study.study import open_study
from search.yaml_load import MAX_NODES
from tests.helpers.processes import child_env
from tests.helpers.spaces import ROOT, write_space

REFUSED = {  # name: (command-line arguments after the YAML, what the one `error:` line must say)
    "negative momentum": (["--set", "train.momentum=-0.5"], "train.momentum -0.5: expected in [0, 1)"),
    "label smoothing over 1": (["--set", "train.label_smoothing=2.0"], "train.label_smoothing 2.0: expected in [0, 1)"),
    "retrain precision not a choice": (["--set", "retrain.amp=maybe"], "retrain.amp 'maybe': expected auto, true or false"),
    "momentum range past 1": (["--set", "train.momentum={float: [0.5, 1.5]}"], "train.momentum 1.5"),
    "negative weight decay": (["--set", "train.weight_decay=-0.1"], "train.weight_decay -0.1: expected >= 0"),
    "warm-up as long as the run": (["--set", "train.warmup_epochs=3"], "train.warmup_epochs 3: expected in [0, epochs)"),
    "string step": (["--set", "train.lr={float: [0.05, 0.2], step: x}"], "train.lr.step: expected a positive float"),
    "negative step": (["--set", "space.stages={int: [1, 2], step: -1}"], "space.stages.step: expected a positive int"),
    "step with log": (["--set", "train.lr={float: [0.05, 0.2], step: 0.01, log: true}"],
                      "step and log cannot be combined"),
    "seed past numpy's range": (["--set", "search.seed=4294967296"],
                                "search.seed: expected an integer in [0, 4294967295]"),
    "malformed --set value": (["--set", "train.epochs=[1,"], "--set 'train.epochs=[1,': the value is not valid YAML"),
    "stages as a list": (["--set", "space.stages=[1, 3]"], "space.stages: expected an integer >= 1"),
    "fill above 1": (["--set", "space.fill=1.5"], "space.fill: expected a fraction of the budget in (0, 1]"),
    "no validation images": (["--set", "data.val_fraction=0.0"], "data.val_fraction 0.0 of 160 training images "
                                                                 "leaves no validation images"),
    "10% of 4 images rounds to 0": (["--set", "data.synthetic_train=4"], "leaves no validation images"),
    "crop larger than the image": (["--set", "augment=[{RandomCrop: {height: 32, width: 32}}]"],
                                   "fails on a 8x8 image"),
    "unknown policy": (["--set", "train.augment_policy=strong"], "train.augment_policy: unknown policy 'strong'"),
    "fill under which nothing fits": (["--set", "space.fill={float: [0.01, 0.02]}"], "space.fill: at most 0.02 x budget"),
    "progressive never at input size": (["--set", "train.progressive=[[0, 4], [2, 6]]"],
                                        "ends at 6px, not the dataset's image size 8px"),
    "study name outside --results-dir": (["--set", "search.study_name=../../x"],
                                         "search.study_name '../../x': expected a plain name"),
    "NaN latency budget": (["--set", "budget.latency_ms=.nan"], "budget.latency_ms: expected a finite number, got nan"),
    "infinite latency budget": (["--set", "budget.latency_ms=.inf"], "budget.latency_ms: expected a finite number"),
    "NaN end of a range": (["--set", "train.lr={float: [0.05, .nan]}"], "train.lr.float: expected [low, high] finite"),
    "NaN fixed value": (["--set", "train.momentum=.nan"], "train.momentum: expected a finite number, got nan"),
    "infinite step": (["--set", "train.lr={float: [0.02, 0.2], step: .inf}"], "train.lr.step: expected a positive"),
    "step collapsing a float range": (["--set", "train.lr={float: [0.02, 0.2], step: 0.5}"],
                                      "train.lr.step: 0.5 is larger than the range [0.02, 0.2]"),
    "step collapsing an int range": (["--set", "space.stages={int: [1, 2], step: 3}"],
                                     "space.stages.step: 3 is larger than the range [1, 2]"),
    "budget null": (["--set", "budget=null"], "budget.params is required"),
    "budget empty": (["--set", "budget={}"], "budget.params is required"),
    "huge image size": (["--set", "data.image_size=100000"], "data.image_size: 100000 must be in [8, 1024] pixels"),
    "huge synthetic size": (["--set", "data.synthetic_size=100000"], "data.synthetic_size: 100000 must be in [8, 1024]"),
    "synthetic images past memory": (["--set", "data.synthetic_train=100000000"], "must fit in 512 MiB per split"),
    "huge latency batch": (["--set", "budget.latency_batch=100000000"], "budget.latency_batch 100000000: expected at "
                                                                        "most 1024"),
    "heartbeat past the thread's wait": (["--heartbeat", "10000000000", "--grace", "20000000000"],
                                         "heartbeat at most 3600 and grace at most 86400"),
    "study name too long": (["--study-name", "n" * 100_000], "expected a plain name of at most 200 printable"),
    "study name with a tab": (["--study-name", "a\tb"], "search.study_name 'a\\tb': expected a plain name"),
    "alias bomb in a --set value": (["--set", "storage=[&a [x, x, x, x, x, x, x, x, x, x], " + ", ".join(
        f"&{c} [{', '.join([f'*{p}'] * 10)}]" for p, c in zip("abcde", "bcdef", strict=True)) + "]"],
        f"expands to more than {MAX_NODES:,} values"),
    "even kernel in a choice": (["--set", "space.kernel={choice: [3, 4]}"],  # the error names its key: kernel's
                                "space.kernel: value 4 is invalid: invalid architecture key 'kernel' = 4"),
    "epochs choice under the warm-up": (["--set", "train.epochs={choice: [3, 1]}", "--set", "train.warmup_epochs=2"],
                                        "space.yaml: train.epochs: train.warmup_epochs 2: expected in [0, epochs)"),
    "objectives as a string": (["--set", "search.objectives=val_acc"],  # typed by the field's type, not its text
                               "search.objectives: expected tuple[str, ...], got 'val_acc'"),
    "a fraction where an int is expected": (["--set", "budget.params=1.5e0"], "budget.params: expected int, got 1.5"),
    "a whole float past 2**53": (["--set", "search.n_trials=1e300"], "search.n_trials: expected int, got 1e+300"),
    "unknown key": (["--set", "search.n_trails=3"], "search.n_trails: unknown key"),
    "wrong type": (["--set", "train.epochs=many"], "train.epochs"),
    "unknown transform": (["--set", "augment=[{HorizontalFlipp: {p: 0.5}}]"], "HorizontalFlipp"),
    "impossible budget": (["--set", "budget.params=100"], "below the smallest network"),
    "missing dataset": (["--set", "data={dataset: cifar10, root: nowhere, download: false}"], "cifar10 not found"),
}
AS_A_USER = ("unknown key", "wrong type", "unknown transform", "impossible budget", "missing dataset")  # also run
# as `python -m search.run` in a process of its own: what reaches the terminal, not only what main() returns


@pytest.mark.parametrize(("case", "how"), [(c, "main") for c in sorted(REFUSED)] + [(c, "process") for c in AS_A_USER])
def test_bad_input_is_one_line_before_any_study(case: str, how: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    args, expected = REFUSED[case]
    argv = [str(write_space(tmp_path)), *args, "--results-dir", str(tmp_path / "r")]
    if how == "process":
        proc = subprocess.run([sys.executable, "-m", "search.run", *argv], cwd=tmp_path, capture_output=True,
                              text=True, env=child_env(ROOT), timeout=300)
        status, err = proc.returncode, proc.stderr
    else:
        status, err = run.main(argv), capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err[:2000]
    assert len(lines[0]) < 600, "echoed values are cut"
    assert not (tmp_path / "r").exists() and not (tmp_path / "x").exists(), "no folder or study from bad input"


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


def test_whole_numbers_in_e_notation_are_ints_where_ints_are_expected(tmp_path: Path) -> None:
    """`budget.params: 5e6` (YAML) and `--set search.n_trials=1e5` are 5,000,000 and 100,000 (were refused:
    'expected int, got 5000000.0'); `1.28e2` is a number too (was the string '1.28e2'); keys that take floats
    keep floats."""
    space = write_space(tmp_path, {"budget": {"params": 5e6}})
    assert "params: 5000000.0" in space.read_text()  # as a user writes it: a float in the file
    cfg = load_config(space, ["search.n_trials=1e5", "train.batch_size=1.28e2", "train.epochs={int: [1e0, 3e0]}",
                              "space.blocks=[1e0, 2e0]", "train.lr=1e0"])
    assert (cfg.budget.params, cfg.search.n_trials, cfg.train["batch_size"]) == (5_000_000, 100_000, 128)
    assert (cfg.train["epochs"].low, cfg.train["epochs"].high, cfg.space["blocks"]) == (1, 3, [1, 2])
    assert all(type(v) is int for v in (cfg.budget.params, cfg.search.n_trials, cfg.train["batch_size"]))
    assert type(cfg.train["lr"]) is float and cfg.train["lr"] == 1.0


def test_largest_seed_samples_every_trial(tmp_path: Path) -> None:
    """search.seed = 2**32 - 1: trial 1's sampler seed wraps instead of overflowing (it was left RUNNING)."""
    cfg = load_config(write_space(tmp_path, {"search": {"seed": 2**32 - 1}}))
    study = optuna.create_study(sampler=make_sampler(cfg), direction="maximize")
    for _ in range(2):
        trial = study.ask()
        resolve(cfg, from_trial(trial), 4, 8)
        study.tell(trial, 0.5)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2


def test_fingerprint_covers_the_data_not_the_run_length(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    open_study(load_config(write_space(tmp_path)), url)
    same = write_space(tmp_path, {"search": {"n_trials": 9, "timeout": 60.0, "seed": 3},
                                  "data": {"num_workers": 2, "root": "elsewhere"}}, name="longer.yaml")
    open_study(load_config(same, ["search.study_name=space"]), url)  # accepted: the trials mean the same
    other = write_space(tmp_path, {"data": {"synthetic_classes": 5}}, name="other.yaml")
    with pytest.raises(UserError, match=r"made from a different space \(data differs; from .*space.yaml\)"):
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
    env = child_env(ROOT)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 130 and proc.stderr == "interrupted: rerun the same command to resume\n", proc.stderr
