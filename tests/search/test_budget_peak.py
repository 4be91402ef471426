"""budget.peak_activations: parsed with its unit, checked before building, respected by the solved width."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from blocks import ArchSpec, complexity
from search import dryrun, run, runner
from search.config import load_config
from search.space import MIN_WIDTH, fill_widths
from search.study.identity import fingerprint, fingerprint_sections
from search.trials import REJECTED
from tests.helpers.fx_memory import fx_peak_activations
from tests.helpers.spaces import write_space
from tests.helpers.studies import search_watching_builds

# 8 px images: the peak of one stage of width w is its first block's input, conv1 and conv2 outputs, 192 w
SPACE = {
    "data": {"dataset": "synthetic", "synthetic_train": 64, "synthetic_test": 16, "synthetic_size": 8,
             "synthetic_classes": 4, "num_workers": 0},
    "budget": {"params": 40_000, "peak_activations": 3072},  # width 16 fits, width 24 (4,608) and more do not
    "space": {"stages": 1, "blocks": 1, "width": {"choice": [16, 24, 32, 40]}},
    "train": {"epochs": 1, "batch_size": 32, "lr": 0.1, "schedule": "constant"},
    "search": {"n_trials": 1, "sampler": "random", "pruner": "none", "seed": 0, "max_rejections": 50},
}


def test_search_under_a_peak_budget_never_builds_a_design_over_it(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Designs over the peak are rejected with the reason in their user attrs; every built one fits (fx walk)."""
    study, built = search_watching_builds(tmp_path, SPACE, monkeypatch,
                                          lambda spec, model: fx_peak_activations(model, spec.in_channels,
                                                                                  spec.input_size)[0])
    over = [t for t in study.trials if REJECTED in t.user_attrs]
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert over and len(done) == 1 and built and max(built) <= 3072
    for t in over:
        peak = t.user_attrs["peak_activations"]
        assert t.user_attrs[REJECTED] == f"peak activations {peak:,} > budget 3,072 elements"
        assert peak in (192 * 24, 192 * 32, 192 * 40) and "epoch_times_s" not in t.user_attrs
    assert all(t.user_attrs["peak_activations"] <= 3072 for t in done)
    assert study.user_attrs["budget_peak_activations"] == 3072


def test_solved_widths_respect_the_peak_budget() -> None:
    """fill_widths widens a stage only while the peak fits too: one more step on any stage breaks a budget."""
    d = {"stages": 3, "blocks": [1, 1, 1], "num_classes": 10, "input_size": 32}
    free = fill_widths(d, 100_000, None)
    capped = fill_widths(d, 100_000, None, max_peak=40_000)
    assert complexity(ArchSpec.from_dict(free)).peak_activations > 40_000
    assert complexity(ArchSpec.from_dict(capped)).peak_activations <= 40_000
    for i in range(3):
        wider = [w + MIN_WIDTH * (j == i) for j, w in enumerate(capped["widths"])]
        cx = complexity(ArchSpec.from_dict({**capped, "width": wider[0], "widths": wider}))
        assert cx.params > 100_000 or cx.peak_activations > 40_000, i


@pytest.mark.parametrize("value,per,elements", [(65536, 1, 65536), ("64KiB", 1, 65536), ("64 KiB", 4, 16384),
                                                ("1.5MiB", 1, 1572864), ("256kB", 2, 128000), ("5000b", 1, 5000)])
def test_peak_budget_in_elements_or_bytes(tmp_path: Path, value: int | str, per: int, elements: int) -> None:
    """A unit string is bytes, turned into whole elements at budget.activation_bytes each."""
    budget = {"peak_activations": value, "activation_bytes": per, "params": 10**6}
    assert load_config(write_space(tmp_path, {"budget": budget}, base=SPACE)).budget.peak_activations == elements


