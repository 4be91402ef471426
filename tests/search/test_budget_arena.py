"""budget.arena: TFLite Micro's arena head bound in bytes, parsed, checked before building, held by the runtime."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from blocks import ArchSpec, complexity
from blocks.resnet import ARENA_SLACK, arena_bound, tflite_peak
from search import dryrun, run, runner
from search.config import load_config
from search.rules import arch_violation
from search.space import MIN_WIDTH, fill_widths
from search.study.identity import fingerprint
from search.trials import REJECTED
from tests.helpers.spaces import write_space
from tests.helpers.studies import search_watching_builds

# 8 px images, one stride-1 stage of width w: no PAD tensor, so tflite_peak is the analytic 192 w and the arena
# bound ceil(1.6 x 192 w): 4,916 bytes at width 16, 7,373 at 24, 9,831 at 32, 12,288 at 40.
SPACE = {
    "data": {"dataset": "synthetic", "synthetic_train": 64, "synthetic_test": 16, "synthetic_size": 8,
             "synthetic_classes": 4, "num_workers": 0},
    "budget": {"params": 40_000, "arena": 5000},  # width 16 fits, 24 and more do not
    "space": {"stages": 1, "blocks": 1, "width": {"choice": [16, 24, 32, 40]}},
    "train": {"epochs": 1, "batch_size": 32, "lr": 0.1, "schedule": "constant"},
    "search": {"n_trials": 1, "sampler": "random", "pruner": "none", "seed": 0, "max_rejections": 50},
}


def test_arena_bound_is_the_slack_times_the_int8_tflite_peak() -> None:
    """Exact integers: 1.6 x 3,072 = 4,915.2 rounds up to 4,916; a PAD tensor counts (conv_s2 stem, 8 px)."""
    spec = ArchSpec.from_dict({"stages": 1, "blocks": [1], "width": 16, "num_classes": 4, "input_size": 8})
    assert (tflite_peak(spec), arena_bound(spec)) == (3072, 4916)
    padded = spec.replace(width=8, stem="conv_s2")
    assert tflite_peak(padded) > complexity(padded).peak_activations and arena_bound(padded) == 788


def test_search_under_an_arena_budget_never_builds_a_design_over_it(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture) -> None:
    """Designs over the arena bound are rejected with the reason and never built; the summary has an arena column."""
    study, built = search_watching_builds(tmp_path, SPACE, monkeypatch, lambda spec, model: spec.width)
    over = [t for t in study.trials if REJECTED in t.user_attrs]
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert over and len(done) == 1 and built == [16]
    for t in over:
        bound = t.user_attrs["arena_bound"]
        assert t.user_attrs[REJECTED] == f"arena head bound {bound:,} > budget 5,000 bytes (1.6 x the int8 TFLite peak)"
        assert bound in (7373, 9831, 12288) and "epoch_times_s" not in t.user_attrs
    assert done[0].user_attrs["arena_bound"] == 4916 and study.user_attrs["budget_arena"] == 5000
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.lstrip().startswith(f"{done[0].number} "))
    assert "arena" in out and "4.92k" in row, out


@pytest.mark.parametrize("value,arena", [(5000, 5000), ("100KiB", 102_400), ("100 kB", 100_000), ("0.5MiB", 524_288)])
def test_arena_budget_in_bytes(tmp_path: Path, value: int | str, arena: int) -> None:
    """A plain number is bytes, as is a unit string; activation_bytes (the fp peak's) does not change it."""
    budget = {"arena": value, "activation_bytes": 4, "params": 10**6}
    assert load_config(write_space(tmp_path, {"budget": budget}, base=SPACE)).budget.arena == arena


def test_fingerprint_without_an_arena_budget_is_unchanged(tmp_path: Path) -> None:
    """No arena budget leaves the fingerprint as it was before the key existed; an equal one in two spellings
    is one study, another value another."""
    plain = {**SPACE, "budget": {"params": 40_000}}
    before = fingerprint(load_config(write_space(tmp_path, base=plain)))
    assert fingerprint(load_config(write_space(tmp_path, {"budget": {"arena": None}}, base=plain))) == before
    kib = fingerprint(load_config(write_space(tmp_path, {"budget": {"arena": "5KiB"}}, base=plain)))
    assert fingerprint(load_config(write_space(tmp_path, {"budget": {"arena": 5120}}, base=plain))) == kib != before


def test_smallest_arena_tries_every_choice(tmp_path: Path) -> None:
    """A budget only a strided stem meets is accepted: the cifar stem's bound is 2,458 bytes, conv_s2's 788."""
    space = {"space": {"stages": 1, "blocks": 1, "width": 8, "stem": {"choice": ["cifar", "conv_s2"]}},
             "budget": {"arena": 1000}}
    assert load_config(write_space(tmp_path, space, base=SPACE)).budget.arena == 1000


def test_solved_widths_respect_the_arena_budget() -> None:
    """fill_widths widens a stage only while the arena bound fits too: one more step on any stage breaks a budget."""
    d = {"stages": 3, "blocks": [1, 1, 1], "num_classes": 10, "input_size": 32, "stem": "conv_s2"}
    free, capped = fill_widths(d, 100_000, None), fill_widths(d, 100_000, None, max_arena=20_000)
    assert free is not None and capped is not None
    assert arena_bound(ArchSpec.from_dict(free)) > 20_000 >= arena_bound(ArchSpec.from_dict(capped))
    for i in range(3):
        wider = [w + MIN_WIDTH * (j == i) for j, w in enumerate(capped["widths"])]
        spec = ArchSpec.from_dict({**capped, "width": wider[0], "widths": wider})
        assert complexity(spec).params > 100_000 or arena_bound(spec) > 20_000, i


def test_dry_run_shows_the_arena_bound(tmp_path: Path) -> None:
    """The dry run has the range of arena bounds of the buildable designs and the budget."""
    space = write_space(tmp_path, {"budget": {"arena": 8000}}, base=SPACE)
    args = run.parse_args([str(space), "--dry-run", "--dry-run-samples", "20", "--results-dir", str(tmp_path / "r")])
    lines: list[str] = []
    runner.dry_run(run.config_from_args(args), run.options(args), args.dry_run_samples, lines.append,
                   probe=lambda spec, train, device, limit_s: dryrun.Timing(0.001, train.batch_size))
    arena = next(line for line in lines if line.startswith("arena bound"))
    assert arena.startswith("arena bound     4.92k .. 7.37k") and "budget 8,000 = " in arena, arena
    assert f"{ARENA_SLACK} x the int8 TFLite peak" in arena


def test_arena_reason_names_the_bound(tmp_path: Path) -> None:
    """arch_violation: the tightest budget that admits a design admits it, one byte less rejects it."""
    spec = ArchSpec.from_dict({"stages": 2, "blocks": [1, 1], "width": 8, "kernel": 5, "stem": "conv_s2"})
    bound = arena_bound(spec)
    at = load_config(write_space(tmp_path, {"budget": {"arena": bound, "params": 10**6}}, base=SPACE))
    under = load_config(write_space(tmp_path, {"budget": {"arena": bound - 1, "params": 10**6}}, base=SPACE))
    assert arch_violation(spec, complexity(spec), at) is None
    assert arch_violation(spec, complexity(spec), under) == (f"arena head bound {bound:,} > budget {bound - 1:,} "
                                                             f"bytes (1.6 x the int8 TFLite peak)")
