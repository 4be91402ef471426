"""The benchmark suite: every script imports and answers --help, and the harness records what a run needs
(machine, commit, side-by-side figures) as JSON. Nothing here times anything for real."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import harness
from tests.helpers.spaces import ROOT

SCRIPTS = sorted(p for p in (ROOT / "benchmarks").rglob("*.py")  # every module with a command line
                 if 'if __name__ == "__main__":' in p.read_text())
MACHINE_KEYS = {"cpu", "cores", "avx512", "avx512_bf16", "amx_bf16", "gpu", "torch", "threads", "python",
                "load_average"}


def module_name(path: Path) -> str:
    """benchmarks/experiments/bench_x.py -> benchmarks.experiments.bench_x"""
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def test_the_suite_has_its_scripts() -> None:
    names = {module_name(p) for p in SCRIPTS}
    assert {"benchmarks.bench_speed", "benchmarks.bench_separable", "benchmarks.experiments.bench_mcu", "benchmarks.harness",
            "benchmarks.experiments.bench_search_vs_baselines"} <= names


@pytest.mark.parametrize("path", SCRIPTS, ids=module_name)
def test_every_script_imports_and_answers_help(path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert "sys.path.insert" not in path.read_text(), "run as `python -m benchmarks.<name>`, not by editing sys.path"
    module = importlib.import_module(module_name(path))
    monkeypatch.setattr(sys, "argv", [path.name, "--help"])
    with pytest.raises(SystemExit) as done:
        module.main()
    assert done.value.code == 0 and capsys.readouterr().out.startswith("usage:")


def test_bench_mcu_runs_from_the_root_without_the_tree_on_pythonpath() -> None:
    """Long runs start `python -m benchmarks.experiments.bench_mcu` from the repository root, no PYTHONPATH set."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-m", "benchmarks.experiments.bench_mcu", "--help"], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("usage:"), out.stderr


