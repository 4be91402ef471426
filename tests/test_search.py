"""End-to-end search on generated data, resume, budgets, rules and one-line config errors."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml

from blocks import ArchSpec, complexity
from search import run
from search.config import load_config
from search.rules import arch_violation, module_violation
from search.space import MIN_WIDTH, fill_widths, sample, solve_width
from search.trials import REJECTED
from tests.helpers.spaces import PRUNING_SPACE, write_space
from tests.helpers.studies import cli

ROOT = Path(__file__).resolve().parents[1]
S = optuna.trial.TrialState

@pytest.fixture(scope="module")
def pruning_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, optuna.Study]:
    """A finished smoke search of 5 trials in a temporary results folder."""
    tmp = tmp_path_factory.mktemp("search")
    path = write_space(tmp, base=PRUNING_SPACE)
    assert run.main([str(path), "--results-dir", str(tmp / "results")]) == 0
    results = tmp / "results" / "space"
    assert not (results / "study.db-wal").exists(), "the search closed its connections: study.db is whole"
    study = optuna.load_study(study_name="space", storage=f"sqlite:///{results / 'study.db'}")
    return results, study


def test_search_end_to_end(pruning_study: tuple[Path, optuna.Study]) -> None:
    results, study = pruning_study
    trials = study.get_trials()
    finished = [t for t in trials if t.state in (S.COMPLETE, S.PRUNED) and REJECTED not in t.user_attrs]
    assert len(finished) == 5
    complete = [t for t in trials if t.state == S.COMPLETE]
    pruned = [t for t in trials if t.state == S.PRUNED and REJECTED not in t.user_attrs]
    assert complete and pruned, "the space is built so that some trials complete and some are pruned"
    assert max(t.value for t in complete) > 0.3  # synthetic data is learnable: well above 10% chance
    for t in complete + pruned:
        a = t.user_attrs
        assert 0 < a["params"] <= 20_000
        spec = ArchSpec.from_dict(a["arch"])
        cx = complexity(spec)
        assert (cx.params, cx.flops, cx.receptive_field) == (a["params"], a["flops"], a["receptive_field"])
        assert spec.width % MIN_WIDTH == 0
        record = json.loads((results / "trials" / f"{t.number:05d}.json").read_text())
        assert record["arch"] == a["arch"] and record["seed"] == a["seed"]
        assert [e["val_acc"] for e in record["epochs"]] == pytest.approx(a["val_acc_curve"], abs=1e-5)
        assert len(record["epochs"]) == len(t.intermediate_values)
    for t in pruned:
        assert len(t.intermediate_values) < 3  # stopped before its last epoch
    assert (results / "study.db").is_file()
    assert yaml.safe_load((results / "config.yaml").read_text())["budget"]["params"] == 20_000
    assert not list((results / "checkpoints").glob("*.pt")), "finished trials leave no checkpoint"


def test_rerun_resumes_and_only_runs_what_is_left(pruning_study: tuple[Path, optuna.Study], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    results, study = pruning_study
    before = {t.number: (t.state, t.values) for t in study.get_trials()}
    path = write_space(results.parent.parent, base=PRUNING_SPACE)
    assert run.main([str(path), "--results-dir", str(results.parent)]) == 0
    assert "nothing to run" in capsys.readouterr().out
    assert len(study.get_trials()) == len(before)
    assert run.main([str(path), "--results-dir", str(results.parent), "--n-trials", "6"]) == 0
    after = study.get_trials()
    counted = [t for t in after if t.state in (S.COMPLETE, S.PRUNED) and REJECTED not in t.user_attrs]
    assert len(counted) == 6
    assert {t.number: (t.state, t.values) for t in after if t.number in before} == before
    assert not [t for t in after if t.state == S.RUNNING]


def test_solved_width_is_the_widest_that_fits() -> None:
    d = {"stages": 3, "blocks": [2, 1, 1], "kernel": 3, "num_classes": 10, "input_size": 32}
    for budget in (50_000, 400_000, 5_000_000):
        w = solve_width(d, budget, None)
        assert w % MIN_WIDTH == 0
        assert complexity(ArchSpec.from_dict({**d, "width": w})).params <= budget
        assert complexity(ArchSpec.from_dict({**d, "width": w + MIN_WIDTH})).params > budget
    assert solve_width(d, 1_000, None) is None


def test_real_spaces_sample_only_trainable_architectures() -> None:
    """Sampled shapes of the shipped spaces fit their budgets and rules (or are rejected with a reason)."""
    for name, classes, size in (("cifar10_5m", 10, 32), ("tiny_26m", 200, 64)):
        cfg = load_config(ROOT / "spaces" / f"{name}.yaml")
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
        utilisation, rejected = [], 0
        for _ in range(40):
            trial = study.ask()
            arch, _, reason = sample(trial, cfg, classes, size)
            if reason is None:
                spec = ArchSpec.from_dict(arch)
                reason = arch_violation(spec, complexity(spec), cfg)
            if reason is not None:
                rejected += 1
                study.tell(trial, state=S.PRUNED)
                continue
            params = complexity(spec).params
            assert params <= cfg.budget.params
            utilisation.append(params / cfg.budget.params)
            study.tell(trial, 0.0)
        assert rejected <= 20, f"{name}: {rejected} of 40 samples rejected"
        assert sorted(utilisation)[len(utilisation) // 2] >= 0.97, f"{name}: filled widths should use the budget"


def test_filled_widths_leave_no_stage_room_to_grow() -> None:
    """fill_widths: multiples of 8, never shrinking, within budget, and 8 more channels in any stage break it."""
    d = {"stages": 4, "blocks": [5, 3, 2, 1], "kernel": 3, "pool": 4, "num_classes": 10, "input_size": 32}
    for budget in (150_000, 5_000_000):
        filled = fill_widths(d, budget, None)
        widths = filled["widths"]
        assert filled["width"] == widths[0] and all(w % MIN_WIDTH == 0 for w in widths)
        assert list(widths) == sorted(widths)
        doubled = complexity(ArchSpec.from_dict({**d, "width": solve_width(d, budget, None)})).params
        params = complexity(ArchSpec.from_dict(filled)).params
        assert doubled < params <= budget
        for i in range(4):
            wider = list(widths)
            wider[i] += MIN_WIDTH
            assert complexity(ArchSpec.from_dict({**filled, "widths": wider})).params > budget
    assert fill_widths(d, 1_000, None) is None


def test_tiny_rules_reject_what_breaks_them() -> None:
    cfg = load_config(ROOT / "spaces" / "tiny_26m.yaml")
    ok = ArchSpec.from_dict({"stages": 4, "blocks": 2, "width": 64, "skip_kernel": 3, "head": "conv",
                             "num_classes": 200, "input_size": 64})
    assert arch_violation(ok, complexity(ok), cfg) is None
    assert module_violation(__import__("blocks").build(ok), cfg) is None
    cases = {
        "head": ok.replace(head="linear"),
        "widening": ok.replace(skip_kernel=1),
        "dropout": ok.replace(dropout=0.2),
        "receptive field": ok.replace(stages=1, blocks=[1], kernel=1, skip_kernel=1, stem="cifar"),
        "budget": ok.replace(width=512),
    }
    for what, spec in cases.items():
        reason = arch_violation(spec, complexity(spec), cfg)
        assert reason is not None, what
    from blocks import build

    assert "fully connected" in module_violation(build(ok.replace(head="linear")), cfg)
    assert "dropout" in module_violation(build(ok.replace(dropout=0.2)), cfg)
    assert "1x1" in module_violation(build(ok.replace(skip_kernel=1)), cfg)


BAD_CONFIGS = {
    "unknown key": ({"search": {"n_trails": 3}}, "search.n_trails: unknown key"),
    "wrong type": ({"train": {"epochs": "many"}}, "train.epochs"),
    "unknown transform": ({"augment": [{"HorizontalFlipp": {"p": 0.5}}]}, "HorizontalFlipp"),
    "impossible budget": ({"budget": {"params": 100}}, "below the smallest network"),
    "missing dataset": ({"data": {"dataset": "cifar10", "root": "nowhere", "download": False}}, "cifar10"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_is_one_clear_line(case: str, tmp_path: Path) -> None:
    change, expected = BAD_CONFIGS[case]
    space = json.loads(json.dumps(PRUNING_SPACE))
    for section, values in change.items():
        if isinstance(values, dict) and isinstance(space.get(section), dict):
            space[section] = {**space[section], **values}
            if section == "data" and values.get("dataset") == "cifar10":
                space[section] = values
        else:
            space[section] = values
    path = write_space(tmp_path, base=space)
    out = cli(str(path), "--results-dir", str(tmp_path / "results"), cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert expected in lines[0]
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "results" / "space" / "study.db").exists(), "no study is created from bad input"


def _run_curve(study: optuna.Study, curve: list[tuple[int, float]], native: int = 64) -> int | None:
    """Feed (image size, val_acc) per epoch through the objective's pruner reporting; the epoch pruned at, or None."""
    from search.objective import report_epoch
    from search.trainer import EpochResult

    trial = study.ask()
    for epoch, (size, acc) in enumerate(curve, start=1):
        if report_epoch(trial, EpochResult(epoch, 1.0, acc, 1.0, acc, 0.1, size, 0.0), native, len(curve)):
            study.tell(trial, state=S.PRUNED)
            return epoch
    study.tell(trial, curve[-1][1])
    return None