def test_fingerprint_without_a_peak_budget_is_unchanged(tmp_path: Path) -> None:
    """Studies made before the peak budget existed still resume: absent, it leaves the budget's hash alone."""
    import hashlib

    cfg = load_config(write_space(tmp_path, {"budget": {"peak_activations": None}}, base=SPACE))
    before = {"params": 40_000, "flops": None, "latency_ms": None, "latency_batch": 1}
    want = hashlib.sha256(json.dumps(before, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert fingerprint_sections(cfg)["budget"] == want
    elements = fingerprint(load_config(write_space(tmp_path, {"budget": {"peak_activations": 3072}}, base=SPACE)))
    kib = write_space(tmp_path, {"budget": {"peak_activations": "3KiB"}}, base=SPACE)
    assert fingerprint(load_config(kib)) == elements


BAD = {  # name: (budget values, what the one line must say)
    "negative": ({"peak_activations": -5}, "budget.peak_activations: expected a positive number of elements"),
    "zero": ({"peak_activations": 0}, "budget.peak_activations: expected a positive number of elements"),
    "unknown unit": ({"peak_activations": "64 parsecs"}, "'64 parsecs' is not a positive number of elements"),
    "no number": ({"peak_activations": "KiB"}, "'KiB' is not a positive number of elements or a byte size"),
    "negative bytes": ({"peak_activations": "-64KiB"}, "'-64KiB' is not a positive number"),
    "under one element": ({"peak_activations": "2B", "activation_bytes": 4}, "less than one element"),
    "zero bytes per element": ({"peak_activations": "64KiB", "activation_bytes": 0}, "budget.activation_bytes"),
    "a float": ({"peak_activations": 1.5}, "budget.peak_activations: expected"),
    "below every design": ({"peak_activations": "1KiB"}, "budget.peak_activations 1,024 elements is below the "
                                                         "smallest peak of any design in the space (3,072 at"),
    # budget.arena (tests/search/test_budget_arena.py): bytes, with the same spellings
    "arena negative": ({"arena": -5}, "budget.arena: expected a positive number of bytes"),
    "arena zero": ({"arena": 0}, "budget.arena: expected a positive number of bytes"),
    "arena unknown unit": ({"arena": "100 parsecs"}, "budget.arena: '100 parsecs' is not a positive number of bytes"),
    "arena no number": ({"arena": "KiB"}, "budget.arena: 'KiB' is not a positive number of bytes or a byte size"),
    "arena under one byte": ({"arena": "0.5B"}, "budget.arena: '0.5B' is less than one byte"),
    "arena a float": ({"arena": 1.5}, "budget.arena: expected"),
    "arena below every design": ({"arena": "4KiB"}, "budget.arena 4,096 bytes is below the smallest arena head "
                                                    "bound of any design in the space (4,916 bytes, 1.6 x its int8 "
                                                    "TFLite peak, at stages=1, blocks=[1], width=16)"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_memory_budget_is_one_line_before_any_study(case: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    """A bad peak or arena budget: exit status 2, one `error:` line saying what is wrong, and no study."""
    budget, expected = BAD[case]
    space = write_space(tmp_path, {"budget": budget}, base=SPACE)
    assert run.main([str(space), "--results-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert not list(tmp_path.rglob("study.db"))


def test_smallest_peak_tries_every_choice(tmp_path: Path) -> None:
    """A budget only a strided stem meets is accepted: the smallest peak is not at the first choice."""
    space = {"space": {"stages": 1, "blocks": 1, "width": 8, "stem": {"choice": ["cifar", "conv_s2"]}},
             "budget": {"peak_activations": 1000}}  # cifar stem: 1,536; conv_s2: 192 + 512 = 704
    assert load_config(write_space(tmp_path, space, base=SPACE)).budget.peak_activations == 1000


def test_dry_run_shows_the_peak(tmp_path: Path) -> None:
    """The dry run's table has the range of peaks and the budget."""
    space = write_space(tmp_path, {"space": {"width": {"choice": [8, 16, 24]}}}, base=SPACE)
    args = run.parse_args([str(space), "--dry-run", "--dry-run-samples", "20",
                           "--results-dir", str(tmp_path / "r")])
    lines: list[str] = []
    runner.dry_run(run.config_from_args(args), run.options(args), args.dry_run_samples, lines.append,
                   probe=lambda spec, train, device, limit_s: dryrun.Timing(0.001, train.batch_size))
    peak = next(line for line in lines if line.startswith("peak memory"))
    assert peak.startswith("peak memory     1.54k .. 3.07k") and "budget 3,072 = 3 KiB at 1 byte each" in peak
    assert any(line.strip().endswith("peak activations 4,608 > budget 3,072 elements") for line in lines)
