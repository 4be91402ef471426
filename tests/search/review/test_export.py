"""`search export`: int8 TFLite end to end for the builder's designs, int8 accuracy as deployed, one-line refusals."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from blocks import ArchSpec, build, complexity
from blocks.resnet import ARENA_SLACK, arena_bound, tflite_peak
from search import commands
from search.config import DataConfig, TrainSpec, load_config
from search.data.datasets import make_loaders
from search.review import export, tflite
from search.review.results import open_results
from search.rules import arch_violation
from search.trainer import fit, seed_everything
from tests.helpers.errors import one_error
from tests.helpers.spaces import ROOT, write_space
from tests.helpers.specs import SPECS
from tests.helpers.studies import best

HAS_MCU = all(importlib.util.find_spec(name) for name in (*tflite.PACKAGES, "tflite_micro"))
needs_mcu = pytest.mark.skipif(not HAS_MCU, reason="the mcu extra is not installed (pip install -e '.[mcu]')")

# Every option of the builder at least once, kept small: each conversion takes 5-20 s on a 2-core CPU.
DESIGNED = [
    {"stages": 2, "blocks": [2, 1], "widths": [8, 16], "kernel": 5, "separable": True},  # the winner's shape
    {"stages": 2, "blocks": [1, 1], "width": 8, "block": "bottleneck", "shortcut": "zero_pad", "stem": "imagenet",
     "head": "conv"},
    {"stages": 2, "blocks": [2, 1], "width": 8, "kernel": 7, "shortcut": "zero_pad", "stem": "conv_s2", "pool": 2},
    {"stages": 2, "blocks": [1, 1], "width": 8, "skip_kernel": 3, "separable": True, "block": "bottleneck",
     "expansion": 2, "dropout": 0.1, "in_channels": 1, "input_size": 24, "head": "conv", "pool": 3},
]
RANDOM = random.Random(26).sample(SPECS, 2)
RESNET8 = {"stages": 3, "blocks": [1, 1, 1], "width": 16}  # MLPerf Tiny's, and the winner of spaces/cifar10_mcu.yaml
WINNER = {"stages": 3, "blocks": [3, 1, 3], "widths": [16, 56, 88], "kernel": 5, "separable": True}  # seeded: the same draws every run, new ones with a new seed
# Ops the exported graphs may hold: each an int8 kernel of TFLite Micro's builtin resolver.
INT8_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "PAD", "PADV2", "MEAN", "SUM", "FULLY_CONNECTED", "AVERAGE_POOL_2D",
            "MAX_POOL_2D", "STRIDED_SLICE", "RESHAPE", "TRANSPOSE"}


def trained_bn(spec: ArchSpec) -> torch.nn.Module:
    """An untrained model with BatchNorm statistics and scales away from the identity (as a trained one has)."""
    torch.manual_seed(0)
    model = build(spec).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    return model


@needs_mcu
@pytest.mark.parametrize("spec", [ArchSpec.from_dict(d) for d in DESIGNED] + RANDOM, ids=lambda s: str(s.blocks))
def test_every_design_converts_int8_end_to_end(spec: ArchSpec) -> None:
    model = trained_bn(spec)
    noise = export.calibration(None, 8, spec)
    graph = tflite.inspect(data := tflite.convert_int8(model, spec, noise))
    assert graph.int8_clean, graph.problems()
    assert graph.input.shape == (1, spec.input_size, spec.input_size, spec.in_channels)  # NHWC
    assert graph.output.shape == (1, spec.num_classes) and graph.output.dtype == "int8"
    assert set(graph.ops) <= INT8_OPS, graph.ops
    within_bounds(spec, model, data)  # TFLite Micro plans it (every op has an int8 kernel there), as documented


def within_bounds(spec: ArchSpec, model: torch.nn.Module, data: bytes) -> None:
    """The arena head and the file's bytes within the bounds docs/review-and-retrain.md gives from the analytic
    counts (held on 122 designs by benchmarks/bench_arena.py): tflite_peak <= head <= ARENA_SLACK x tflite_peak,
    flash_bytes <= file <= flash_bytes + LAYER_BYTES a layer."""
    head, padded = tflite.arena(data)["head"], tflite_peak(spec)
    assert padded <= head <= ARENA_SLACK * padded, (head, padded, complexity(spec).peak_activations)
    flash, layers = tflite.flash_bytes(model)
    assert flash <= len(data) <= flash + tflite.LAYER_BYTES * layers, (len(data), flash, layers)


@needs_mcu
@pytest.mark.parametrize(("arch", "head"), [(RESNET8, 51_264), (WINNER, 69_888)], ids=["resnet8", "winner"])
def test_arena_of_the_mlperf_tiny_designs(arch: dict, head: int) -> None:
    """MLPerf Tiny's ResNet-8 and the cifar10_mcu winner: the arena head litert-torch and ai-edge-quantizer 0.10
    give in TFLite Micro, within the documented bound of their analytic peak (49,152 bytes each, no PAD over it)."""
    spec = ArchSpec.from_dict(arch)
    model = trained_bn(spec)
    data = tflite.convert_int8(model, spec, export.calibration(None, 8, spec))
    within_bounds(spec, model, data)
    assert tflite_peak(spec) == complexity(spec).peak_bytes() == 49_152
    assert tflite.arena(data)["head"] == head  # 1.04x and 1.42x: where the greedy planner puts equal tensors


@needs_mcu
@pytest.mark.parametrize("arch", [DESIGNED[0], DESIGNED[2]], ids=["sep5", "pad"])
def test_a_design_admitted_under_an_arena_budget_fits_it(arch: dict, tmp_path: Path) -> None:
    """budget.arena at the tightest value that admits the design (its arena_bound): converted, the arena head
    TFLite Micro plans is within it. One separable 5x5 design, one whose stride-2 convs get PAD tensors."""
    spec = ArchSpec.from_dict(arch)
    budget = arena_bound(spec)
    cfg = load_config(write_space(tmp_path, {"budget": {"params": 10**6, "arena": budget}}))
    assert arch_violation(spec, complexity(spec), cfg) is None  # admitted, and not by more than a byte:
    assert arch_violation(spec, complexity(spec), dataclasses.replace(cfg, budget=dataclasses.replace(
        cfg.budget, arena=budget - 1))) is not None
    head = tflite.arena(tflite.convert_int8(trained_bn(spec), spec, export.calibration(None, 8, spec)))["head"]
    assert head <= budget, (head, budget, tflite_peak(spec))


@needs_mcu
def test_int8_predictions_agree_with_fp32() -> None:
    """A model trained on generated data, exported, run in TFLite Micro: int8 classes agree with fp32's.

    The bound: MLPerf Tiny's ResNet-8 loses 0.2 points of top-1 to int8 (mlcommons/tiny PR #116); measured here,
    all 300 agree, and a CIFAR-10 ResNet-8 trained for one epoch agreed on 98.05% of 2,000 test images with the
    same top-1 (50.15%). A model trained for seconds has small margins, so a few close calls may flip.
    """
    data = DataConfig(dataset="synthetic", synthetic_train=400, synthetic_test=300, synthetic_classes=4,
                      synthetic_size=16, num_workers=0)
    spec = ArchSpec.from_dict({"stages": 2, "blocks": [1, 1], "width": 8, "num_classes": 4, "input_size": 16})
    seed_everything(0)
    model = build(spec)
    loaders = make_loaders(data, [], 32, seed=0, test=True)
    fit(model, loaders.train, None, TrainSpec(epochs=4, batch_size=32, lr=0.1), torch.device("cpu"))
    model.eval()
    exported = tflite.convert_int8(model, spec, export.calibration(data, 200, spec))
    int8, labels = tflite.int8_predictions(exported, loaders.test, runtime="micro")
    with torch.no_grad():
        fp32 = torch.cat([model(x).argmax(1) for x, _ in loaders.test]).numpy()
    assert len(int8) == 300
    assert (int8 == fp32).mean() >= 0.95, ((int8 == fp32).mean(), (int8 == labels).mean(), (fp32 == labels).mean())
    sample = tflite.nhwc(next(iter(loaders.test))[0][:16])  # LiteRT's faster interpreter says the same
    micro, litert = tflite.Runner(exported, "micro").logits(sample), tflite.Runner(exported, "litert").logits(sample)
    assert np.abs(micro.astype(int) - litert).max() <= 1 and (micro.argmax(1) == litert.argmax(1)).mean() >= 0.9


@needs_mcu
def test_export_writes_the_file_and_its_sidecar(smoke_retrained: Path, tmp_path: Path) -> None:
    n = best(smoke_retrained, 1)[0]
    out = tmp_path / "deploy" / "winner.tflite"
    assert commands.export_main([str(smoke_retrained), "--trial", str(n), "--calibration-images", "50", "--evaluate", "60",
                        "--runtime", "micro", "--output", str(out)]) == 0
    doc = json.loads(out.with_suffix(".json").read_text())
    spec = ArchSpec.from_dict(doc["arch"])
    assert doc["file_bytes"] == out.stat().st_size and doc["graph"]["int8_clean"]
    assert doc["input"]["layout"] == "NHWC" and doc["input"]["shape"] == [1, spec.input_size, spec.input_size, 3]
    assert doc["input"]["dtype"] == doc["output"]["dtype"] == "int8" and doc["input"]["mean"] == [0.5] * 3
    assert doc["calibration"]["images"] == 50 and doc["class_names"][0] == "class_0"
    assert set(doc["arena"]) == {"head", "tail", "total"} and doc["accuracy"]["images"] == 60
    assert doc["tflite_peak_bytes"] <= doc["arena"]["head"] <= ARENA_SLACK * doc["tflite_peak_bytes"]
    assert doc["analytic_peak_bytes"] <= doc["tflite_peak_bytes"] and doc["flash_bytes"] <= doc["file_bytes"]
    assert doc["accuracy"]["runtime"] == "TFLite Micro interpreter (reference int8 kernels)"
    assert sorted(p.name for p in out.parent.iterdir()) == ["winner.json", "winner.tflite"]  # no temporary left




def test_a_missing_extra_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                     capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(tflite, "PACKAGES", ("no_such_converter_package",))
    err = one_error(capsys, commands.export_main([str(tmp_path), "--trial", "0"]))
    assert err == ("error: exporting to TFLite needs the mcu extra (no_such_converter_package is missing): "
                   "pip install 'resnet-budget-search[mcu]'")


def test_tflite_micro_runtime_without_tflite_micro_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(tflite, "PACKAGES", ())  # the converter counts as installed; TFLite Micro does not
    monkeypatch.setattr(tflite, "has_micro", lambda: False)
    monkeypatch.setattr(export, "locate", lambda *args: (tmp_path / "model.pt", DataConfig(dataset="synthetic")))
    err = one_error(capsys, commands.export_main([str(tmp_path), "--trial", "0", "--evaluate", "10", "--runtime", "micro"]))
    assert err == ("error: --runtime micro needs TFLite Micro's interpreter (tflite_micro is missing): "
                   "pip install 'resnet-budget-search[mcu]'")


@needs_mcu
def test_trials_without_a_retrained_model_are_refused(smoke_retrained: Path, capsys: pytest.CaptureFixture) -> None:
    res = open_results(smoke_retrained)
    rejected = next(t.number for t in res.trials if "rejected" in t.user_attrs)
    assert f"trial {rejected} of study 'smoke' is rejected" in one_error(
        capsys, commands.export_main([str(smoke_retrained), "--trial", str(rejected)]))
    plain = res.complete()[-1].number  # complete, never retrained (only the best 2 were)
    assert f"trial {plain} has no retrained model" in one_error(
        capsys, commands.export_main([str(smoke_retrained), "--trial", str(plain)]))


@needs_mcu
def test_model_files_and_converter_refusals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture) -> None:
    import blocks

    path = blocks.save(tmp_path / "model.pt", build(ArchSpec(stages=1, blocks=(1,), width=8, input_size=12)))
    assert "carries no dataset; pass --space" in one_error(capsys, commands.export_main([str(path)]))

    def refuse(*args: object, **kw: object) -> None:
        raise RuntimeError("failed to legalize operation 'stablehlo.custom_call'\nmore lines")

    monkeypatch.setattr("litert_torch.convert", refuse)
    err = one_error(capsys, commands.export_main([str(path), "--random-calibration"]))
    assert err == ("error: the TFLite converter refused this design (RuntimeError: failed to legalize operation "
                   "'stablehlo.custom_call')")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


@needs_mcu
def test_a_model_file_calibrates_on_the_spaces_data_at_data_root(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import blocks

    path = blocks.save(tmp_path / "model.pt", build(ArchSpec(stages=1, blocks=(1,), width=8)))
    space = ROOT / "spaces" / "cifar10_mcu.yaml"
    empty = tmp_path / "no data here"
    err = one_error(capsys, commands.export_main([str(path), "--space", str(space), "--data-root", str(empty)]))
    assert str(empty) in err and "converter" not in err, err  # the dataset's own refusal, at the folder given
    assert not [p for p in tmp_path.iterdir() if p.suffix in (".tflite", ".json")]  # nothing written