def test_progressive_trial_is_judged_at_native_size_only() -> None:
    """A 16->32->64 px trial is not pruned by a fixed 64 px trial that is no better at 64 px, but is when worse."""
    cfg = load_config(ROOT / "spaces" / "tiny_26m.yaml", ["search.pruner_startup_trials=1",
                                                         "search.pruner_warmup_epochs=0"])
    from search.study.study import make_pruner

    fixed = [(64, a) for a in (0.30, 0.40, 0.45, 0.50, 0.55, 0.60)]
    low_res = [(16, 0.10), (16, 0.12), (32, 0.20), (32, 0.25)]
    for native_accs, pruned_at in (((0.56, 0.61), None), ((0.50, 0.52), 5)):
        study = optuna.create_study(direction="maximize", pruner=make_pruner(cfg))
        assert _run_curve(study, fixed) is None
        progressive = low_res + [(64, a) for a in native_accs]
        assert _run_curve(study, progressive) == pruned_at
        reported = study.get_trials()[1].intermediate_values
        assert sorted(reported) == list(range(5, 5 + len(reported)))  # only the 64 px epochs reached the pruner


def test_latency_budget_rejects_by_a_probe_and_trials_record_their_cost(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_probe(model, size, batch, device, amp) -> float:  # ms grows with params: no clock involved
        calls.append(batch)
        return sum(p.numel() for p in model.parameters()) / 1000 * (1 + batch / 256)

    monkeypatch.setattr("search.objective.latency_ms", fake_probe)
    space = {**PRUNING_SPACE, "budget": {"params": 20_000, "latency_ms": 8.0, "latency_batch": 8},
             "train": {**PRUNING_SPACE["train"], "lr": 0.1, "epochs": 1},
             "search": {**PRUNING_SPACE["search"], "n_trials": 3, "pruner": "none"}}
    assert run.main([str(write_space(tmp_path, base=space)), "--results-dir", str(tmp_path / "r")]) == 0
    study = optuna.load_study(study_name="space", storage=f"sqlite:///{tmp_path / 'r' / 'space' / 'study.db'}")
    slow = [t for t in study.trials if "latency" in t.user_attrs.get(REJECTED, "")]
    done = [t for t in study.trials if t.state == S.COMPLETE]
    assert slow and len(done) == 3 and 8 in calls
    assert all(t.user_attrs["probe_latency_ms"] > 8.0 and "epoch_times_s" not in t.user_attrs for t in slow)
    for t in done:
        assert t.user_attrs["probe_latency_ms"] <= 8.0 and t.user_attrs["train_images_per_s"] > 0
        assert t.user_attrs["latency_ms_batch256"] == round(2 * t.user_attrs["params"] / 1000, 3)
        assert t.user_attrs["latency_ms_batch1"] < t.user_attrs["latency_ms_batch256"]


def test_dry_run_summarises_the_space_without_a_study(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The dry run's counts come from the sampled designs, its duration from the (injected) probe."""
    from search import dryrun

    path = write_space(tmp_path, base={**PRUNING_SPACE, "train": {**PRUNING_SPACE["train"], "lr": 0.1}})
    args = run.parse_args([str(path), "--dry-run", "--dry-run-samples", "200", "--results-dir",
                           str(tmp_path / "results")])
    cfg = run.config_from_args(args)
    probed = []

    def probe(spec: ArchSpec, train, device) -> float:
        probed.append(complexity(spec).params)
        return dryrun.Timing(0.002, train.batch_size)  # seconds per training image

    lines = []
    run.dry_run(args, cfg, lines.append, probe=probe)
    assert not (tmp_path / "results").exists()  # no study, no results folder
    designs, rejected = dryrun.sample_designs(cfg, 200, 10, 12)
    assert lines[0].startswith(f"dry run of {path}: 200 designs drawn at random")
    assert lines[1] == f"rejected before building: {sum(rejected.values()) / 200:.1%} ({sum(rejected.values())})"
    params = sorted(d.params for d in designs)
    assert probed == [params[len(params) // 2]]  # the typical design is the one of median size
    assert all(p <= 20_000 for p in params) and f"of the {len(designs)} buildable designs" in lines[2 + len(rejected)]
    # 5 trials x 3 epochs x (360 training + 40 validation / 3) images x 2 ms = 11.2 s
    assert "5 trials x 3 epochs x (360 training + 40 validation images) = about 11 s on this device" in lines[-1]
    assert any(line.startswith("depth (blocks)  1 .. 2") for line in lines)


def test_dry_run_cli_and_fill_share_wording(tmp_path: Path) -> None:
    space = {**PRUNING_SPACE, "space": {**PRUNING_SPACE["space"], "fill": {"float": [0.05, 1.0]}}}
    path = write_space(tmp_path, base=space)
    proc = cli(str(path), "--dry-run", "--dry-run-samples", "100", "--results-dir", "results", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "even width 8 is over the sampled fill share" in proc.stdout  # not the hard budget
    assert "expected duration: 5 trials x 3 epochs" in proc.stdout and "img/s on cpu" in proc.stdout
    assert not (tmp_path / "results").exists()
    bad = cli(str(path), "--dry-run", "--dry-run-samples", "0", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --dry-run-samples 0: expected 1 or more"
