"""Retrain on the smoke study: files with real numbers, reloadable checkpoints, ensembles, resume, refusals."""

from __future__ import annotations

import importlib.util
import json
import signal
import statistics
from pathlib import Path

import optuna
import pytest
import torch

import blocks
from blocks import ArchSpec
from search import commands
from search.config import load_config
from search.data.datasets import make_loaders
from search.review import evaluate as ev
from search.review import retrain, retrain_outputs, retrain_seed
from search.review.results import open_results
from search.study.identity import fingerprint
from search.trainer import predict
from tests.helpers.datasets import make_tiny_imagenet
from tests.helpers.errors import one_error
from tests.helpers.studies import best, quickest, read_csv, sqlite_file


def load_test_set(results: Path) -> torch.utils.data.DataLoader:
    """The smoke study's test-set loader, as retrain builds it (no augmentation on test images)."""
    return make_loaders(open_results(results).cfg.data, [], 64, seed=0, test=True).test


def test_retrain_writes_every_file_with_real_numbers(smoke_retrained: Path) -> None:
    res = open_results(smoke_retrained)
    for n in best(smoke_retrained, 2):
        folder = smoke_retrained / "retrain" / f"{n:05d}"
        run_dir = folder / "seed_0"
        for name in ("model.pt", "metrics.json", "per_class.csv", "confusion.csv", "curves.csv", "run.json"):
            assert (run_dir / name).is_file(), name
        assert not (run_dir / "train_state.pt").exists()  # removed once the model is final
        m = json.loads((run_dir / "metrics.json").read_text())
        cm = ev.read_confusion_csv(run_dir / "confusion.csv")
        assert cm.shape == (10, 10) and cm.sum() == m["test"]["n"] == 100
        assert cm.tolist() == m["confusion"]
        assert 0.0 <= m["test"]["top1"] <= 1.0 and m["test"]["top1"] == cm.trace() / cm.sum()
        assert "top5" not in m["test"]  # 10 classes: top-1 only
        rows = read_csv(run_dir / "per_class.csv")
        assert [int(r["support"]) for r in rows] == cm.sum(1).tolist()
        for k, r in enumerate(rows):
            assert float(r["accuracy"]) == pytest.approx(cm[k, k] / cm[k].sum(), abs=1e-6)
        curves = read_csv(run_dir / "curves.csv")
        assert [int(c["epoch"]) for c in curves] == [1]
        assert float(curves[0]["train_loss"]) > 0 and curves[0]["val_acc"] == ""  # train + val: no val curve
        summary = json.loads((folder / "metrics.json").read_text())
        assert summary["trial"] == n and summary["epochs"] == 1 and summary["train_on_val"] is True
        # 200 generated images, 10% held out for the search's validation: all of them train the final model
        assert summary["trained_on"] == {"dataset": "synthetic", "train_images": 200, "images": "train + val",
                                         "subset": None, "image_size": 16}
        assert m["weights"] == "EMA" and m["train"]["ema"] == 0.999 and "200 images (train + val)" in m["recipe"]
        assert summary["params"] == res.trial(n).user_attrs["params"]
        assert summary["test"]["top1"]["values"] == [m["test"]["top1"]] and summary["test"]["top1"]["std"] is None
        assert len(read_csv(folder / "per_class.csv")) == 10


def test_checkpoint_reloads_to_identical_outputs(smoke_retrained: Path, tmp_path: Path) -> None:
    n = best(smoke_retrained, 1)[0]
    run_dir = smoke_retrained / "retrain" / f"{n:05d}" / "seed_0"
    model = blocks.load(run_dir / "model.pt")
    trial = open_results(smoke_retrained).trial(n)
    assert isinstance(model, blocks.ResNet) and not model.training
    assert model.spec == ArchSpec.from_dict(trial.user_attrs["arch"])
    assert sum(p.numel() for p in model.parameters()) == trial.user_attrs["params"]
    assert model.extra["trial"] == n and len(model.extra["history"]) == 1
    probs, labels = predict(model, load_test_set(smoke_retrained), torch.device("cpu"))
    recorded = json.loads((run_dir / "metrics.json").read_text())
    assert ev.confusion_matrix(probs.argmax(1), labels, 10).tolist() == recorded["confusion"]
    blocks.save(tmp_path / "again.pt", model, extra=model.extra)
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), blocks.load(tmp_path / "again.pt")(x))


