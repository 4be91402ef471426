"""Config input at its limits: hostile YAML, non-finite and oversized values, odd names, every entry point's
--version. Each is one line and exit status 2 before any study exists (round 3 of the bad-input review)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from blocks.__main__ import main as blocks_main
from search import run
from search.__main__ import main as search_main
from search.cli import LINE_MAX, bounded
from search.config import load_config
from search.errors import shown
from search.yaml_load import MAX_NODES
from tests.helpers.datasets import make_imagefolder
from tests.helpers.errors import one_error
from tests.helpers.hostile import fifo_watch
from tests.helpers.spaces import SPACE, write_space
from tests.helpers.studies import assert_one_line_error, cli


def assert_refused(tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], expected: str) -> str:
    """run.main(args) is exit 2 with one short `error:` line holding `expected`, and no study exists."""
    assert run.main([*args, "--results-dir", str(tmp_path / "r")]) == 2
    line = one_error(capsys, None, expected)
    assert len(line) < 600, "echoed values are cut"
    assert not list(tmp_path.rglob("study.db")), "no study is created from bad input"
    return line


def _text() -> str:
    return yaml.safe_dump(json.loads(json.dumps(SPACE)), sort_keys=False)


BOMB = ("  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
        + "".join(f"  {c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)))
TEXTS = {  # name: (the YAML file's text, what the one line must say)
    "nested 3000 levels": (_text() + "storage: " + "[" * 3000 + "]" * 3000 + "\n", "nested more than 64 levels"),
    "nested mappings": (_text() + "storage: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n", "nested more than 64 levels"),
    "billion laughs under storage": (_text() + "storage:\n" + BOMB, f"expands to more than {MAX_NODES:,} values"),
    "alias inside its own anchor": (_text() + "storage: &s [1, *s]\n", "an alias refers to the value that contains it"),
    "10 MB study name": (_text().replace("search:\n", "search:\n  study_name: " + "n" * 10_000_000 + "\n"),
                         "bytes, over the 1,048,576 a config may hold"),
    "NUL in the study name": (_text().replace("search:\n", 'search:\n  study_name: "a\\0b"\n'),
                              "search.study_name 'a\\x00b': expected a plain name"),
}


@pytest.mark.parametrize("case", sorted(TEXTS))
def test_hostile_yaml_is_one_line(case: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    text, expected = TEXTS[case]
    (tmp_path / "space.yaml").write_text(text)
    assert_refused(tmp_path, capsys, [str(tmp_path / "space.yaml")], expected)


def test_second_budget_section_names_both_lines(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    lines = _text().splitlines()
    first = lines.index("budget:") + 1
    (tmp_path / "space.yaml").write_text("\n".join([*lines, "budget:", "  params: 7000"]) + "\n")
    assert_refused(tmp_path, capsys, [str(tmp_path / "space.yaml")],
                   f"space.yaml: line {len(lines) + 1}: duplicate key 'budget' (first at line {first})")


def test_second_epochs_names_both_lines(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    lines = _text().splitlines()
    first = lines.index("  epochs: 3") + 1
    lines.insert(first, "  epochs: 2")
    (tmp_path / "space.yaml").write_text("\n".join(lines) + "\n")
    assert_refused(tmp_path, capsys, [str(tmp_path / "space.yaml")],
                   f"space.yaml: line {first + 1}: duplicate key 'epochs' (first at line {first})")


def test_a_merged_key_may_still_be_overridden(tmp_path: Path) -> None:
    """`<<: *base` then the same key: YAML's override, not a duplicate."""
    path = tmp_path / "space.yaml"
    path.write_text(_text() + "retrain:\n  <<: &r {epochs: 5, seeds: 2}\n  epochs: 7\n")
    cfg = load_config(path)
    assert (cfg.retrain.epochs, cfg.retrain.seeds) == (7, 2)


def test_1e_minus_3_is_a_float(tmp_path: Path) -> None:
    """YAML 1.1 (PyYAML) reads `1e-3` as a string; a user means the number, in the file and in --set."""
    path = tmp_path / "space.yaml"
    path.write_text(_text().replace("schedule: constant", "schedule: constant\n  weight_decay: 5e-4"))
    cfg = load_config(path, ["train.lr={float: [1e-3, 2E-1], log: true}", "train.momentum=9e-1"])
    assert cfg.train["weight_decay"] == 5e-4 and cfg.train["momentum"] == 0.9
    assert (cfg.train["lr"].low, cfg.train["lr"].high) == (1e-3, 0.2)
    assert load_config(path, [], ["search.study_name=1e3"]).study_name == "1e3"  # names stay as typed


