"""What a file read back holds is checked, not only that it loads: a record or a model of another run is one line."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import blocks
from search import commands, run
from search.data import decode_cache
from search.review.results import open_results
from tests.helpers.errors import one_error
from tests.helpers.hostile import BREAKERS
from tests.helpers.studies import best, quickest, sqlite_file


@pytest.mark.parametrize("kind", ["another trial's", "saved without extra"])
def test_a_model_of_another_run_is_refused_in_one_line(smoke_retrained: Path, smoke_copy: Path, kind: str,
                                                       capsys: pytest.CaptureFixture) -> None:
    """model.pt copied from trial B's folder into A's, or written by blocks.save alone: never tested as A's."""
    shutil.copytree(smoke_retrained / "retrain", smoke_copy / "retrain")
    a, b = best(smoke_copy, 2)
    model = smoke_copy / "retrain" / f"{a:05d}" / "seed_0" / "model.pt"
    if kind == "another trial's":
        shutil.copy(smoke_copy / "retrain" / f"{b:05d}" / "seed_0" / "model.pt", model)
    else:
        blocks.save(model, blocks.load(model))
    capsys.readouterr()
    assert commands.retrain_main([str(smoke_copy), "--trial", str(a), "--epochs", "1", "--device", "cpu"]) == 2
    one_error(capsys, None, "rerun with --fresh", start=f"'{model}' is not seed 0 of trial {a}: ")


@pytest.mark.parametrize("kind", ["truncated", "not a zip", "a JSON list"])
def test_a_broken_run_record_is_refused_in_one_line(smoke_retrained: Path, smoke_copy: Path, kind: str,
                                                    capsys: pytest.CaptureFixture) -> None:
    """A seed folder's run.json that is not a record: retrain says so and how to start over, exit 2."""
    shutil.copytree(smoke_retrained / "retrain", smoke_copy / "retrain")
    n = best(smoke_copy, 1)[0]
    record = smoke_copy / "retrain" / f"{n:05d}" / "seed_0" / "run.json"
    BREAKERS[kind](record, record.with_name("code-ran"))
    capsys.readouterr()
    assert commands.retrain_main([str(smoke_copy), "--trial", str(n), "--epochs", "1", "--device", "cpu"]) == 2
    one_error(capsys, None, "rerun with --fresh", start=f"{record} is not a retrain record: ")


@pytest.mark.parametrize("kind", ["truncated", "not a zip", "a JSON list"])
def test_a_broken_trial_record_is_refused_in_one_line(smoke_copy: Path, kind: str,
                                                      capsys: pytest.CaptureFixture) -> None:
    """trials/<n>.json that is not trial n's record: retrain names it before anything trains, exit 2."""
    n = quickest(smoke_copy)
    record = smoke_copy / "trials" / f"{n:05d}.json"
    BREAKERS[kind](record, record.with_name("code-ran"))
    capsys.readouterr()
    assert commands.retrain_main([str(smoke_copy), "--trial", str(n), "--epochs", "1", "--device", "cpu"]) == 2
    one_error(capsys, None, "fix or delete it", start=f"trial {n}: '{record}' is not its record: ")
    assert not (smoke_copy / "retrain" / f"{n:05d}" / "seed_0").exists()


# A decoded-image cache broken in place: the BREAKERS that apply, and another data's array under its name.
CACHE_BREAKERS = {"truncated": BREAKERS["truncated"], "overwritten": BREAKERS["not a zip"],
                  "another shape": lambda path, marker: np.save(path, np.zeros((3, 4, 4, 3), np.uint8))}


@pytest.mark.parametrize("kind", CACHE_BREAKERS)
def test_a_broken_decode_cache_is_set_aside_and_decoded_again(tmp_path: Path, kind: str) -> None:
    images = [tmp_path / f"{i}.png" for i in range(2)]
    for p in images:
        p.write_bytes(b"x")

    def decoded() -> tuple[np.ndarray, str]:
        stream = io.StringIO()
        out = decode_cache.decoded(images, 4, lambda p: np.ones((4, 4, 3), np.uint8), tmp_path / "cache", "d",
                                   stream=stream)
        return out, stream.getvalue()

    decoded()
    (cache,) = (tmp_path / "cache").glob("d-*.npy")
    CACHE_BREAKERS[kind](cache, tmp_path / "code-ran")
    out, said = decoded()
    assert out.shape == (2, 4, 4, 3) and (out == 1).all()
    lines = [line for line in said.splitlines() if cache.name in line]
    assert len(lines) == 1 and lines[0].endswith(f"; kept as {cache.name}.unreadable, decoding again"), said
    assert (tmp_path / "cache" / f"{cache.name}.unreadable").is_file()


