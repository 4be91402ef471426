"""The report's figures, read back from their plotly JSON: colours, labels, ticks, titles and caveats."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution

from search.review import report_figures as figs


def trial(number: int, acc: float, kernel: int, epochs: int = 3) -> optuna.trial.FrozenTrial:
    """A complete trial with the attributes the objective records."""
    arch = {"stages": 2, "blocks": [1, number % 3 + 1], "width": 16 + 8 * number, "kernel": kernel, "pool": None}
    return optuna.trial.create_trial(
        params={"kernel": kernel, "lr": 0.01 * (number + 1)}, value=acc,
        distributions={"kernel": CategoricalDistribution([3, 5]), "lr": FloatDistribution(0.001, 1.0)},
        user_attrs={"arch": arch, "params": 1000 * (number + 1), "flops": 10_000, "val_acc_curve": [acc] * epochs},
        intermediate_values={e: acc for e in range(1, epochs + 1)})


def small_study(n: int) -> optuna.Study:
    """An in-memory study of n complete trials."""
    study = optuna.create_study(direction="maximize")
    for k in range(n):
        study.add_trial(trial(k, 0.5 + 0.1 * (k % 3), kernel=3 if k % 2 else 5))
    return study


def seed_doc(folder: Path, run: str, acc: list[float], confusion: list[list[int]]) -> None:
    """A retrain seed folder's metrics.json."""
    (folder / run).mkdir(parents=True)
    per_class = [{"name": c, "accuracy": a} for c, a in zip("ab", acc, strict=True)]
    doc = {"seed": 1000 * int(run[-1]), "per_class": per_class,
           "confusion": confusion, "history": [{"epoch": e, "train_loss": 1.0 / e, "train_acc": 0.5, "val_acc": 0.4}
                                               for e in range(1, 4)]}
    (folder / run / "metrics.json").write_text(json.dumps(doc))


def test_integer_ticks_are_whole_numbers() -> None:
    assert figs.integer_ticks([0, 1])["dtick"] == 1 and figs.integer_ticks([1, 3])["tickformat"] == "d"
    assert figs.integer_ticks([0, 37])["dtick"] == 5 and figs.integer_ticks([0, 150])["dtick"] == 20


def test_retrain_curves_one_colour_per_run_and_folder_names(tmp_path: Path) -> None:
    seed_doc(tmp_path, "seed_0", [0.5, 0.7], [[5, 5], [3, 7]])
    seed_doc(tmp_path, "seed_1", [0.7, 0.9], [[7, 3], [1, 9]])
    fig = figs.retrain_curves([{"trial": 3, "folder": str(tmp_path)}]).to_plotly_json()
    colours: dict[str, set] = {}
    for trace in fig["data"]:
        colours.setdefault(trace["name"], set()).add(trace["line"]["color"])
    assert sorted(colours) == ["trial 3 seed_0", "trial 3 seed_1"]  # the folder names, not "seed 1000"
    assert all(len(c) == 1 for c in colours.values())  # loss and accuracy panels share the run's colour
    assert len({next(iter(c)) for c in colours.values()}) == 2  # and runs differ
    assert fig["layout"]["xaxis"]["dtick"] == 1 and fig["layout"]["xaxis2"]["dtick"] == 1  # epochs 1, 2, 3

    bars, heat = figs.retrain_classes({"trial": 3, "folder": str(tmp_path)})
    bars, heat = bars.to_plotly_json(), heat.to_plotly_json()
    assert [round(y, 6) for y in bars["data"][0]["y"]] == [0.6, 0.8]  # mean of both seeds, not the first
    assert "2 seeds (seed_0, seed_1)" in bars["layout"]["title"]["text"]
    assert [list(r) for r in heat["data"][0]["z"]] == [[12, 8], [4, 16]]  # summed over both seeds
    assert "summed over 2 seeds" in heat["layout"]["title"]["text"]


def test_trial_and_epoch_axes_get_integer_ticks() -> None:
    study = small_study(3)
    assert figs.history(study).to_plotly_json()["layout"]["xaxis"]["dtick"] == 1
    curves, _ = figs.learning_curves(study.trials)
    assert curves.to_plotly_json()["layout"]["xaxis"]["dtick"] == 1
    budget, _ = figs.budget_use(study.trials, 4000)
    assert budget.to_plotly_json()["layout"]["yaxis"]["dtick"] == 1  # trials per bin are counts


def test_parallel_coordinates_integer_ticks_and_room_for_the_title() -> None:
    fig, _ = figs.parallel(small_study(4).trials)
    fig = fig.to_plotly_json()
    dims = {d["label"]: d for d in fig["data"][0]["dimensions"]}
    assert list(dims["kernel"]["tickvals"]) == [3, 5]  # never 4.5
    assert list(dims["width"]["tickvals"]) == [16, 24, 32, 40]
    assert fig["layout"]["margin"]["t"] >= 100  # the axis labels sit above the plot, under the title


def test_importances_from_few_trials_carry_a_caveat() -> None:
    fig, note = figs.importances(small_study(3), small_study(3).trials)
    assert fig is not None and note.startswith("Only 3 complete trials: a rough hint")
    study = small_study(6)
    _, note = figs.importances(study, study.trials)
    assert not note.startswith("Only")


def test_optuna_warnings_become_one_plain_sentence_each() -> None:
    """PED-ANOVA's warnings (six of them on a small study) read as what they mean, each once, not pasted."""
    messages = ["The number of trials is too small (3) for the quantile.", "Target and region quantiles select "
                "the same set of trials.", "Some regimes for parameter `lr` have less than 2 trials.",
                "Some regimes for parameter `wd` have less than 2 trials.", "low `target` values are preferred",
                "something new"]
    note = figs.optuna_caveats(messages)
    assert note.count("Too few complete trials") == 1 and note.count("too few trials to rate") == 1
    assert "scored alike" in note and "low `target`" not in note and "`lr`" not in note
    assert note.endswith("Optuna warned: something new")
