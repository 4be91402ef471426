"""Packaging: one console entry point, `python -m search`, the example spaces shipped with the package."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from search import SPACES_DIR, shipped_space
from search.__main__ import main
from tests.helpers.processes import child_env

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_package_and_ships_the_spaces() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    tools = cfg["tool"]["setuptools"]
    folders = {p.parent for top in ("blocks", "search") for p in (ROOT / top).rglob("*.py")}
    assert not [f for f in folders if not (f / "__init__.py").is_file()], "a folder of modules without __init__.py"
    found = {str(f.relative_to(ROOT)).replace("/", ".") for f in folders}
    assert {"search.data", "search.study", "search.review"} <= found
    assert found <= set(tools["packages"]), "a new sub-package must be added to [tool.setuptools] packages"
    assert tools["package-dir"]["search.spaces"] == "spaces" and "*.yaml" in tools["package-data"]["search.spaces"]
    assert cfg["project"]["scripts"]["resnet-search"] == "search.__main__:main"


def test_python_m_search_version_and_commands(capsys) -> None:
    env = child_env(ROOT)
    out = subprocess.run([sys.executable, "-m", "search", "--version"], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.startswith("resnet-budget-search ")
    assert main(["spaces"]) == 0
    listed = capsys.readouterr().out.split()
    assert {"smoke", "cifar10_5m", "cifar10_mcu", "tiny_26m"} <= set(listed)
    assert main(["nonsense"]) == 2 and "unknown command 'nonsense'" in capsys.readouterr().err
    assert shipped_space("smoke") == str(SPACES_DIR / "smoke.yaml") and shipped_space("x/y.yaml") == "x/y.yaml"


def test_a_child_process_keeps_dependencies_found_on_pythonpath(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the dependencies are unpacked into a folder on PYTHONPATH (the GPU machine: wheels in /tmp/site, no
    venv), the tests' `python -m search ...` children must still find them: replacing PYTHONPATH with the tree's
    root failed every such test there with a ModuleNotFoundError."""
    (tmp_path / "only_on_pythonpath.py").write_text("FOUND = 1\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    code = "import only_on_pythonpath, search; print(only_on_pythonpath.FOUND, search.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=child_env(ROOT), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    found, search_file = out.stdout.split()
    assert found == "1" and Path(search_file).is_relative_to(ROOT), "this tree's package first, the folder kept"


def test_dashboard_command_refuses_a_folder_without_a_study(tmp_path: Path, capsys) -> None:
    assert main(["dashboard", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: '{tmp_path / 'study.db'}' is missing")


@pytest.mark.parametrize("argv", [["run", "x.yaml", "--version"], ["retrain", "R", "--version"],
                                  ["predict", "x", "--version"], ["spaces", "--version"]])
def test_every_command_takes_version_after_its_arguments(argv: list[str], capsys) -> None:
    assert main(argv) == 0 and capsys.readouterr().out.startswith("resnet-budget-search ")


@pytest.mark.parametrize("argv, says, not_says", [
    (["spaces", "--help"], ["usage: resnet-search spaces", "shipped"], ["cifar10_5m.yaml"]),
    (["dashboard", "--help"], ["--port", "--host", "--server", "optuna-dashboard --help"], []),
    (["predict", "--help"], ["at most 50 megapixels", "images per forward pass", "where the models run"],
     ["MAX_PIXELS", "search.data.sources"])])
def test_help_describes_the_options(argv: list[str], says: list[str], not_says: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(argv)
    out = capsys.readouterr().out
    assert done.value.code == 0 and all(s in out for s in says) and not any(s in out for s in not_says)


def test_dashboard_passes_its_named_and_unknown_options_to_optuna_dashboard(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "study.db").touch()
    ran: list[list[str]] = []
    monkeypatch.setattr("search.__main__.os.execv", lambda exe, args: ran.append(args))
    main(["dashboard", str(tmp_path), "--port", "9000", "--host", "0.0.0.0", "--quiet", "--allow-unsafe"])
    assert ran[0][1:] == [f"sqlite:///{tmp_path / 'study.db'}", "--artifact-dir", str(tmp_path / "artifacts"),
                          "--port", "9000", "--host", "0.0.0.0", "--quiet", "--allow-unsafe"]


@pytest.mark.parametrize("argv", [["run"], ["run", "x.yaml", "--n-trials", "many"], ["retrain", "--bogus", "r"],
                                  ["predict"], ["export", "--runtime", "y", "r"], ["report", "r", "--epochs", "3"],
                                  ["dashboard"], ["spaces", "--x"]])
def test_a_usage_mistake_is_one_line(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    """argparse's own errors (a missing argument, an unknown flag, a value of the wrong type) are one line and exit
    2 like every other bad input: argparse printed its usage block, up to ten lines, before the line that mattered."""
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and err.endswith(f"(see 'resnet-search {argv[0]} --help')\n")


def test_a_usage_mistake_in_python_m_blocks_is_one_line(capsys: pytest.CaptureFixture) -> None:
    from blocks.__main__ import main as blocks_main

    with pytest.raises(SystemExit) as stopped:
        blocks_main(["--width", "3"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == "error: unrecognized arguments: --width (see 'python -m blocks --help')\n"