@pytest.mark.parametrize("command", ["report", "retrain"])
@pytest.mark.parametrize("key, value, says", [("arch", "3x3", "arch is a str of 3, not dict"),
                                              ("params", "many", "params is a str of 4, not int")])
def test_an_edited_study_attribute_is_refused_in_one_line(smoke_copy: Path, capsys: pytest.CaptureFixture,
                                                          command: str, key: str, value: str, says: str) -> None:
    """study.db edited so that a trial's arch or params is text: report and retrain name it, exit 2."""
    n = best(smoke_copy, 1)[0]
    with sqlite_file(smoke_copy / "study.db") as db:  # Optuna itself will not edit a finished trial
        (trial_id,) = db.execute("SELECT trial_id FROM trials WHERE number = ?", (n,)).fetchone()
        db.execute("UPDATE trial_user_attributes SET value_json = ? WHERE trial_id = ? AND key = ?",
                   (json.dumps(value), trial_id, key))
    capsys.readouterr()
    args = [str(smoke_copy)] + (["--trial", str(n), "--epochs", "1", "--device", "cpu"] if command == "retrain" else [])
    assert {"report": commands.report_main, "retrain": commands.retrain_main}[command](args) == 2
    one_error(capsys, None, f"trial {n}'s user attribute {says}; restore the database", start="study 'smoke' in ")


def set_values(results: Path, numbers: list[int], value: float | None, kind: str = "FINITE") -> None:
    """Edit study.db so that these trials' val_acc is `value` as Optuna stores it (INF_POS for +inf; NULL is how
    SQLite keeps a NaN); Optuna itself never writes either for a COMPLETE trial."""
    with sqlite_file(results / "study.db") as db:
        for n in numbers:
            db.execute("UPDATE trial_values SET value = ?, value_type = ? WHERE trial_id = "
                       "(SELECT trial_id FROM trials WHERE number = ?)", (value, kind, n))


def test_an_infinite_value_is_never_the_best_trial(smoke_copy: Path) -> None:
    """A trial whose val_acc is +inf (study.db edited) is not retrained as "the best" (it was); the best finite one is."""
    first, second = best(smoke_copy, 2)
    set_values(smoke_copy, [second], None, "INF_POS")
    res = open_results(smoke_copy)
    assert res.choose(None, None) == [first] and second not in [t.number for t in res.complete()]


def test_no_finite_complete_trial_is_one_line(smoke_copy: Path, capsys: pytest.CaptureFixture) -> None:
    done = [t.number for t in open_results(smoke_copy).complete()]
    set_values(smoke_copy, done, None, "INF_POS")
    assert commands.retrain_main([str(smoke_copy), "--epochs", "1", "--device", "cpu"]) == 2
    one_error(capsys, None, f"has no complete trial to retrain (trial {min(done)}'s val_acc is "
                                                "inf, which no search writes: restore study.db from a copy", start="study 'smoke' in ")


@pytest.mark.parametrize("command", ["report", "retrain"])
def test_a_null_value_is_one_line(smoke_copy: Path, command: str, capsys: pytest.CaptureFixture) -> None:
    """A NaN written into study.db is NULL there, which Optuna's reader meets with an AssertionError traceback."""
    set_values(smoke_copy, [best(smoke_copy, 1)[0]], None)
    args = [str(smoke_copy)] + (["--epochs", "1", "--device", "cpu"] if command == "retrain" else [])
    assert {"report": commands.report_main, "retrain": commands.retrain_main}[command](args) == 2
    one_error(capsys, None, "a trial's value is NULL (a NaN written into the database)", start="study 'smoke' in ")


def test_a_null_value_stops_a_resumed_search_in_one_line(smoke_copy: Path, capsys: pytest.CaptureFixture) -> None:
    """The search reads every trial when it opens the study: a NULL value is one line there, nothing written."""
    set_values(smoke_copy, [best(smoke_copy, 1)[0]], None)
    before = rows(smoke_copy)
    assert run.main([str(smoke_copy / "config.yaml"), "--results-dir", str(smoke_copy.parent), "--n-trials", "99"]) == 2
    one_error(capsys, None, "a trial's value is NULL (a NaN written into the database)", start="study 'smoke' in ")
    assert rows(smoke_copy) == before


def rows(results: Path) -> list[str]:
    """Every row of study.db as SQL text, as a new connection reads it: commits still in study.db-wal included
    (the file's bytes alone miss them while the search's connection stays open)."""
    with sqlite_file(results / "study.db") as db:
        return list(db.iterdump())
