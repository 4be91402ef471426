"""Files the tool reads and writes: nothing it loads runs code, a broken file is one line, no write leaves the folder."""

from __future__ import annotations

import dataclasses
import fcntl
import io
import os
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import optuna
import pytest
import sqlalchemy
import torch
from PIL import Image

import blocks
from blocks import ArchSpec, build
from search import checkpoint as ckpt_io
from search import commands, run
from search.checkpoint import UnreadableCheckpoint
from search.config import DataConfig, TrainSpec
from search.data import decode_cache
from search.data.datasets import make_loaders
from search.errors import UserError
from search.files import atomic_write_text
from search.locks import LockHeld, hold_lock, open_lock_file, release_lock, sign_lock
from search.review import folder_lock, retrain
from search.review.results import open_results
from search.study.stop import StopRequested
from search.trainer import EpochResult, fit, resumable_epochs, setup_training
from search.trials import RESUMED_FROM
from tests.helpers.datasets import make_cifar10
from tests.helpers.errors import one_error
from tests.helpers.hostile import BREAKERS, Touch, fifo_watch, full_disk_at, plant_hostile
from tests.helpers.spaces import ROOT, write_space
from tests.helpers.studies import best, quickest, retry_of, sqlite_file, study_at

SPEC = ArchSpec.from_dict({"stages": 2, "blocks": [1, 1], "width": 8, "num_classes": 4, "input_size": 8})
DATA = DataConfig(dataset="synthetic", synthetic_train=96, synthetic_test=16, synthetic_classes=4,
                  synthetic_size=8, num_workers=0)


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    """A file that exists only if a load ran code from a hostile pickle."""
    path = tmp_path / "code-ran"
    yield path
    assert not path.exists(), "a load ran code from a file"


def one_epoch_checkpoint(path: Path, spec: TrainSpec, arch: ArchSpec = SPEC) -> list:
    """Train `arch` under `spec` (2+ epochs) and stop at epoch 2's first batch: the checkpoint holds epoch 1."""
    loaders = make_loaders(DATA, [], spec.batch_size, seed=0)
    asked: list[int] = []
    with pytest.raises(StopRequested):
        fit(build(arch), loaders.train, loaders.val, spec, torch.device("cpu"), checkpoint=path, seed=3,
            stop=lambda: bool(asked.append(1)) or len(asked) > len(loaders.train))
    return asked


@pytest.mark.parametrize("optimizer, schedule, warmup, ema", [
    ("sgd", "cosine", 0.5, 0.99), ("adam", "onecycle", 0.0, None), ("adamw", "step", 0.5, None),
    ("sgd", "cyclic", 0.0, 0.9), ("adamw", "constant", 0.0, None)])
def test_every_checkpoint_reads_back_with_weights_only(tmp_path: Path, optimizer: str, schedule: str,
                                                       warmup: float, ema: float | None) -> None:
    """Optimiser, schedule, EMA, history and RNG state are saved in types torch.load(weights_only=True) takes."""
    spec = TrainSpec(epochs=2, batch_size=32, lr=0.05, optimizer=optimizer, schedule=schedule,
                     warmup_epochs=warmup, ema=ema)
    ckpt = tmp_path / "c.pt"
    one_epoch_checkpoint(ckpt, spec)
    state = torch.load(ckpt, weights_only=True)
    assert len(state["history"]) == 1 and ("ema" in state) == (ema is not None)
    loaders = make_loaders(DATA, [], spec.batch_size, seed=0)
    history = fit(build(SPEC), loaders.train, loaders.val, spec, torch.device("cpu"), checkpoint=ckpt, seed=3)
    assert len(history) == 2 and dataclasses.asdict(history[0]) == state["history"][0]  # resumed, not retrained


@pytest.mark.parametrize("kind", [*BREAKERS, "another architecture"])
def test_a_broken_checkpoint_is_set_aside_in_one_line(tmp_path: Path, marker: Path, kind: str) -> None:
    spec = TrainSpec(epochs=2, batch_size=32, lr=0.05, ema=0.9)
    ckpt = tmp_path / "trial_0.pt"
    if kind == "another architecture":
        one_epoch_checkpoint(ckpt, spec, dataclasses.replace(SPEC, blocks=(1, 2)))
    else:
        one_epoch_checkpoint(ckpt, spec)
        BREAKERS[kind](ckpt, marker)
    loaders = make_loaders(DATA, [], spec.batch_size, seed=0)
    notes: list[str] = []
    with fifo_watch(ckpt) as blocked:  # a FIFO is refused at once, never waited on
        with pytest.raises(UnreadableCheckpoint, match=f"checkpoint {ckpt}: "):  # fit itself never runs it either
            fit(build(SPEC), loaders.train, loaders.val, spec, torch.device("cpu"), checkpoint=ckpt)
        assert resumable_epochs(ckpt, build(SPEC), spec, notes.append) == 0
    assert not blocked
    assert len(notes) == 1 and "\n" not in notes[0] and notes[0].endswith("; kept as trial_0.pt.unreadable"), notes
    assert not ckpt.exists() and (tmp_path / "trial_0.pt.unreadable").exists()


