"""Where the tool writes: never through a link out of the results folder, never over a FIFO or a device."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import optuna
import pytest

from search import run
from search.review import retrain
from tests.helpers.spaces import write_space
from tests.helpers.studies import quickest, study_at


def outside_folder(tmp_path: Path) -> dict[Path, str]:
    """A folder outside any results folder, with files a run must leave alone: each path and its content."""
    outside = tmp_path / "outside"
    (outside / "seed_0").mkdir(parents=True)
    files = {outside / "keep.txt": "untouched", outside / "seed_0" / "model.pt": "not a model",
             outside / "trial_0.pt": "untouched", outside / "00000.json": "untouched"}
    for path, text in files.items():
        path.write_text(text)
    return files


def as_left(files: dict[Path, str]) -> bool:
    """Whether the outside folder holds exactly the files it was given, unchanged."""
    folder = next(iter(files)).parent
    now = {p for p in folder.rglob("*") if p.is_file()}
    return now == set(files) and all(p.read_text() == text for p, text in files.items())


def one_error_line(err: str, link: Path) -> bool:
    """Whether stderr is the one line refusing the link out of the results folder."""
    return err.count("\n") == 1 and err.startswith(f"error: {link}") and "leads out of the results folder" in err


@pytest.mark.parametrize("fresh", [True, False])
def test_retrain_never_writes_or_deletes_through_a_linked_trial_folder(smoke_copy: Path, tmp_path: Path, fresh: bool,
                                                                       capsys: pytest.CaptureFixture) -> None:
    """results/<study>/retrain/<trial> -> outside: refused before the lock, --fresh or a training run (exit 2)."""
    files = outside_folder(tmp_path)
    n = quickest(smoke_copy)
    link = smoke_copy / "retrain" / f"{n:05d}"
    link.parent.mkdir()
    link.symlink_to(tmp_path / "outside", target_is_directory=True)
    args = [str(smoke_copy), "--trial", str(n), "--epochs", "1", "--device", "cpu"] + ["--fresh"] * fresh
    assert retrain.main(args) == 2
    assert one_error_line(capsys.readouterr().err, link)
    assert as_left(files)


@pytest.mark.parametrize("linked", ["checkpoints", "trials"])
def test_a_search_never_writes_or_deletes_through_a_linked_folder(tmp_path: Path, linked: str,
                                                                  capsys: pytest.CaptureFixture) -> None:
    """results/<study>/checkpoints -> outside (or trials/): refused before any trial runs, exit 2, none RUNNING."""
    files = outside_folder(tmp_path)
    space = write_space(tmp_path, {"search": {"n_trials": 1}, "augment": []})
    results = tmp_path / "r" / "space"
    results.mkdir(parents=True)
    (results / linked).symlink_to(tmp_path / "outside", target_is_directory=True)
    assert run.main([str(space), "--results-dir", str(tmp_path / "r"), "--device", "cpu"]) == 2
    assert one_error_line(capsys.readouterr().err, results / linked)
    assert as_left(files)
    assert not study_at(results).get_trials(states=[optuna.trial.TrialState.RUNNING])
