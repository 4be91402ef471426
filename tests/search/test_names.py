"""Names that become file and folder names are bounded in bytes, in one place (search/names.py): a name over
255 bytes or a path over 4,096 is one line and exit status 2 in every command, before anything is created."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from search import __main__ as cli_main
from search import run
from search.cli import main_guard
from search.errors import UserError
from search.names import NAME_MAX, TEMP_ROOM, check_name, check_path, fit_name, size
from tests.helpers.errors import one_error
from tests.helpers.processes import child_env
from tests.helpers.spaces import ROOT, write_space
from tests.helpers.studies import assert_one_line_error

LONG = "x" * 300  # one name of 300 bytes: ENAMETOOLONG on every Linux file system


def test_a_name_is_measured_in_bytes_as_the_file_system_stores_it() -> None:
    assert size("é" * 127) == 254 and check_name("é" * 127, "name") == "é" * 127
    with pytest.raises(UserError, match="name 'é.*: 256 bytes, over the 255 a file or folder name holds"):
        check_name("é" * 128, "name")  # 128 characters, 256 bytes
    assert size("\udcff" * 255) == 255  # a PEP 383 name (a byte the locale cannot decode) is its one byte
    with pytest.raises(UserError, match=f"over the {NAME_MAX - TEMP_ROOM} .* less {TEMP_ROOM} for the files"):
        check_name("x" * 240, "--output", room=TEMP_ROOM)  # its temporary twin would be 258 bytes
    with pytest.raises(UserError, match="--results-dir 'a/x+...: the name 'x+...: 300 bytes"):
        check_path(f"a/{LONG}/b", "--results-dir")
    with pytest.raises(UserError, match="4,200 bytes, over the 4,096 a path holds"):
        check_path("x/" * 2100, "--results-dir")
    assert check_path("a/" + "x" * 255, "ok") == "a/" + "x" * 255


def test_a_name_the_tool_composes_is_fitted_and_kept_apart() -> None:
    """retrain --top 60 ensembles 60 trials: ensemble_10000-10001-... is 368 bytes, cut with a digest to fit."""
    long = "ensemble_" + "-".join(str(10000 + i) for i in range(60))
    other = long.replace("10059", "10061")  # the same start: kept apart by the digest alone
    assert size(long) > NAME_MAX
    fitted = fit_name(long)
    assert size(fitted) <= NAME_MAX and fitted.startswith("ensemble_10000-10001") and fit_name(other) != fitted
    assert fit_name("ensemble_1-2") == "ensemble_1-2"
    wide = fit_name("語" * 100, room=TEMP_ROOM)  # 300 bytes: cut between characters, never inside one
    assert size(wide) + TEMP_ROOM <= NAME_MAX and wide.encode().decode() == wide


@pytest.mark.parametrize(("case", "args", "needles"), [
    ("a 5,000-character space", ["s" * 5000 + ".yaml"], ["SPACE 'sss", "5,005 bytes, over the 255"]),
    ("a 300-byte --results-dir (round 3's case, regressed)", ["SPACE", "--results-dir", LONG],
     ["--results-dir 'xxx", "300 bytes"]),
    ("a study name of 200 characters and 600 bytes", ["SPACE", "--study-name", "語" * 200],
     ["search.study_name '語", "600 bytes, over the 255"]),
])
def test_run_refuses_a_name_too_long_in_one_line_before_any_study(case: str, args: list[str], needles: list[str],
                                                                   tmp_path: Path) -> None:
    """As a user runs it: `python -m search.run` in a process of its own, nothing created."""
    space = write_space(tmp_path)
    argv = [str(space) if a == "SPACE" else a for a in args]
    proc = subprocess.run([sys.executable, "-m", "search.run", *argv], cwd=tmp_path, capture_output=True, text=True,
                          env=child_env(ROOT), timeout=300)
    assert_one_line_error(proc, *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == [space.name], "no results folder, no study"


@pytest.mark.parametrize(("args", "needles"), [
    (["--data-root", LONG], ["data.root 'xxx", "300 bytes"]),
    (["--set", f"data.cache_dir=cache/{LONG}"], ["data.cache_dir 'cache/xxx", "the name 'xxx", "300 bytes"]),
    (["--storage", "sqlite:///TMP/" + "x" * 250 + ".db"], ["storage file '/", "253 bytes, over the 243"]),
    (["--dry-run", "--storage", f"sqlite:///TMP/{LONG}/study.db"], ["storage file", "300 bytes"]),  # the dry run too
])
def test_run_measures_every_path_it_is_given(args: list[str], needles: list[str], tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    space = write_space(tmp_path)
    args = [a.replace("TMP", str(tmp_path)) for a in args]
    assert run.main([str(space), "--results-dir", str(tmp_path / "r"), *args]) == 2
    one_error(capsys, None, *needles)
    assert [p.name for p in tmp_path.iterdir()] == [space.name], "no results folder, no database"


@pytest.mark.parametrize(("args", "needles"), [
    (["report", LONG], ["results folder 'xxx", "300 bytes"]),
    (["report", "results/x", "--output", "x" * 240 + ".html"], ["--output", "245 bytes, over the 237"]),
    (["retrain", f"results/{LONG}"], ["results folder 'results/xxx", "the name 'xxx", "300 bytes"]),
    (["dashboard", LONG], ["results folder 'xxx", "300 bytes"]),
    (["export", LONG], ["SOURCE 'xxx", "300 bytes"]),
    (["predict", LONG, "--images", "x"], ["MODEL 'xxx", "300 bytes"]),
    (["predict", "model.pt", "--images", "ok", LONG], ["--images 'xxx", "300 bytes"]),
    (["predict", "model.pt", "--images", "x", "--output", LONG + ".csv"], ["--output 'xxx", "304 bytes"]),
])
def test_every_command_refuses_a_name_too_long_in_one_line(args: list[str], needles: list[str], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli_main.main(args) == 2
    one_error(capsys, None, *needles)
    assert list(tmp_path.iterdir()) == []


def test_any_other_name_too_long_is_one_line(capsys: pytest.CaptureFixture) -> None:
    """A path no check measured (a name composed from a number a user gave) still ends in one line, exit 2."""
    def fail() -> None:
        raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), f"r/retrain/00001/seed_{10**300}")

    assert main_guard(fail) == 2
    one_error(capsys, None, "a file or folder name in it is over 255 bytes, or the whole over 4,096",
              start="r/retrain/00001/seed_1000")
