"""Where the tool writes: never through a link out of the results folder, never over a FIFO or a device."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import optuna
import pytest
from PIL import Image

from blocks import ArchSpec, build
from search import commands, run
from search.config import TrainSpec
from search.review import folder_lock
from search.trainer import resumable_epochs
from tests.helpers.errors import error_line
from tests.helpers.hostile import fifo_watch
from tests.helpers.spaces import write_space
from tests.helpers.studies import quickest, study_at

SPEC = ArchSpec.from_dict({"stages": 2, "blocks": [1, 1], "width": 8, "num_classes": 4, "input_size": 8})


def outside_folder(tmp_path: Path) -> dict[Path, str]:
    """A folder outside any results folder, with files a run must leave alone: each path and its content."""
    outside = tmp_path / "outside"
    (outside / "seed_0").mkdir(parents=True)
    files = {outside / "keep.txt": "untouched", outside / "seed_0" / "model.pt": "not a model",
             outside / "trial_0.pt": "untouched", outside / "00000.json": "untouched"}
    for path, text in files.items():
        path.write_text(text)
    return files


LEADS_OUT = "leads out of the results folder"  # every refusal of a link out of a results folder says it


def as_left(files: dict[Path, str]) -> bool:
    """Whether the outside folder holds exactly the files it was given, unchanged."""
    folder = next(iter(files)).parent
    now = {p for p in folder.rglob("*") if p.is_file()}
    return now == set(files) and all(p.read_text() == text for p, text in files.items())




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
    assert commands.retrain_main(args) == 2
    error_line(capsys.readouterr().err, LEADS_OUT, start=str(link))
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
    error_line(capsys.readouterr().err, LEADS_OUT, start=str(results / linked))
    assert as_left(files)
    assert not study_at(results).get_trials(states=[optuna.trial.TrialState.RUNNING])


def test_a_fifo_at_the_retrain_lock_is_refused_in_one_line(smoke_copy: Path, capsys: pytest.CaptureFixture) -> None:
    """A FIFO planted at .retrain.lock: one line, exit 2, nothing trained, the FIFO left as it was."""
    n = quickest(smoke_copy)
    lock = smoke_copy / "retrain" / f"{n:05d}" / folder_lock.LOCK
    lock.parent.mkdir(parents=True)
    os.mkfifo(lock)
    assert commands.retrain_main([str(smoke_copy), "--trial", str(n), "--epochs", "1", "--device", "cpu"]) == 2
    assert capsys.readouterr().err == f"error: cannot open the retrain lock {lock}: not a regular file (a FIFO)\n"
    assert stat.S_ISFIFO(os.lstat(lock).st_mode) and [p.name for p in lock.parent.iterdir()] == [lock.name]


LINKED_LOCK = "a symbolic link, which a lock is never opened through (it could lead anywhere); remove the link and rerun"


def test_a_link_at_the_retrain_lock_is_refused_in_one_line(smoke_copy: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    """.retrain.lock -> a file outside: one line saying it is a link (was: 'Too many levels of symbolic links'),
    exit 2, nothing trained, the file outside untouched."""
    n = quickest(smoke_copy)
    lock = smoke_copy / "retrain" / f"{n:05d}" / folder_lock.LOCK
    lock.parent.mkdir(parents=True)
    (tmp_path / "outside.txt").write_text("untouched")
    lock.symlink_to(tmp_path / "outside.txt")
    assert commands.retrain_main([str(smoke_copy), "--trial", str(n), "--epochs", "1", "--device", "cpu"]) == 2
    assert capsys.readouterr().err == f"error: cannot open the retrain lock {lock}: {LINKED_LOCK}\n"
    assert (tmp_path / "outside.txt").read_text() == "untouched" and [p.name for p in lock.parent.iterdir()] == [
        lock.name]


def test_a_link_at_the_study_lock_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """study.db.lock -> a file outside: one line before any trial runs, exit 2, the file outside untouched."""
    space = write_space(tmp_path, {"search": {"n_trials": 1}, "augment": []})
    results = tmp_path / "r" / "space"
    results.mkdir(parents=True)
    (tmp_path / "outside.txt").write_text("untouched")
    (results / "study.db.lock").symlink_to(tmp_path / "outside.txt")
    assert run.main([str(space), "--results-dir", str(tmp_path / "r"), "--device", "cpu"]) == 2
    assert capsys.readouterr().err == f"error: cannot open the study lock {results / 'study.db.lock'}: {LINKED_LOCK}\n"
    assert (tmp_path / "outside.txt").read_text() == "untouched" and not study_at(results).get_trials()


def test_a_folder_at_the_set_aside_name_is_kept(tmp_path: Path) -> None:
    """trial_0.pt.unreadable is a folder: the unreadable checkpoint goes to .unreadable.1, the folder is untouched."""
    ckpt = tmp_path / "trial_0.pt"
    ckpt.write_bytes(b"")
    (tmp_path / "trial_0.pt.unreadable").mkdir()
    (tmp_path / "trial_0.pt.unreadable" / "keep.txt").write_text("untouched")
    notes: list[str] = []
    assert resumable_epochs(ckpt, build(SPEC), TrainSpec(epochs=2, batch_size=32, lr=0.05), notes.append) == 0
    assert len(notes) == 1 and notes[0].endswith("; kept as trial_0.pt.unreadable.1"), notes
    assert (tmp_path / "trial_0.pt.unreadable" / "keep.txt").read_text() == "untouched"
    assert not ckpt.exists() and (tmp_path / "trial_0.pt.unreadable.1").read_bytes() == b""


def predict_args(smoke_retrained: Path, tmp_path: Path, output: str) -> list[str]:
    """predict's arguments for one retrained model, one image, and `output`."""
    image = tmp_path / "a.png"
    Image.new("RGB", (16, 16)).save(image)
    model = next((smoke_retrained / "retrain").glob("0*/seed_0/model.pt"))
    return [str(model), "--images", str(image), "--output", output]


@pytest.mark.parametrize("through_link", [False, True])
def test_predict_writes_into_a_fifo_as_a_stream(smoke_retrained: Path, tmp_path: Path, through_link: bool) -> None:
    """--output at a FIFO (or a link to one): the CSV is streamed into it; the FIFO and the link stay."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    output = tmp_path / "link" if through_link else fifo
    if through_link:
        output.symlink_to(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    with fifo_watch(fifo, after_s=20) as blocked:  # the reader is gone if predict never opens it: unblock it
        code = commands.predict_main(predict_args(smoke_retrained, tmp_path, str(output)))
        reader.join(timeout=20)
    assert code == 0 and not blocked and got and got[0].startswith("file,class_1,prob_1"), got
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and output.is_symlink() == through_link


def test_predict_output_dash_and_dev_null(smoke_retrained: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`--output -` is standard output (the CSV alone); `--output /dev/null` writes into it, never replaces it."""
    monkeypatch.chdir(tmp_path)  # where a file named `-` would land
    assert commands.predict_main(predict_args(smoke_retrained, tmp_path, "-")) == 0
    out, err = capsys.readouterr()
    assert out.startswith("file,class_1,prob_1") and len(out.splitlines()) == 2 and "predicting 1 image" in err
    replace = os.replace

    def never_under_dev(src: str, dst: str) -> None:  # a safety net: a regression must not break this machine
        if os.path.realpath(dst).startswith("/dev/"):
            raise PermissionError(13, "test guard: a rename over a device", dst)
        replace(src, dst)

    monkeypatch.setattr(os, "replace", never_under_dev)
    assert commands.predict_main(predict_args(smoke_retrained, tmp_path, "/dev/null")) == 0
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