def test_an_empty_model_file_is_one_line(tmp_path: Path) -> None:
    """blocks.load on a zero-byte file: the reason, not an IndexError from formatting an empty message."""
    (tmp_path / "model.pt").touch()
    with pytest.raises(ValueError, match="is not a readable checkpoint: the file is empty"):
        blocks.load(tmp_path / "model.pt")


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(space, results) of a 1-trial search whose trial the database interrupted after epoch 2 of 3 (checkpoint kept)."""
    root = tmp_path_factory.mktemp("interrupted")
    space = write_space(root, {"search": {"n_trials": 1}, "augment": []})
    report_epoch = optuna.trial.Trial.report

    def failing_report(trial: optuna.trial.Trial, value: float, step: int) -> None:
        if step == 2:
            raise sqlalchemy.exc.OperationalError("UPDATE", {}, Exception("server closed the connection"))
        report_epoch(trial, value, step)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(optuna.trial.Trial, "report", failing_report)
        assert run.main([str(space), "--results-dir", str(root / "r"), "--device", "cpu"]) == 1
    results = root / "r" / "space"
    assert len(torch.load(results / "checkpoints" / "trial_0.pt", weights_only=True)["history"]) == 2
    return space, results


def copy_interrupted(interrupted: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """(space, results) of a private copy of the interrupted search, its study.db copied whole."""
    space, original = interrupted
    results = tmp_path / "r" / "space"
    shutil.copytree(original, results, ignore=shutil.ignore_patterns("study.db*"))
    with sqlite_file(original / "study.db") as src, sqlite_file(results / "study.db") as out:
        src.backup(out)
    return space, results


@pytest.mark.parametrize("kind", ["hostile", "truncated", "empty", "fifo", "no param groups", "rng of 100 bytes",
                                  "20 epochs"])
def test_a_broken_trial_checkpoint_restarts_the_trial(interrupted: tuple[Path, Path], tmp_path: Path, marker: Path,
                                                      kind: str, capsys: pytest.CaptureFixture) -> None:
    """The resumed trial's checkpoint cannot be read: one line, set aside, the retry trains from epoch 1."""
    space, results = copy_interrupted(interrupted, tmp_path)
    ckpt = results / "checkpoints" / "trial_0.pt"
    BREAKERS[kind](ckpt, marker)
    capsys.readouterr()
    with fifo_watch(ckpt) as blocked:
        assert run.main([str(space), "--results-dir", str(tmp_path / "r"), "--device", "cpu"]) == 0
    assert not blocked  # the FIFO was set aside, not waited on
    out, err = capsys.readouterr()
    said = [line for line in (out + err).splitlines() if "trial_0.pt" in line]
    assert len(said) == 1 and said[0].endswith("; kept as trial_0.pt.unreadable; trial 0 restarts from epoch 1"), said
    assert "Traceback" not in out + err
    retry = retry_of(study_at(results), 0)
    assert RESUMED_FROM not in retry.user_attrs and len(retry.user_attrs["val_acc_curve"]) == 3
    assert (results / "checkpoints" / "trial_0.pt.unreadable").exists()


def saved_train_state(results: Path, n: int, path: Path) -> None:
    """A train_state.pt of trial n's `retrain --epochs 1` after its epoch, as retrain saves it (to break in place)."""
    plan = retrain.make_plans(open_results(results), [n], 1)[0]
    model = build(plan.spec)
    state = setup_training(model, plan.train, torch.device("cpu"), 1)
    epoch = EpochResult(1, 1.0, 0.5, 1.0, 0.5, 0.1, SPEC.input_size, 1.0)
    ckpt_io.save_training(path, model, state.opt, state.schedule, state.ema, [dataclasses.asdict(epoch)])


