"""A study's identity: its data (classes, their names, the image size) and its baselines, checked before anything
is written; a results folder that belongs to another study, or a second space under one study name, is refused."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import optuna
import pytest
import yaml

from search import SPACES_DIR, commands, run
from search.config import load_config
from search.errors import UserError
from search.study.identity import DATA_ATTR, data_difference, fingerprint, fingerprint_sections
from search.study.study import open_study
from search.trials import count_finished
from tests.helpers.datasets import make_imagefolder
from tests.helpers.errors import one_error
from tests.helpers.spaces import SMOKE_OVERRIDES, write_space

FOLDER_SPACE = {  # one quick trial on 2 classes of 8 px images
    "data": {"dataset": "imagefolder", "root": "data", "val_fraction": 0.5, "num_workers": 0},
    "budget": {"params": 5_000},
    "space": {"stages": 1, "blocks": 1, "width": "solve"},
    "train": {"epochs": 1, "batch_size": 4},
    "search": {"n_trials": 1, "sampler": "random", "pruner": "none"},
}


def snapshot(results: Path) -> dict[str, bytes]:
    """Every file of a results folder but the database (and its lock files), with its bytes."""
    return {str(p.relative_to(results)): p.read_bytes() for p in sorted(results.rglob("*"))
            if p.is_file() and not p.name.startswith("study.db")}


def trial_count(results: Path, name: str) -> int:
    """How many trials the folder's study holds."""
    return len(optuna.load_study(study_name=name, storage=f"sqlite:///{results / 'study.db'}").trials)


