"""Review commands find the study of the folder they are given, whatever it is named; printed commands are quoted."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from search import commands, runner
from search.review.results import open_results
from tests.helpers.errors import one_error


def copied(smoke_copy: Path, to: Path, *, with_name: bool = False) -> Path:
    """`cp -r results/smoke ELSEWHERE/copy` of a folder whose config.yaml does not name its study (an older one)."""
    shutil.copytree(smoke_copy, to)
    raw = yaml.safe_load((to / "config.yaml").read_text())
    if not with_name:
        raw["search"].pop("study_name", None)
    (to / "config.yaml").write_text(yaml.safe_dump(raw))
    return to


def test_report_on_a_copied_folder(smoke_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`cp -r results/smoke /elsewhere/copy; python -m search report /elsewhere/copy`: the copy's own study."""
    folder = copied(smoke_copy, tmp_path / "elsewhere" / "copy")
    assert commands.report_main([str(folder)]) == 0
    assert (folder / "report.html").is_file() and "Search report: smoke" in (folder / "report.html").read_text()
    assert open_results(folder).name == "smoke"


def test_several_studies_are_chosen_with_study_name(smoke_copy: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    folder = copied(smoke_copy, tmp_path / "copy")
    optuna.create_study(study_name="other", storage=f"sqlite:///{folder / 'study.db'}")
    assert commands.report_main([str(folder)]) == 2
    one_error(capsys, None, "holds 2 studies ('smoke', 'other'): choose one with --study-name")
    assert open_results(folder, study_name="smoke").name == "smoke"
    assert commands.report_main([str(folder), "--study-name", "nosuch"]) == 2
    one_error(capsys, None, "--study-name 'nosuch': no such study in sqlite:///")


def test_the_config_names_its_study_among_several(smoke_copy: Path, tmp_path: Path) -> None:
    """A config.yaml that records its study's name (run.py writes it) opens that study, however many there are."""
    folder = copied(smoke_copy, tmp_path / "copy", with_name=True)
    optuna.create_study(study_name="other", storage=f"sqlite:///{folder / 'study.db'}")
    assert open_results(folder).name == "smoke"


@pytest.mark.parametrize("storage", [None, "postgresql://me:secret@db host/s"])
def test_next_commands_are_shell_quoted(tmp_path: Path, storage: str | None) -> None:
    """Each printed command, split as a shell would, gives back the folder and the storage whole."""
    results = tmp_path / "my results" / "it's $HOME"
    url = storage or f"sqlite:///{results / 'study.db'}"
    lines = runner.next_commands(results, url, on_server=storage is not None).splitlines()[1:]
    words = [shlex.split(line.split("  #")[0]) for line in lines]
    py = os.path.realpath(sys.executable)  # the interpreter running the search, not a bare `python`
    assert [os.path.realpath(w[0]) for w in words] == [py] * 3
    assert [w[1:5] for w in words] == [["-m", "search", c, str(results)] for c in ("report", "dashboard", "retrain")]
    if storage:
        assert words[0][5:] == words[1][5:] == words[2][5:] == ["--storage", "postgresql://me:***@db host/s"]