def test_a_fresh_machine_s_retrain_resumes_from_the_committed_seeds(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Seeds whose weights the snapshot holds go into the results folder (retrain then only tests them); a seed
    without weights, another recipe's seeds, and a seed the results folder already has are left alone."""
    from benchmarks.experiments import bench_mcu

    kept = tmp_path / "snapshot" / "retrain"
    for seed, files in {"search_winner/seed_0": ("metrics.json", "model.pt", "curves.csv"),
                        "search_winner/seed_1": ("metrics.json",),  # figures only: must be retrained
                        "search_winner/seed_2": ("metrics.json", "model.pt"),
                        "search_winner/seed_3": ("run.json", "train_state.pt"),  # stopped at a session's end
                        "search_winner_60ep/seed_0": ("metrics.json", "model.pt")}.items():
        (kept / seed).mkdir(parents=True)
        for name in files:
            (kept / seed / name).write_text(f"{seed}/{name}")
    folder = tmp_path / "results" / "cifar10_mcu"
    (folder / "retrain" / "00026" / "seed_2").mkdir(parents=True)
    (folder / "retrain" / "00026" / "seed_2" / "model.pt").write_text("trained here")
    monkeypatch.setattr(bench_mcu, "SNAPSHOT", tmp_path / "snapshot")

    bench_mcu.restore_seeds(folder, {26: "search winner"})

    run = folder / "retrain" / "00026"
    assert sorted(p.name for p in (run / "seed_0").iterdir()) == ["curves.csv", "metrics.json", "model.pt"]
    assert (run / "seed_0" / "model.pt").read_text() == "search_winner/seed_0/model.pt"
    assert not (run / "seed_1").exists()
    assert (run / "seed_2" / "model.pt").read_text() == "trained here"
    assert not (run / "seed_2" / "metrics.json").exists()
    assert sorted(p.name for p in (run / "seed_3").iterdir()) == ["run.json", "train_state.pt"]


def test_the_snapshot_keeps_an_unfinished_seed_s_state_until_it_finishes(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks.experiments import bench_mcu

    folder, kept = tmp_path / "results" / "cifar10_mcu", tmp_path / "snapshot" / "retrain" / "search_winner"
    for seed, files in {"seed_0": ("metrics.json", "model.pt", "train_state.pt"), "seed_1": ("run.json", "train_state.pt")}.items():
        (folder / "retrain" / "00026" / seed).mkdir(parents=True)
        for name in files:
            (folder / "retrain" / "00026" / seed / name).write_text(f"{seed}/{name}")
    (kept / "seed_0").mkdir(parents=True)
    (kept / "seed_0" / "train_state.pt").write_text("the last session's state")
    monkeypatch.setattr(bench_mcu, "SNAPSHOT", tmp_path / "snapshot")
    monkeypatch.setattr(bench_mcu, "contenders", lambda folder: {26: "search winner"})

    bench_mcu._snapshot(folder)

    assert sorted(p.name for p in (kept / "seed_0").iterdir()) == ["metrics.json", "model.pt"]
    assert (kept / "seed_1" / "train_state.pt").read_text() == "seed_1/train_state.pt"


def snapshot_seeds(tmp_path: Path, files: dict[str, str]) -> None:
    """Seed folders under tmp_path/snapshot/retrain, each with one file (an empty JSON document)."""
    for seed, name in files.items():
        (tmp_path / "snapshot" / "retrain" / seed).mkdir(parents=True)
        (tmp_path / "snapshot" / "retrain" / seed / name).write_text("{}")


def test_the_table_lists_a_retrained_runner_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A runner-up retrained in an earlier session (its seeds in the snapshot only) has a row, as each recipe does."""
    from benchmarks.experiments import bench_mcu

    snapshot_seeds(tmp_path, {"search_winner/seed_0": "metrics.json", "baseline_resnet8_240ep/seed_0": "metrics.json",
                              "search_rank_2/seed_0": "metrics.json"})
    seen: list[tuple[int, ...]] = []

    def contenders(folder: Path, ranks: tuple[int, ...] = ()) -> dict[int, str]:
        seen.append(ranks)
        return {26: "search winner", 0: "baseline resnet8", **({16: "search rank 2"} if 2 in ranks else {})}

    monkeypatch.setattr(bench_mcu, "SNAPSHOT", tmp_path / "snapshot")
    monkeypatch.setattr(bench_mcu, "contenders", contenders)

    rows = [(label, suffix, number) for label, suffix, number, _ in bench_mcu.retrained(tmp_path / "results")]

    assert seen == [(2,)]
    assert rows == [("search winner", "", 26), ("baseline resnet8", "_240ep", 0), ("search rank 2", "", 16)]


def test_side_by_side_alternates_and_takes_medians() -> None:
    calls: list[str] = []

    def timer(name: str, figures: list[float]):  # type: ignore[no-untyped-def]
        it = iter(figures)
        return lambda: calls.append(name) or next(it)

    r = harness.side_by_side({"old": timer("old", [1.0, 9.0, 3.0]), "new": timer("new", [2.0, 6.0, 4.0])}, 3)
    assert calls == ["old", "new"] * 3  # alternating: load that comes and goes hits both alike
    assert r.medians() == {"old": 3.0, "new": 4.0} and r["new"] == 4.0 and r.ratio("new", "old") == pytest.approx(4 / 3)
    assert r.figures() == {"median": {"old": 3.0, "new": 4.0}, "rounds": {"old": [1.0, 9.0, 3.0], "new": [2.0, 6.0, 4.0]}}


def test_clock_calls_repeat_times_then_syncs_once() -> None:
    log: list[str] = []
    seconds = harness.clock(lambda: log.append("call"), 4, sync=lambda: log.append("sync"))
    assert log == ["call"] * 4 + ["sync"] and seconds >= 0


def test_record_writes_machine_commit_and_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(harness, "RESULTS", tmp_path)
    r = harness.side_by_side({"old": lambda: 2.0, "new": lambda: 3.0}, 1)
    path = harness.record("bench_tiny", {"step": r.figures(), "ratio": r.ratio("new", "old")})
    rev = harness.commit()
    assert path == tmp_path / f"bench_tiny-{rev}.json" and capsys.readouterr().out == f"wrote {path}\n"
    doc = json.loads(path.read_text())
    assert set(doc["machine"]) == MACHINE_KEYS and doc["machine"]["cores"] == os.cpu_count()
    assert doc["bench"] == "bench_tiny" and doc["commit"] == rev.rstrip("+") and doc["dirty"] == rev.endswith("+")
    assert doc["figures"] == {"step": {"median": {"old": 2.0, "new": 3.0}, "rounds": {"old": [2.0], "new": [3.0]}},
                              "ratio": 1.5}
    assert harness.describe(doc["machine"]).startswith(doc["machine"]["cpu"])
    later = {**doc, "figures": {**doc["figures"], "ratio": 3.0}}
    assert harness.compare(doc, later) == ["figures/ratio: 1.5 -> 3.0  (2.00x)"]


def test_commit_is_marked_dirty_by_code_but_not_by_benchmark_outputs(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path,
                              capture_output=True, text=True, check=True).stdout.strip()

    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    for name in ("code.py", "benchmarks/results/a.json"):
        (tmp_path / name).write_text("1")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "c")
    monkeypatch.setattr(harness, "ROOT", tmp_path)
    rev = git("rev-parse", "--short", "HEAD")
    (tmp_path / "benchmarks" / "results" / "a.json").write_text("2")
    assert harness.commit() == rev
    (tmp_path / "code.py").write_text("2")
    assert harness.commit() == rev + "+"
    monkeypatch.setattr(harness, "ROOT", tmp_path / "benchmarks" / "results" / "nowhere")
    assert harness.commit() == "unknown"


def test_a_seed_still_training_adds_nothing_to_its_recipes_cpu_hours() -> None:
    from benchmarks.experiments.bench_mcu import retrain_cost

    def seg(seeds: int, cpu_s: float, **kw: object) -> dict:
        return {"label": "retrain search winner 240ep", "cmd": ["search", "retrain", "--seeds", str(seeds)],
                "cpu_s": cpu_s, "exit": 0, **kw}

    costs = [seg(1, 3600.0), seg(1, 7200.0), seg(2, 1800.0), {**seg(1, 99.0), "label": "retrain search winner"}]
    assert retrain_cost(costs, "retrain search winner 240ep", finished=1) == (3.0, 1)  # seed 1 still training
    assert retrain_cost(costs, "retrain search winner 240ep", finished=2) == (3.5, 2)  # seed 1 done: its segment counts
    rederived = [*costs, seg(2, 1800.0, rederive=True)]  # seed 1 trained again with its weights kept
    assert retrain_cost(rederived, "retrain search winner 240ep", finished=2) == (4.0, 3)


def test_a_recipe_still_training_has_no_table_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks.experiments import bench_mcu

    snapshot_seeds(tmp_path, {"baseline_resnet8/seed_0": "metrics.json", "baseline_resnet8_120ep/seed_0": "metrics.json",
                              "baseline_resnet8_240ep/seed_0": "train_state.pt"})
    monkeypatch.setattr(bench_mcu, "SNAPSHOT", tmp_path / "snapshot")
    monkeypatch.setattr(bench_mcu, "contenders", lambda folder, ranks=(): {0: "baseline resnet8"})

    rows = [(label, suffix, [s.parent.name for s in seeds]) for label, suffix, _, seeds in bench_mcu.retrained(tmp_path)]

    assert rows == [("baseline resnet8", "", ["baseline_resnet8"]), ("baseline resnet8", "_120ep", ["baseline_resnet8_120ep"])]


def test_the_plateau_is_the_first_recipe_whose_doubling_adds_under_0_3_points() -> None:
    from benchmarks.experiments.bench_mcu import plateau_lines

    climbing = {"baseline resnet8": {30: [0.8396], 60: [0.8497], 120: [0.8576], 240: [0.8616]}}
    flat = {"baseline resnet8": {30: [0.84], 60: [0.85], 120: [0.8560], 240: [0.8575], 480: [0.8580]},
            "search winner": {30: [0.8660, 0.8604, 0.8688]}}  # one recipe: no doubling, no line

    assert plateau_lines(climbing) == ["baseline resnet8: test top-1 per doubling of the epochs 30 -> 60 +1.01, "
                                       "60 -> 120 +0.79, 120 -> 240 +0.40: NOT at its plateau by 240 epochs "
                                       "(each doubling added 0.3 points or more)"]
    assert plateau_lines(flat)[0].endswith("60 -> 120 +0.60, 120 -> 240 +0.15, 240 -> 480 +0.05: plateau at 120 epochs "
                                           "(doubling them added less than 0.3 points)")
    assert len(plateau_lines(flat)) == 1


def test_the_winner_is_compared_with_each_design_at_its_own_longer_recipe() -> None:
    from benchmarks.experiments.bench_mcu import same_recipe_lines

    recipes = {"search winner": {30: [0.8660, 0.8604, 0.8688], 240: [0.8750]},
               "baseline resnet8": {30: [0.8386, 0.8392, 0.8409], 240: [0.8616], 480: [0.8640]},
               "baseline resnet14": {30: [0.8455, 0.8423, 0.8501]}}

    lines = same_recipe_lines(recipes, shipped=30)

    # only the pair at 240 epochs: the shipped recipe has its own lines, nobody else reached 480 with the winner
    assert lines == ["search winner - baseline resnet8, both 240 epochs: +1.34 points of test top-1; twice the "
                     "larger seed std is 0.86 (one seed each: the winner's std at 30 epochs stands in): beats it "
                     "by that test"]
    recipes["search winner"][240] = [0.8650]
    assert same_recipe_lines(recipes, shipped=30)[0].startswith("search winner - baseline resnet8, both 240 epochs: "
                                                                "+0.34 points")
    assert same_recipe_lines(recipes, shipped=30)[0].endswith("does NOT beat it by that test")
    recipes["search winner"][240] = [0.8650, 0.8700]  # seeds of its own: their std, not the stand-in
    assert "twice the larger seed std is 0.71 (2 seed(s) of the winner, 1 of baseline resnet8):" in \
        same_recipe_lines(recipes, shipped=30)[0]
    recipes["baseline resnet8"][240] = [0.8616, 0.8600]  # seeds of both: no note
    assert "twice the larger seed std is 0.71: " in same_recipe_lines(recipes, shipped=30)[0]


def test_int8_only_runs_the_named_designs_at_the_named_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`int8 --only 'search winner' --epochs 240` measures the newly exported file and leaves every other one as is."""
    import argparse

    from benchmarks.experiments import bench_mcu

    snapshot_seeds(tmp_path, {f"{design}/seed_0": "model_int8.tflite" for design in
                              ("search_winner", "search_winner_240ep", "baseline_resnet8_240ep", "baseline_resnet8")})
    monkeypatch.setattr(bench_mcu, "SNAPSHOT", tmp_path / "snapshot")

    def files(only: list[str] | None, epochs: int | None) -> list[str]:
        return [p.parent.parent.name for p in bench_mcu.int8_files(argparse.Namespace(only=only, epochs=epochs))]

    assert files(["search winner"], 240) == ["search_winner_240ep"]
    assert files(["search winner", "baseline resnet8"], None) == ["baseline_resnet8", "search_winner"]
    assert files(["baseline resnet14"], 240) == []
    assert files(None, None) == ["baseline_resnet8", "baseline_resnet8_240ep", "search_winner", "search_winner_240ep"]