def test_resume_on_other_classes_is_refused_a_moved_dataset_is_not(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """`search.run S.yaml --data-root OTHER` onto 3 classes where the study saw 2: one line, nothing written."""
    make_imagefolder(tmp_path / "data", classes=2, per_class=4, size=(8, 8))
    space = write_space(tmp_path, base=FOLDER_SPACE)
    args = [str(space), "--results-dir", str(tmp_path / "results"), "--device", "cpu"]
    assert run.main([*args, "--data-root", str(tmp_path / "data")]) == 0
    results = tmp_path / "results" / "space"
    before, trials = snapshot(results), trial_count(results, "space")
    make_imagefolder(tmp_path / "three", classes=3, per_class=4, size=(8, 8))
    capsys.readouterr()
    assert run.main([*args, "--data-root", str(tmp_path / "three"), "--n-trials", "2"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after the decoding bar of the new folder's images
    assert "was searched on other data: 3 classes instead of 2 (new: 'class_2')" in err, err
    assert snapshot(results) == before and trial_count(results, "space") == trials
    shutil.move(tmp_path / "data", tmp_path / "moved")  # the same images elsewhere: the same study
    assert run.main([*args, "--data-root", str(tmp_path / "moved")]) == 0
    attrs = optuna.load_study(study_name="space", storage=f"sqlite:///{results / 'study.db'}").user_attrs
    assert attrs[DATA_ATTR] == {"dataset": "imagefolder", "num_classes": 2, "class_names": ["class_0", "class_1"],
                                "image_size": 8}


@pytest.mark.parametrize("recorded, now, message", [
    ({"num_classes": 2, "image_size": 8}, {"num_classes": 2, "image_size": 16}, "16 px images instead of 8 px"),
    ({"class_names": ["a", "b"]}, {"class_names": ["a", "c"]}, "other classes (new: 'c'; missing: 'b')"),
    ({"class_names": ["a", "b"]}, {"class_names": ["b", "a"]}, "the same classes in another order (other labels)"),
    ({"dataset": "imagefolder", "num_classes": 4, "class_names": list("abcd")},
     {"dataset": "cifar10", "num_classes": 2, "class_names": list("ab")},
     "dataset cifar10 instead of imagefolder, 2 classes instead of 4 (missing: 'c', 'd')"),
    ({"class_names": []}, {"class_names": ["n01443537"]}, None),  # Tiny ImageNet before its download: no names yet
    (None, {"num_classes": 5}, None),  # a study recorded before the data identity was
])
def test_data_difference_names_what_differs(recorded: dict | None, now: dict, message: str | None) -> None:
    assert data_difference(recorded, now) == message


def test_an_edited_baseline_is_refused(smoke_copy: Path, capsys: pytest.CaptureFixture) -> None:
    """A baseline's blocks [1, 2] -> [2, 2] between runs: refused in one line before anything is written."""
    raw = yaml.safe_load((SPACES_DIR / "smoke.yaml").read_text())
    raw["baselines"][0]["blocks"] = [2, 2]
    space = write_space(smoke_copy.parent, name="smoke.yaml", base=raw)
    before = snapshot(smoke_copy)
    sets = [arg for o in SMOKE_OVERRIDES for arg in ("--set", o)]
    code = run.main([str(space), "--results-dir", str(smoke_copy.parent), "--n-trials", "4", "--device", "cpu", *sets])
    one_error(capsys, code, "was made from a different space (baselines differs")
    assert snapshot(smoke_copy) == before


def _old_style(cfg) -> tuple[str, dict[str, str]]:
    """The fingerprint and sections a study recorded before baselines and the data identity were part of it."""
    sections = {k: v for k, v in fingerprint_sections(cfg).items() if k != "baselines"}
    return hashlib.sha256(json.dumps(sections, sort_keys=True).encode()).hexdigest()[:16], sections


def test_a_study_from_before_the_identity_is_accepted_and_recorded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    cfg = load_config(write_space(tmp_path, base={**FOLDER_SPACE, "data": {"dataset": "synthetic"}}))
    old = optuna.create_study(study_name="space", storage=url, direction="maximize")
    old_print, sections = _old_style(cfg)
    old.set_user_attr("fingerprint", old_print)
    old.set_user_attr("fingerprint_sections", sections)
    data = {"dataset": "synthetic", "num_classes": 10, "class_names": [f"class_{k}" for k in range(10)],
            "image_size": 32}
    attrs = open_study(cfg, url, data=data).user_attrs
    assert attrs["fingerprint"] == fingerprint(cfg) and "baselines" in attrs["fingerprint_sections"]
    assert attrs[DATA_ATTR] == data
    with pytest.raises(UserError, match=r"searched on other data: 5 classes instead of 10"):
        open_study(cfg, url, data={**data, "num_classes": 5, "class_names": data["class_names"][:5]})


def test_retrain_on_other_classes_is_refused_before_training(smoke_copy: Path, capsys: pytest.CaptureFixture) -> None:
    """`retrain RESULTS --set data.synthetic_classes=5` on a 10-class study: one line, exit 2, no file written."""
    before = snapshot(smoke_copy)
    code = commands.retrain_main([str(smoke_copy), "--epochs", "1", "--device", "cpu", "--set", "data.synthetic_classes=5"])
    one_error(capsys, code, "the data is not what study 'smoke' searched on: 5 classes instead of 10")
    assert snapshot(smoke_copy) == before and not (smoke_copy / "retrain").exists()


@pytest.mark.parametrize("recorded", [True, False], ids=["config names its study", "older config.yaml"])
def test_a_results_folder_linked_to_another_study_is_refused(smoke_copy: Path, recorded: bool,
                                                             capsys: pytest.CaptureFixture) -> None:
    """`results/other -> results/smoke`, then `--study-name other`: smoke's config and records stay as they were."""
    if not recorded:  # written before run.py recorded the study's name in it
        raw = yaml.safe_load((smoke_copy / "config.yaml").read_text())
        raw["search"].pop("study_name", None)
        (smoke_copy / "config.yaml").write_text(yaml.safe_dump(raw))
    (smoke_copy.parent / "other").symlink_to(smoke_copy, target_is_directory=True)
    before = snapshot(smoke_copy)
    sets = [arg for o in [*SMOKE_OVERRIDES, "train.epochs=1"] for arg in ("--set", o)]
    code = run.main([str(SPACES_DIR / "smoke.yaml"), "--results-dir", str(smoke_copy.parent), "--study-name", "other",
                     "--n-trials", "1", "--device", "cpu", *sets])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"results folder '{smoke_copy.parent / 'other'}' (-> '{smoke_copy}') belongs to study 'smoke'" in err
    assert snapshot(smoke_copy) == before
    names = [s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{smoke_copy / 'study.db'}")]
    assert names == ["smoke"]


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