def test_an_empty_section_takes_set_keys(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(_text() + "retrain:\n")
    assert load_config(path, ["retrain.epochs=7"]).retrain.epochs == 7


def test_first_image_of_1_px_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_imagefolder(tmp_path / "images", classes=2, per_class=4, size=(1, 1))
    args = [str(write_space(tmp_path)), "--set", "data.dataset=imagefolder", "--data-root", str(root)]
    assert_refused(tmp_path, capsys, args, "is 1 px on its shorter side, under the 8 px minimum; set data.image_size")


BASELINE_TRAIN = {  # a baseline's fixed train value that Optuna cannot enqueue: (value, what the line says)
    "lr": (-1, "train.lr -1: expected a positive number (it is searched on a log range [0.05, 0.2])"),
    "optimizer": ("adam", "train.optimizer 'adam': expected one of sgd, adamw"),
    "augment_policy": ("strong", "train.augment_policy 'strong': expected one of flip, none"),
}


@pytest.mark.parametrize("key", sorted(BASELINE_TRAIN))
def test_baseline_value_optuna_refuses(key: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    value, expected = BASELINE_TRAIN[key]
    raw = {**json.loads(json.dumps(SPACE)), "augment": {"policies": {"flip": [{"HorizontalFlip": {"p": 0.5}}], "none": []}},
           "baselines": [{"name": "hand", "stages": 1, "blocks": [1], "train": {key: value}}]}
    raw["train"]["optimizer"] = {"choice": ["sgd", "adamw"]}
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(raw))
    assert_refused(tmp_path, capsys, [str(space)], f"space.yaml: baselines: 'hand': {expected}")


@pytest.mark.parametrize("entry", [["nosuch"], ["run", "nosuch"]])
def test_unknown_space_lists_the_shipped_ones(entry: list[str], tmp_path: Path, capsys: pytest.CaptureFixture,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert (run.main(entry) if entry[0] != "run" else search_main(entry)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: nosuch: no such file, nor a shipped space (shipped: cifar10_5m, cifar10_mcu, smoke, tiny_26m")
    assert len(err.splitlines()) == 1


def test_a_fifo_as_the_yaml_is_one_line_at_once(tmp_path: Path) -> None:
    """`search.run <(cat x.yaml)` or a FIFO by name: refused at once for what it is, never waited on (it could be
    read only once; --workers and every rerun read the YAML again); it was `no such file`."""
    os.mkfifo(tmp_path / "space.yaml")
    with fifo_watch(tmp_path / "space.yaml") as blocked:  # a reader waiting on it would fail the test, not hang it
        proc = cli("space.yaml", "--dry-run", cwd=tmp_path)
    assert_one_line_error(proc, "error: space.yaml: cannot read the YAML: not a regular file (a FIFO); give the "
                                "YAML as a file")
    assert not blocked and sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]


def test_a_folder_as_the_yaml_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "space.yaml").mkdir()
    assert_refused(tmp_path, capsys, [str(tmp_path / "space.yaml")], "cannot read the YAML: not a regular file (a "
                                                                      "folder)")


@pytest.mark.parametrize("entry", ["search.run", "search", "search report", "search retrain", "search predict",
                                   "search dashboard", "blocks"])
def test_version_on_every_entry_point(entry: str, capsys: pytest.CaptureFixture) -> None:
    module, *command = entry.split()
    main = {"search.run": run.main, "search": search_main, "blocks": blocks_main}[module]
    try:
        status = main([*command, "--version"])
    except SystemExit as e:  # argparse's version action exits
        status = e.code
    assert status in (0, None) and capsys.readouterr().out.startswith("resnet-budget-search ")


def test_echoed_values_and_error_lines_are_bounded() -> None:
    assert len(shown("x" * 10_000_000)) <= 120 and shown("sgd") == "'sgd'"
    nested: list = [1] * 10
    for _ in range(6):
        nested = [nested] * 10  # 10 million leaves, never walked whole
    assert len(shown(nested)) <= 120
    line = "a" * 5000 + " expected b"
    assert len(bounded(line)) <= LINE_MAX + 5 and bounded(line).endswith("expected b") and bounded("x") == "x"


@pytest.mark.parametrize("override", ["train.epochs=1000000000000", "retrain.epochs=10001",
                                      "train.epochs={int: [5, 100000]}"])
def test_epochs_are_bounded_at_load(override: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "space.yaml").write_text(_text())
    assert_refused(tmp_path, capsys, [str(tmp_path / "space.yaml"), "--set", override], "at most 10,000")


def test_retrain_epochs_are_bounded_before_the_study_is_read(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert search_main(["retrain", str(tmp_path / "nowhere"), "--epochs", "1000000000000"]) == 2
    assert capsys.readouterr().err.strip() == "error: --epochs 1,000,000,000,000: expected 1 to 10,000"