@pytest.mark.parametrize("kind", ["truncated", "not a zip", "a JSON list"])
def test_a_broken_record_of_the_retried_trial_is_set_aside(interrupted: tuple[Path, Path], tmp_path: Path,
                                                          marker: Path, kind: str,
                                                          capsys: pytest.CaptureFixture) -> None:
    """trials/00000.json is not trial 0's record: one line, set aside; the retry resumes from the checkpoint."""
    space, results = copy_interrupted(interrupted, tmp_path)
    record = results / "trials" / "00000.json"
    BREAKERS[kind](record, marker)
    capsys.readouterr()
    assert run.main([str(space), "--results-dir", str(tmp_path / "r"), "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    said = [line for line in (out + err).splitlines() if "00000.json" in line]
    assert len(said) == 1 and said[0].endswith("; kept as 00000.json.unreadable"), said
    assert "Traceback" not in out + err
    assert retry_of(study_at(results), 0).user_attrs[RESUMED_FROM] == 3
    assert (results / "trials" / "00000.json.unreadable").exists()


@pytest.mark.parametrize("kind", ["hostile", "empty", "not a zip", "optimizer {}", "rng of 100 bytes", "20 epochs"])
def test_a_broken_retrain_state_restarts_the_seed(smoke_copy: Path, marker: Path, kind: str,
                                                  capsys: pytest.CaptureFixture) -> None:
    n = quickest(smoke_copy)
    run_dir = smoke_copy / "retrain" / f"{n:05d}" / "seed_0"
    run_dir.mkdir(parents=True)
    saved_train_state(smoke_copy, n, run_dir / "train_state.pt")
    BREAKERS[kind](run_dir / "train_state.pt", marker)
    assert commands.retrain_main([str(smoke_copy), "--trial", str(n), "--epochs", "1", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    said = [line for line in (out + err).splitlines() if "train_state.pt" in line]
    assert len(said) == 1 and said[0].startswith(f"[trial {n} seed 0] cannot "), said
    assert "Traceback" not in out + err
    assert said[0].endswith("; kept as train_state.pt.unreadable; training restarts from epoch 1")
    assert (run_dir / "model.pt").is_file() and not (run_dir / "train_state.pt").exists()
    with open(run_dir.parent / folder_lock.LOCK) as f:  # the run released its lock
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_hostile_test_results_and_model_are_not_loaded(smoke_retrained: Path, smoke_copy: Path, marker: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    """A retrained seed's test_probs.pt is tested again; its model.pt is refused in one line (exit 2)."""
    shutil.copytree(smoke_retrained / "retrain", smoke_copy / "retrain")
    n = best(smoke_copy, 2)[0]
    run_dir = smoke_copy / "retrain" / f"{n:05d}" / "seed_0"
    args = [str(smoke_copy), "--top", "2", "--epochs", "1", "--device", "cpu"]  # as smoke_retrained ran
    plant_hostile(run_dir / "test_probs.pt", marker, probs=torch.zeros(1))
    assert commands.retrain_main(args) == 0
    out = capsys.readouterr().out
    said = [line for line in out.splitlines() if str(run_dir / "test_probs.pt") in line]
    assert len(said) == 1 and "holds objects other than tensors" in said[0] and "testing the model again" in said[0]
    assert torch.load(run_dir / "test_probs.pt", weights_only=True)["probs"].shape[0] > 1  # written again
    plant_hostile(run_dir / "model.pt", marker)
    assert commands.retrain_main(args) == 2
    one_error(capsys, None, "delete it (or rerun with --fresh)", start=f"'{run_dir / 'model.pt'}' is not a readable checkpoint")


@pytest.mark.parametrize("kind", ["hostile", "empty", "truncated"])
def test_predict_refuses_a_broken_model_in_one_line(smoke_retrained: Path, tmp_path: Path, marker: Path,
                                                    kind: str, capsys: pytest.CaptureFixture) -> None:
    model = tmp_path / "model.pt"
    shutil.copy(next((smoke_retrained / "retrain").glob("0*/seed_0/model.pt")), model)
    BREAKERS[kind](model, marker)
    image = tmp_path / "a.png"
    Image.new("RGB", (16, 16)).save(image)
    assert commands.predict_main([str(model), "--images", str(image), "--output", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: '{model}' is not a readable checkpoint: "), err


def _repickle(path: Path, change: dict, drop: str = "") -> None:
    """Rewrite a CIFAR-10 batch with entries changed or dropped, pickled by Python 3 (protocol 4)."""
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="latin1")  # the test's own fixture: trusted
    path.write_bytes(pickle.dumps({k: v for k, v in {**batch, **change}.items() if k != drop}))


# Planted CIFAR-10 batches (path, marker) and what the one line says of each.
BAD_BATCHES = {
    "hostile": (lambda path, marker: path.write_bytes(pickle.dumps(Touch(marker), protocol=2)),
                "it asks for posix.system, which could run code, so it was not loaded"),
    "hostile inside": (lambda path, marker: _repickle(path, {"labels": [Touch(marker)]}), "it asks for posix.system"),
    "no labels": (lambda path, marker: _repickle(path, {}, drop="labels"),
                  "expected a dict with 'data' and 'labels', found ['batch_label', 'data', 'filenames']"),
    "float data": (lambda path, marker: _repickle(path, {"data": np.zeros((20, 3072))}),
                   "its data is not an (N, 3072) uint8 array"),
    "a label short": (lambda path, marker: _repickle(path, {"labels": [0] * 19}), "it has 19 labels for 20 images"),
}


@pytest.mark.parametrize("kind", BAD_BATCHES)
def test_a_planted_cifar10_batch_runs_nothing_and_is_one_line(tmp_path: Path, marker: Path, kind: str) -> None:
    """A batch file is a pickle: only numpy arrays and plain containers are built, then checked."""
    root = make_cifar10(tmp_path / "data")
    batch = root / "cifar-10-batches-py" / "data_batch_2"
    plant, said = BAD_BATCHES[kind]
    plant(batch, marker)
    with pytest.raises(UserError) as err:
        make_loaders(dataclasses.replace(DATA, dataset="cifar10", root=str(root)), [], 8, seed=0)
    assert str(err.value).startswith(f"cannot read cifar10 file '{batch}': ") and said in str(err.value)
    assert "\n" not in str(err.value)


def test_a_hostile_cifar10_batch_stops_the_search_with_exit_2(tmp_path: Path, marker: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    """The hostile batch is refused before any folder or study exists: one line, exit 2, nothing ran."""
    root = make_cifar10(tmp_path / "data")
    BAD_BATCHES["hostile"][0](root / "cifar-10-batches-py" / "data_batch_2", marker)
    args = [str(ROOT / "spaces" / "cifar10_5m.yaml"), "--data-root", str(root), "--results-dir", str(tmp_path / "r")]
    assert run.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: cannot read cifar10 file ") and "posix.system" in err, err
    assert not (tmp_path / "r").exists()


def test_cifar10_batches_pickled_by_python_3_still_load(tmp_path: Path) -> None:
    """Batches re-pickled by Python 3 (protocols 2 to 5, as a JPEG-copy converter writes them) read as before."""
    folder = make_cifar10(tmp_path / "data") / "cifar-10-batches-py"
    for protocol, name in enumerate(["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4"], 2):
        with open(folder / name, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    loaders = make_loaders(dataclasses.replace(DATA, dataset="cifar10", root=str(tmp_path / "data")), [], 8, seed=0)
    assert len(loaders.train.dataset) + len(loaders.val.dataset) == 100


def plant_links(outside: Path, *paths: Path) -> None:
    """Symbolic links at `paths`, each to its own file under `outside` holding 'untouched'."""
    outside.mkdir(exist_ok=True)
    for i, path in enumerate(paths):
        target = outside / f"target_{i}"
        target.write_text("untouched")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)


def untouched(outside: Path) -> bool:
    """Whether every link target under `outside` still holds what plant_links wrote."""
    return all(t.read_text() == "untouched" for t in outside.iterdir())


def test_links_at_the_old_temporary_names_are_not_followed(tmp_path: Path) -> None:
    """A search and its report write their records, checkpoints, config and page inside the results folder."""
    space = write_space(tmp_path, {"search": {"n_trials": 1}, "augment": []})
    results = tmp_path / "r" / "space"
    outside = tmp_path / "outside"
    plant_links(outside, results / "trials" / ".00000.json.tmp", results / "checkpoints" / "trial_0.tmp",
                results / f".config.yaml.{os.getpid()}.tmp", results / ".report.html.tmp")
    assert run.main([str(space), "--results-dir", str(tmp_path / "r"), "--device", "cpu"]) == 0
    assert commands.report_main([str(results)]) == 0
    assert untouched(outside) and (results / "trials" / "00000.json").is_file() and (results / "report.html").is_file()


def test_retrain_writes_never_follow_planted_links(smoke_copy: Path, tmp_path: Path) -> None:
    """Links at the old temporary names and at the files retrain writes are replaced, never written through."""
    n = quickest(smoke_copy)
    run_dir = smoke_copy / "retrain" / f"{n:05d}" / "seed_0"
    outside = tmp_path / "outside"
    plant_links(outside, run_dir / "train_state.tmp", run_dir / ".model.pt.tmp", run_dir / "metrics.json",
                run_dir / "curves.csv", run_dir / "test_probs.pt", run_dir.parent / "metrics.json")
    assert commands.retrain_main([str(smoke_copy), "--trial", str(n), "--epochs", "1", "--device", "cpu"]) == 0
    assert untouched(outside)
    assert not (run_dir / "metrics.json").is_symlink() and not (run_dir / "curves.csv").is_symlink()


def test_a_full_disk_leaves_the_old_file_and_no_temporary_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.json"
    atomic_write_text(path, "old")
    full_disk_at(monkeypatch, "x.json")
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(path, "new" * 10_000)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_a_second_retrain_of_a_trial_is_refused_in_one_line(smoke_copy: Path, capsys: pytest.CaptureFixture) -> None:
    """Another run holds trial B's lock: `--top 2` (A, B) is refused before A trains, exit 2."""
    first, second = best(smoke_copy, 2)
    folder = smoke_copy / "retrain" / f"{second:05d}"
    folder.mkdir(parents=True)
    with open(folder / folder_lock.LOCK, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("process 1 on elsewhere")
        held.flush()
        assert commands.retrain_main([str(smoke_copy), "--top", "2", "--epochs", "1", "--device", "cpu"]) == 2
    assert capsys.readouterr().err == (f"error: {folder} is being retrained by process 1 on elsewhere: one retrain "
                                       f"of a trial at a time; wait for that run to end, or stop it\n")
    assert not (smoke_copy / "retrain" / f"{first:05d}" / "seed_0").exists()  # refused before anything trained
    assert [p.name for p in folder.iterdir()] == [folder_lock.LOCK]


def test_lock_files_never_follow_a_planted_link(tmp_path: Path) -> None:
    """A link planted at a lock file's name is refused: nothing is created or truncated at its target."""
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep")
    link = tmp_path / "study.db.lock"
    link.symlink_to(target)
    with pytest.raises(OSError):
        open_lock_file(link)
    assert target.read_text() == "keep"
    with open_lock_file(tmp_path / "fresh.lock") as f:  # a plain name is created and can be locked
        fcntl.flock(f, fcntl.LOCK_EX)
    assert (tmp_path / "fresh.lock").is_file()


def test_a_held_lock_is_refused_without_waiting_and_names_its_holder(tmp_path: Path) -> None:
    """hold_lock(wait=False) on a lock held elsewhere: LockHeld with the holder's note at once; free once released."""
    path = tmp_path / "x.lock"
    held = hold_lock(path, "the test lock")  # another open file: flock refuses it as it would another process
    with pytest.raises(LockHeld) as unsigned:
        hold_lock(path, "the test lock", wait=False)
    sign_lock(held)
    with pytest.raises(LockHeld) as signed:
        hold_lock(path, "the test lock", wait=False)
    assert unsigned.value.holder == "" and signed.value.holder == f"process {os.getpid()} on {os.uname().nodename}"
    release_lock(held)
    hold_lock(path, "the test lock", wait=False).close()
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(UserError) as fifo:  # refused at once, never waited on
        hold_lock(path, "the test lock")
    assert str(fifo.value) == f"cannot open the test lock {path}: not a regular file (a FIFO)"


def test_the_decode_cache_never_follows_a_link_at_a_temporary_name(tmp_path: Path) -> None:
    """The decoded-image cache is built in a new randomly named file: a link at the old pid name is untouched."""
    images = [tmp_path / f"{i}.png" for i in range(2)]
    for p in images:
        p.write_bytes(b"x")
    target = tmp_path / "elsewhere.bin"
    target.write_bytes(b"keep")
    cache = tmp_path / "cache"
    cache.mkdir()
    key = decode_cache.cache_key(images, 4, "")
    (cache / f".d-{key}.npy.{os.getpid()}.tmp").symlink_to(target)
    out = decode_cache.decoded(images, 4, lambda p: np.zeros((4, 4, 3), np.uint8), cache, "d", stream=io.StringIO())
    assert out.shape == (2, 4, 4, 3) and target.read_bytes() == b"keep"