def test_save_load_round_trip_keeps_buffers(tmp_path: Path) -> None:
    spec = ArchSpec(stages=2, blocks=(1, 1), width=8, num_classes=5, input_size=16)
    model = blocks.build(spec)
    for m in model.modules():  # non-default running statistics must survive the round trip
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    model.eval()
    blocks.save(tmp_path / "m.pt", model, extra={"note": "x"})
    again = blocks.load(tmp_path / "m.pt")
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    assert again.extra == {"note": "x"}
    torch.save({"model": model.state_dict()}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a blocks checkpoint"):
        blocks.load(tmp_path / "other.pt")


def test_ensemble_is_the_mean_of_the_members_softmax(smoke_retrained: Path) -> None:
    members = sorted(best(smoke_retrained, 2))
    folder = smoke_retrained / "retrain" / f"ensemble_{members[0]}-{members[1]}"
    doc = json.loads((folder / "metrics.json").read_text())
    assert doc["members"] == members
    loader = load_test_set(smoke_retrained)
    probs = []
    for n in members:
        model = blocks.load(smoke_retrained / "retrain" / f"{n:05d}" / "seed_0" / "model.pt")
        p, labels = predict(model, loader, torch.device("cpu"))
        single = json.loads((smoke_retrained / "retrain" / f"{n:05d}" / "metrics.json").read_text())
        assert doc["members_test"][str(n)]["top1"]["mean"] == single["test"]["top1"]["mean"]
        probs.append(p)
    expected = ((probs[0] + probs[1]) / 2).argmax(1).eq(labels).sum().item() / len(labels)
    seed0 = json.loads((folder / "seed_0" / "metrics.json").read_text())
    assert seed0["test"]["top1"] == pytest.approx(expected, abs=1e-9) == doc["test"]["top1"]["mean"]
    assert ev.read_confusion_csv(folder / "seed_0" / "confusion.csv").trace() == round(expected * len(labels))
    assert set(seed0["member_top1"]) == {f"{n:05d}" for n in members}


def test_tampered_trial_json_is_refused_in_one_line(smoke_copy: Path, capsys: pytest.CaptureFixture) -> None:
    n = best(smoke_copy, 1)[0]
    path = smoke_copy / "trials" / f"{n:05d}.json"
    doc = json.loads(path.read_text())
    recorded = doc["params"]
    if doc["arch"].get("widths"):  # a filled budget: explicit per-stage widths decide the size
        doc["arch"]["widths"][-1] += 8
    else:
        doc["arch"]["width"] += 8
    path.write_text(json.dumps(doc))
    rebuilt = sum(p.numel() for p in blocks.build(ArchSpec.from_dict(doc["arch"])).parameters())
    assert commands.retrain_main([str(smoke_copy), "--trial", str(n), "--epochs", "1", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: trial {n}: "), err
    assert f"{rebuilt:,}" in lines[0] and f"{recorded:,}" in lines[0] and path.name in lines[0]
    assert not (smoke_copy / "retrain").exists()  # refused before anything was written


def test_tampered_study_attrs_are_refused(smoke_copy: Path, capsys: pytest.CaptureFixture) -> None:
    n = best(smoke_copy, 1)[0]
    recorded = open_results(smoke_copy).trial(n).user_attrs["params"]
    arch = dict(open_results(smoke_copy).trial(n).user_attrs["arch"])
    arch["kernel"] = 7 if arch["kernel"] != 7 else 3
    with sqlite_file(smoke_copy / "study.db") as db:  # Optuna itself will not edit a finished trial
        (trial_id,) = db.execute("SELECT trial_id FROM trials WHERE number = ?", (n,)).fetchone()
        db.execute("UPDATE trial_user_attributes SET value_json = ? WHERE trial_id = ? AND key = 'arch'",
                   (json.dumps(arch), trial_id))
    rebuilt = sum(p.numel() for p in blocks.build(ArchSpec.from_dict(arch)).parameters())
    assert commands.retrain_main([str(smoke_copy), "--trial", str(n), "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"error: trial {n}: the architecture in study.db")
    assert f"{rebuilt:,}" in err and f"{recorded:,}" in err


@pytest.mark.parametrize("args, message", [
    (["--trial", "99"], "trial 99 does not exist in study 'smoke'"),
    (["--top", "7"], "--top 7: study 'smoke' has only 4 complete trials"),  # 3 searched + the baseline
    (["--epochs", "0"], "--epochs 0: expected 1 to 10,000"),
    (["--seeds", "0"], "--epochs and --seeds must be at least 1"),
    (["--predict"], "--predict: dataset 'synthetic' has no unlabeled test split"),
])
def test_user_errors_are_one_line(smoke_copy: Path, capsys: pytest.CaptureFixture, args: list[str],
                                  message: str) -> None:
    assert commands.retrain_main([str(smoke_copy), *args]) == 2
    one_error(capsys, None, start=message)


def test_user_errors_for_folders_and_trials_that_cannot_be_retrained(smoke_copy: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    assert commands.retrain_main([str(tmp_path / "nowhere")]) == 2
    assert "results folder" in capsys.readouterr().err
    rejected = [t.number for t in open_results(smoke_copy).trials if "rejected" in t.user_attrs]
    assert rejected, "the smoke study is built to have rejected trials"
    assert commands.retrain_main([str(smoke_copy), "--trial", str(rejected[0])]) == 2
    err = capsys.readouterr().err
    assert f"trial {rejected[0]} of study 'smoke' is rejected (receptive field" in err and err.count("\n") == 1


def test_interrupted_retrain_resumes_and_finished_seeds_are_reused(
        smoke_copy: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    n = quickest(smoke_copy)
    run_dir = smoke_copy / "retrain" / f"{n:05d}" / "seed_0"
    real_fit = retrain_seed.fit

    def fit_then_sigterm(*args, on_epoch, **kw):
        def hook(r):
            on_epoch(r)
            if r.epoch == 1:
                assert callable(signal.getsignal(signal.SIGTERM)), "no handler: SIGTERM would kill pytest itself"
                signal.raise_signal(signal.SIGTERM)  # as a job scheduler's kill, after the epoch-1 checkpoint
        return real_fit(*args, on_epoch=hook, **kw)

    monkeypatch.setattr(retrain_seed, "fit", fit_then_sigterm)
    handler = signal.getsignal(signal.SIGTERM)
    assert commands.retrain_main([str(smoke_copy), "--trial", str(n), "--epochs", "2"]) == 130  # not killed: it stopped
    assert "rerun the same command to resume" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is handler, "the previous SIGTERM handler is back"
    state = torch.load(run_dir / "train_state.pt", weights_only=True)
    assert len(state["history"]) == 1 and not (run_dir / "model.pt").exists()  # stopped inside epoch 2
    monkeypatch.setattr(retrain_seed, "fit", real_fit)

    assert commands.retrain_main([str(smoke_copy), "--trial", str(n), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert f"[trial {n} seed 0] resuming from epoch 1 of 2" in out
    assert out.endswith(commands.next_steps(smoke_copy, n) + "\n")  # the command ends with what to run next
    assert f"[trial {n} seed 0] epoch 1/2" not in out.split("resuming")[1]  # epoch 1 was not trained again
    curves = read_csv(run_dir / "curves.csv")
    assert [int(c["epoch"]) for c in curves] == [1, 2]
    assert float(curves[0]["time_s"]) == pytest.approx(state["history"][0]["time_s"], rel=1e-5)
    assert not (run_dir / "train_state.pt").exists() and (run_dir / "model.pt").is_file()

    assert commands.retrain_main([str(smoke_copy), "--trial", str(n), "--epochs", "3"]) == 2  # other settings
    assert "pass --fresh to start over" in capsys.readouterr().err

    top1_seed0 = json.loads((run_dir / "metrics.json").read_text())["test"]["top1"]
    monkeypatch.setattr(retrain_seed, "predict", None)  # seed 0's stored test results must be reused, not recomputed
    with pytest.raises(TypeError):  # seed 1 is new: it trains and tests (and meets the missing predict)
        retrain.retrain(smoke_copy, trials=[n], epochs=2, seeds=2)
    out = capsys.readouterr().out
    assert f"[trial {n} seed 0] already trained" in out and f"[trial {n} seed 0] reusing the stored test results" in out
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["top1"] == top1_seed0
    monkeypatch.undo()
    assert commands.retrain_main([str(smoke_copy), "--trial", str(n), "--epochs", "2", "--seeds", "2"]) == 0
    assert f"[trial {n} seed 0] reusing the stored test results" in capsys.readouterr().out
    summary = json.loads((run_dir.parent / "metrics.json").read_text())
    top1 = summary["test"]["top1"]
    assert len(top1["values"]) == 2 and len({s["seed"] for s in summary["seeds"]}) == 2
    assert top1["mean"] == pytest.approx(statistics.mean(top1["values"]))
    assert top1["std"] == pytest.approx(statistics.stdev(top1["values"]))
    assert len(read_csv(run_dir.parent / "seed_1" / "curves.csv")) == 2


def test_a_stop_while_a_seed_is_tested_lets_it_finish_and_starts_no_other(
        smoke_copy: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    n = quickest(smoke_copy)
    real_predict = retrain_seed.predict

    def sigterm_then_predict(*args, **kw):
        assert callable(signal.getsignal(signal.SIGTERM)), "no handler: SIGTERM would kill pytest itself"
        signal.raise_signal(signal.SIGTERM)
        return real_predict(*args, **kw)

    monkeypatch.setattr(retrain_seed, "predict", sigterm_then_predict)
    assert commands.retrain_main([str(smoke_copy), "--trial", str(n), "--epochs", "1", "--seeds", "2"]) == 130
    out, err = capsys.readouterr()
    assert "rerun the same command to resume" in err
    folder = smoke_copy / "retrain" / f"{n:05d}"
    assert (folder / "seed_0" / "metrics.json").is_file() and f"[trial {n} seed 0] test top-1" in out
    assert not (folder / "seed_1").exists() and f"[trial {n} seed 1]" not in out


def test_predict_writes_wnids_for_tiny_imagenet_test_images(tmp_path: Path) -> None:
    from search import run

    data = make_tiny_imagenet(tmp_path / "data", n_classes=3, n_train=4, n_val=2, n_test=3)
    space = tmp_path / "tiny.yaml"
    space.write_text(json.dumps({  # JSON is YAML
        "data": {"dataset": "tiny_imagenet", "root": str(data), "download": False, "val_fraction": 0.25,
                 "num_workers": 0},
        "budget": {"params": 5000}, "space": {"stages": 1, "blocks": 1, "stem": "conv_s2"},
        "train": {"epochs": 1, "batch_size": 4}, "augment": [{"HorizontalFlip": {"p": 0.5}}],
        "search": {"n_trials": 1, "pruner": "none"}, "retrain": {"epochs": 1}}))
    assert run.main([str(space), "--results-dir", str(tmp_path / "results"), "--device", "cpu"]) == 0
    results = tmp_path / "results" / "tiny"
    assert commands.retrain_main([str(results), "--predict", "--device", "cpu"]) == 0
    rows = read_csv(results / "retrain" / "00000" / "seed_0" / "predictions.csv")
    wnids = (data / "tiny-imagenet-200" / "wnids.txt").read_text().split()
    assert [r["file"] for r in rows] == ["test_0.JPEG", "test_1.JPEG", "test_2.JPEG"]
    assert all(r["wnid"] in wnids for r in rows)
    metrics = json.loads((results / "retrain" / "00000" / "seed_0" / "metrics.json").read_text())
    assert metrics["test"]["n"] == 6 and "Tiny ImageNet official val" in metrics["test_set"]


def test_top5_only_for_many_classes() -> None:
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(50, 200, generator=g).softmax(1)
    labels = torch.randint(0, 200, (50,), generator=g)
    m = ev.classification_metrics(probs, labels, [f"n{k}" for k in range(200)])
    hits = sum(int(labels[i]) in probs[i].topk(5).indices.tolist() for i in range(50))
    assert m["top5"] == hits / 50 and m["top1"] == m["confusion"].trace() / 50
    assert "top5" not in ev.classification_metrics(probs[:, :10].softmax(1), labels % 10, list("abcdefghij"))


@pytest.mark.skipif(importlib.util.find_spec("onnx") is None or importlib.util.find_spec("onnxscript") is None,
                    reason="the onnx exporter's packages (onnx, onnxscript) are not installed")
def test_onnx_export_matches_torch(smoke_retrained: Path, tmp_path: Path) -> None:
    from onnx.reference import ReferenceEvaluator

    n = best(smoke_retrained, 1)[0]
    model = blocks.load(smoke_retrained / "retrain" / f"{n:05d}" / "seed_0" / "model.pt")
    retrain_outputs.export_onnx(model, model.spec, tmp_path / "model.onnx")
    x = torch.randn(3, 3, 16, 16)
    (got,) = ReferenceEvaluator(str(tmp_path / "model.onnx")).run(None, {"images": x.numpy()})
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(got), model(x), atol=1e-4)


def test_retrain_drops_the_search_subset_and_takes_set(smoke_copy: Path, capsys: pytest.CaptureFixture) -> None:
    import yaml

    config = smoke_copy / "config.yaml"
    raw = yaml.safe_load(config.read_text())
    raw["data"]["subset"] = 100  # as after a search run with --set data.subset=100 ...
    config.write_text(yaml.safe_dump(raw))
    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{smoke_copy / 'study.db'}")
    study.set_user_attr("fingerprint", fingerprint(load_config(config)))  # ... which the study then records
    n = quickest(smoke_copy)
    args = [str(smoke_copy), "--trial", str(n), "--epochs", "1", "--no-train-on-val", "--device", "cpu",
            "--set", "retrain.ema=null", "--set", "retrain.tta=false", "--set", "retrain.lr=0.2"]
    assert commands.retrain_main(args) == 0
    out = capsys.readouterr().out
    assert "data.subset=100 of the search is dropped: the final model trains on the full training set" in out
    run_dir = smoke_copy / "retrain" / f"{n:05d}" / "seed_0"
    run = json.loads((run_dir / "run.json").read_text())
    assert run["train_images"] == 180 and run["images"] == "train" and run["subset"] is None  # 200 - 10% val
    assert run["train"]["ema"] is None and run["train"]["lr"] == pytest.approx(0.2 * 64 / 128)
    m = json.loads((run_dir / "metrics.json").read_text())
    assert "test_tta" not in m and m["weights"] == "last step" and "180 images (train)" in m["recipe"]
    assert "180 images (train)" in out and "top-1 flip TTA" in out  # the table always labels both columns
    for bad, message in [("train.lr=1", "--set 'train.lr=1': retrain can set data.*"),
                         ("retrain.schedule=foo", "retrain.schedule 'foo': expected one of"),
                         ("retrain.augment=[{Nope: null}]", "unknown albumentations transform 'Nope'")]:
        assert commands.retrain_main([str(smoke_copy), "--set", bad]) == 2
        one_error(capsys, None, message)


def test_flip_tta_test_accuracy_is_recorded_next_to_plain(smoke_retrained: Path) -> None:
    n = best(smoke_retrained, 1)[0]
    folder = smoke_retrained / "retrain" / f"{n:05d}"
    model = blocks.load(folder / "seed_0" / "model.pt")
    probs, labels = predict(model, load_test_set(smoke_retrained), torch.device("cpu"), tta=True)
    m = json.loads((folder / "seed_0" / "metrics.json").read_text())
    assert m["test_tta"]["top1"] == ev.topk_accuracy(probs, labels, 1) and m["test_tta"]["n"] == 100
    summary = json.loads((folder / "metrics.json").read_text())
    assert summary["test_tta"]["top1"]["values"] == [m["test_tta"]["top1"]]
    assert summary["test"]["top1"]["values"] == [m["test"]["top1"]]


def test_retrain_eta_counts_every_run_still_to_come(smoke_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """2 trials x 2 seeds: the first run's total ETA covers 3 more runs, the last run's none."""
    later: list[tuple[str, int]] = []

    class Recording(retrain_seed.Progress):
        def __init__(self, label: str, epochs: int, **kw) -> None:  # type: ignore[no-untyped-def]
            if epochs:  # a training run (a test pass has 0 epochs)
                later.append((label, kw.get("later_runs", 0)))
            super().__init__(label, epochs, **kw)

    monkeypatch.setattr(retrain_seed, "Progress", Recording)
    a, b = best(smoke_copy, 2)
    args = [str(smoke_copy), "--trial", str(a), "--trial", str(b), "--seeds", "2", "--epochs", "1", "--device", "cpu"]
    assert commands.retrain_main(args) == 0
    assert later == [(f"trial {a} seed 0", 3), (f"trial {a} seed 1", 2), (f"trial {b} seed 0", 1),
                     (f"trial {b} seed 1", 0)]


@pytest.mark.parametrize("smoothing, expected", [(None, 0.1), (0.0, 0.0), (0.2, 0.2)])
def test_the_recipe_replaces_only_what_it_sets(smoothing: float | None, expected: float) -> None:
    """retrain: keys replace the trial's settings (lr scaled to its batch); null keeps the trial's value."""
    from search.config import RetrainConfig, TrainSpec
    from search.review.recipe import describe, final_train

    trial = TrainSpec(epochs=40, batch_size=64, lr=0.37, weight_decay=1e-4, label_smoothing=0.1, momentum=0.8)
    final = final_train(trial, RetrainConfig(lr=0.2, lr_batch=128, weight_decay=None, label_smoothing=smoothing))
    assert (final.lr, final.weight_decay, final.momentum, final.batch_size) == (0.1, 1e-4, 0.8, 64)
    assert final.label_smoothing == expected and final.warmup_epochs == 4.0  # 5 epochs, at most a tenth of 40
    facts = {"dataset": "cifar10", "train_images": 50_000, "images": "train + val", "image_size": 32}
    line = describe(final, [], facts)
    assert ("label smoothing" in line) == bool(expected) and (f"label smoothing {expected:g}" in line or not expected)


@pytest.mark.parametrize("amp, expected", [(None, "auto"), (False, False), (True, True)])
def test_retrain_amp_replaces_the_trials_precision(amp: bool | None, expected: bool | str) -> None:
    """retrain.amp pins the final runs' precision (false: fp32 even where the CPU has bf16); null keeps train.amp."""
    from search.config import RetrainConfig, TrainSpec
    from search.review.recipe import final_train

    assert final_train(TrainSpec(epochs=40, amp="auto"), RetrainConfig(amp=amp)).amp == expected



def test_retrain_ends_with_the_next_steps_a_shell_runs(tmp_path: Path) -> None:
    """After a retrain: predict with the model and export it, by the interpreter that ran it, quoted."""
    import os
    import shlex
    import sys

    results = tmp_path / "my results"
    lines = commands.next_steps(results, 7).splitlines()
    assert lines[0] == "next:"
    predict_words, export_words = (shlex.split(line.split("  #")[0]) for line in lines[1:])
    assert os.path.realpath(predict_words[0]) == os.path.realpath(sys.executable)
    assert predict_words[1:5] == ["-m", "search", "predict", str(results / "retrain" / "00007" / "seed_0" / "model.pt")]
    assert export_words[1:] == ["-m", "search", "export", str(results), "--trial", "7"]
