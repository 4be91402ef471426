"""The check step (search.checks): what needs the dataset runs there, once, for the commands that train; loading a
config never opens the dataset, so a results folder can be reviewed where the images are not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from search import checks, commands, run
from search.config import DataConfig, load_config
from search.data import datasets
from search.errors import UserError
from tests.helpers.datasets import make_imagefolder
from tests.helpers.processes import child_env
from tests.helpers.spaces import ROOT
from tests.helpers.studies import copy_results

SPACE = {  # an image-folder search of seconds: a baseline and one trial, one epoch each on 12 images of 16 px
    "data": {"dataset": "imagefolder", "num_workers": 0, "val_fraction": 0.25},
    "budget": {"params": 6000},
    "space": {"stages": 1, "blocks": 1, "width": "solve"},
    "train": {"epochs": 1, "batch_size": 8, "lr": {"float": [0.05, 0.2], "log": True}, "schedule": "constant"},
    "augment": [{"HorizontalFlip": {"p": 0.5}}],
    "baselines": [{"name": "hand", "stages": 1, "blocks": [1]}],
    "search": {"n_trials": 1, "sampler": "random", "pruner": "none", "seed": 1},
}


def write_space(folder: Path, root: Path) -> Path:
    """SPACE on the image folder `root`, as a YAML file."""
    path = folder / "images.yaml"
    path.write_text(yaml.safe_dump({**SPACE, "data": {**SPACE["data"], "root": str(root)}}))
    return path


@pytest.fixture(scope="module")
def moved_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(results folder, where its images are now): a finished image-folder search whose images were then moved."""
    tmp = tmp_path_factory.mktemp("moved")
    images = make_imagefolder(tmp / "images", classes=2, per_class=6, size=(16, 16))
    assert run.main([str(write_space(tmp, images)), "--results-dir", str(tmp / "results"), "--device", "cpu"]) == 0
    moved = images.rename(tmp / "moved")
    return tmp / "results" / "images", moved


def test_report_of_a_copied_folder_needs_no_dataset(moved_study: tuple[Path, Path], tmp_path: Path) -> None:
    """`python -m search report COPY` where the images are not (a laptop after a search on a server)."""
    copy = copy_results(moved_study[0], tmp_path / "copy")
    env = child_env(ROOT)
    proc = subprocess.run([sys.executable, "-m", "search", "report", str(copy)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (copy / "report.html").is_file() and "wrote" in proc.stdout


def test_report_takes_data_root(moved_study: tuple[Path, Path], tmp_path: Path) -> None:
    copy = copy_results(moved_study[0], tmp_path / "copy")
    assert commands.report_main([str(copy), "--data-root", str(moved_study[1]), "--output", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").is_file()


def test_retrain_finds_moved_images_with_data_root(moved_study: tuple[Path, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    """Without --data-root: one line naming the missing folder, nothing written; with it: the retrain runs."""
    copy = copy_results(moved_study[0], tmp_path / "copy")
    assert commands.retrain_main([str(copy), "--epochs", "1", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "imagefolder: no class folders in" in err[0] and "images/train" in err[0], err
    assert not (copy / "retrain").exists()
    assert commands.retrain_main([str(copy), "--epochs", "1", "--device", "cpu", "--data-root", str(moved_study[1])]) == 0
    assert list((copy / "retrain").glob("*/metrics.json"))


def test_loading_a_config_opens_no_dataset(tmp_path: Path) -> None:
    """The dataset is the check step's: a config on a missing image folder loads, and the check refuses it."""
    cfg = load_config(write_space(tmp_path, tmp_path / "nowhere"))
    assert cfg.data.root == str(tmp_path / "nowhere") and cfg.baselines[0].name == "hand"
    with pytest.raises(UserError, match=r"^imagefolder: no class folders in '.*nowhere/train'"):
        checks.check_for_training(cfg, images="none")


@pytest.mark.parametrize("images", ["load", "count", "none"])
def test_the_check_step_reads_the_dataset_once(images: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """dataset_info (for an image folder: a scan of the folder and an image opened) runs once per check step,
    with rules, budget, baselines and the loaders all checked."""
    cfg = load_config(write_space(tmp_path, make_imagefolder(tmp_path / "images", classes=2, per_class=6,
                                                             size=(16, 16))))
    calls = []
    real = datasets.dataset_info

    def counted(data: DataConfig) -> datasets.DatasetInfo:
        calls.append(data)
        return real(data)

    monkeypatch.setattr(checks, "dataset_info", counted)
    monkeypatch.setattr(datasets, "dataset_info", counted)
    found = checks.check_for_training(cfg, images=images)
    assert len(calls) == 1 and (found.info.num_classes, found.info.image_size) == (2, 16)
    assert (found.n_train, found.n_val) == ((None, None) if images == "none" else (9, 3))
