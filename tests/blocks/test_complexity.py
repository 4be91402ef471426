"""blocks/: the analytic complexity equals the built module, fvcore and torchvision over many specs.

Regenerate the pinned table (numbers from the built model, fvcore and a measured receptive field,
never from `complexity`) with: PYTHONPATH=. python tests/blocks/test_complexity.py --write-golden
"""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from fvcore.nn import FlopCountAnalysis, parameter_count
from torch import nn

from blocks import ArchSpec, build, complexity
from blocks.layers import MAC_KINDS
from tests.helpers.machine import one_thread  # noqa: F401 (autouse: this module runs on one thread)
from tests.helpers.specs import INVALID, N_DRAWS, SPECS

GOLDEN = Path(__file__).with_name("golden_complexity.json")



def fvcore_analysis(model: nn.Module, in_channels: int, size: int) -> FlopCountAnalysis:
    """fvcore's FLOP count of `model` in eval mode on one random image of side `size`."""
    x = torch.randn(1, in_channels, size, size)
    return FlopCountAnalysis(model.eval(), x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)


def fvcore_flops(model: nn.Module, in_channels: int, size: int) -> int:
    """fvcore's total FLOPs of `model` on one image of side `size`."""
    return int(fvcore_analysis(model, in_channels, size).total())


def module_kind(m: nn.Module) -> str:
    """The kind of operation a leaf module of the built model does, read from the module itself (MAC_KINDS)."""
    if isinstance(m, nn.Linear):
        return "linear"
    if not isinstance(m, nn.Conv2d):
        return "norm_pool"  # BatchNorm, pooling; ReLU, dropout, identity and the zero-pad shortcut count 0
    if m.groups == 1:
        return "pointwise" if m.kernel_size == (1, 1) else "dense"
    if m.out_channels > m.in_channels:
        return "depthwise_multiplier"
    return "depthwise_3x3" if m.kernel_size == (3, 3) else "depthwise_other"


def fvcore_by_kind(model: nn.Module, fca: FlopCountAnalysis) -> dict[str, int]:
    """fvcore's FLOPs of every leaf module, added up by the kind of the module (every MAC_KINDS key)."""
    counts, by_kind = fca.by_module(), dict.fromkeys(MAC_KINDS, 0)
    for name, m in model.named_modules():
        if not any(m.children()):
            by_kind[module_kind(m)] += counts.get(name, 0)
    return by_kind


def _spec_id(spec: ArchSpec) -> str:
    """Short readable test id."""
    return f"{spec.stem}-{spec.block}-{spec.shortcut}-n{spec.stages}-k{spec.kernel}{'s' if spec.separable else ''}"


def test_sampler_draws_300_valid_specs_over_every_option() -> None:
    """The random specs below are numerous and cover every value of every option."""
    assert len(SPECS) >= 300, f"only {len(SPECS)} valid specs ({INVALID} draws rejected by from_dict)"
    assert INVALID < N_DRAWS // 10
    seen = lambda key: {getattr(s, key) for s in SPECS}  # noqa: E731
    assert seen("stages") == {1, 2, 3, 4, 5}
    assert {b for s in SPECS for b in s.blocks} == {1, 2, 3, 4, 5, 6}
    assert seen("kernel") == {1, 3, 5, 7} and seen("skip_kernel") == {1, 3, 5}
    assert seen("block") == {"basic", "bottleneck"} and seen("separable") == {False, True}
    assert seen("shortcut") == {"projection", "zero_pad"} and seen("head") == {"linear", "conv"}
    assert seen("stem") == {"cifar", "imagenet", "conv_s2"} and seen("num_classes") == {10, 200}
    assert None in seen("pool") and len(seen("pool")) > 3
    assert seen("expansion") == {None, 1, 2, 3, 4}
    for key in ("widths", "strides"):
        assert None in seen(key) and len(seen(key)) > 5, key
    assert min(seen("input_size")) < 24 and max(seen("input_size")) > 56
    assert min(seen("width")) <= 16 and max(seen("width")) >= 100
    kinds = {kind for s in SPECS for kind, n in complexity(s).macs_by_kind if n}
    assert kinds == set(MAC_KINDS)  # every kind of operation is held to fvcore below


@pytest.mark.parametrize("spec", SPECS, ids=[f"{i:03d}-{_spec_id(s)}" for i, s in enumerate(SPECS)])
def test_analytic_counts_equal_model_and_fvcore(spec: ArchSpec) -> None:
    """params, FLOPs (in total and by kind), stage shapes and widening 1x1 count equal the model's and fvcore's."""
    cx = complexity(spec)
    model = build(spec).eval()
    assert cx.params == sum(p.numel() for p in model.parameters()) == parameter_count(model)[""]
    fca = fvcore_analysis(model, spec.in_channels, spec.input_size)
    assert cx.flops == fca.total()
    by_kind = fvcore_by_kind(model, fca)
    assert dict(cx.macs_by_kind) == by_kind and sum(by_kind.values()) == cx.flops  # every FLOP is in a leaf's kind
    shapes: list[tuple[int, ...]] = []
    hooks = [st.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:]))) for st in model.stages]
    with torch.no_grad():
        out = model(torch.randn(2, spec.in_channels, spec.input_size, spec.input_size))
    for h in hooks:
        h.remove()
    assert out.shape == (2, spec.num_classes)
    assert list(cx.stage_shapes) == shapes
    widening = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)
                and m.out_channels > m.in_channels]
    assert cx.widening_1x1 == len(widening)


# ---- receptive field ----------------------------------------------------------------------------
def _measure_rf(spec: ArchSpec) -> tuple[int, int, bool]:
    """Height and width of the input region seen by the centre of the last stage, and if clipped."""
    model = build(spec)
    stem = copy.deepcopy(model.stem)
    for i, m in enumerate(stem):
        if isinstance(m, nn.MaxPool2d):  # a max-pool passes gradient to one input only
            stem[i] = nn.AvgPool2d(m.kernel_size, m.stride, m.padding)
    # float64: the gradient at the field's edge is a product of one 0.01 per conv, too small for float32
    body = nn.Sequential(stem, copy.deepcopy(model.stages)).double().eval()
    with torch.no_grad():
        for m in body.modules():  # positive weights: every path adds, nothing cancels
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(0.01)
            elif isinstance(m, nn.BatchNorm2d):
                m.running_mean.zero_(), m.running_var.fill_(1.0), m.weight.fill_(1.0), m.bias.zero_()
    size = spec.input_size
    x = torch.ones(1, spec.in_channels, size, size, dtype=torch.float64, requires_grad=True)
    out = body(x)
    out[0, :, out.shape[2] // 2, out.shape[3] // 2].sum().backward()
    seen = x.grad[0].abs().sum(0) > 0
    rows, cols = seen.any(1).nonzero().flatten(), seen.any(0).nonzero().flatten()
    clipped = bool(rows[0] == 0 or cols[0] == 0 or rows[-1] == size - 1 or cols[-1] == size - 1)
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1), clipped


def measured_rf(spec: ArchSpec, size: int = 32) -> int:
    """Empirical receptive field: grow the input from `size` until the region is not clipped."""
    while True:
        h, w, clipped = _measure_rf(spec.replace(input_size=size))
        if not clipped:
            assert h == w, (h, w)
            return w
        size *= 2


_RF_BASE = {"width": 4, "blocks": [1, 2], "kernel": 3, "skip_kernel": 1}
RF_SPECS = [
    {}, {"kernel": 5, "skip_kernel": 3}, {"shortcut": "zero_pad"},
    {"kernel": 1, "skip_kernel": 3},  # the shortcut, not the residual branch, sets the field
    {"separable": True, "kernel": 5},
    {"shortcut": "zero_pad", "separable": True, "blocks": [1, 1, 2], "strides": [2, 1, 2]},
    {"block": "bottleneck"}, {"block": "bottleneck", "shortcut": "zero_pad", "kernel": 5},
    {"block": "bottleneck", "separable": True, "skip_kernel": 3},
    {"block": "bottleneck", "kernel": 1, "skip_kernel": 3}, {"blocks": [1, 1, 1, 1]},
    {"stem": "conv_s2", "blocks": [2, 1, 1]}, {"stem": "conv_s2", "shortcut": "zero_pad", "kernel": 5},
    {"stem": "conv_s2", "separable": True, "kernel": 1},
    {"stem": "conv_s2", "block": "bottleneck", "kernel": 5, "skip_kernel": 3},
    {"stem": "conv_s2", "block": "bottleneck", "shortcut": "zero_pad", "separable": True},
    {"stem": "conv_s2", "skip_kernel": 3, "blocks": [1, 1, 1], "strides": [1, 1, 2]},
    {"stem": "imagenet", "blocks": [2, 2]}, {"stem": "imagenet", "block": "bottleneck", "shortcut": "zero_pad"},
    {"stem": "imagenet", "separable": True, "kernel": 5, "skip_kernel": 3},
]


@pytest.mark.parametrize("overrides", RF_SPECS, ids=[str(i) for i in range(len(RF_SPECS))])
def test_receptive_field_equals_gradient_footprint(overrides: dict[str, Any]) -> None:
    """The analytic receptive field is the width of the input region with nonzero gradient."""
    spec = ArchSpec.from_dict({**_RF_BASE, **overrides})
    rf = complexity(spec).receptive_field
    assert measured_rf(spec, size=2 * rf + 1) == rf


# ---- torchvision parity and the pinned table ----------------------------------------------------
TORCHVISION = {  # name: (blocks, block kind, params published by torchvision)
    "resnet18": ([2, 2, 2, 2], "basic", 11_689_512),
    "resnet34": ([3, 4, 6, 3], "basic", 21_797_672),
    "resnet50": ([3, 4, 6, 3], "bottleneck", 25_557_032),
}


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_parity(name: str) -> None:
    """resnet18/34/50 specs have torchvision's parameter count and fvcore FLOPs at 224."""
    blocks, kind, published = TORCHVISION[name]
    spec = ArchSpec.from_dict({"blocks": blocks, "block": kind, "stem": "imagenet", "head": "linear",
                               "width": 64, "input_size": 224, "num_classes": 1000})
    tv = getattr(torchvision.models, name)()
    cx = complexity(spec)
    assert cx.params == published == sum(p.numel() for p in tv.parameters())
    assert cx.flops == fvcore_flops(tv, 3, 224) == fvcore_flops(build(spec), 3, 224)


GOLDEN_ARCHS: dict[str, dict[str, Any]] = {
    "cifar_resnet18": {"blocks": [2, 2, 2, 2], "width": 64},
    "nyu_3stage_pool": {"blocks": [4, 4, 3], "width": 64, "kernel": 3, "skip_kernel": 1, "pool": 8},
    "separable_k5": {"blocks": [2, 2, 2, 2], "width": 64, "kernel": 5, "separable": True},
    "bottleneck_k3s3": {"blocks": [3, 4, 6, 3], "width": 32, "block": "bottleneck", "skip_kernel": 3},
    "resnet20_zero_pad": {"blocks": [3, 3, 3], "width": 16, "shortcut": "zero_pad"},
    "tiny_conv_head": {"blocks": [2, 2, 2, 2], "width": 64, "stem": "conv_s2", "head": "conv", "num_classes": 200,
                       "input_size": 64, "separable": True},
    "resnet18_imagenet": {"blocks": [2, 2, 2, 2], "width": 64, "stem": "imagenet", "input_size": 224,
                          "num_classes": 1000},
    "wide_k7_strides": {"blocks": [2, 2, 2], "widths": [48, 96, 96], "kernel": 7, "strides": [1, 2, 1], "pool": 4,
                        "dropout": 0.2},
    # MLPerf Tiny's ResNet-8 (mlcommons/tiny, image_classification/keras_model.py) in our builder
    "mlperf_tiny_resnet8": {"stages": 3, "blocks": [1, 1, 1], "width": 16},
}


def write_golden() -> None:
    """Pin params (sum of numel), FLOPs (fvcore), measured receptive fields and the fx-walk peak for GOLDEN_ARCHS."""
    from tests.helpers.fx_memory import fx_peak_activations

    table: dict[str, Any] = {"_about": "params: sum(p.numel()); flops: fvcore, batch 1, one multiply-add = one "
                             "FLOP; receptive_field: measured from gradients; peak_activations: elements, "
                             "batch 1, from the torch.fx walk in tests/helpers/fx_memory.py. Written by "
                             "`PYTHONPATH=. python tests/blocks/test_complexity.py --write-golden`."}
    for name, arch in GOLDEN_ARCHS.items():
        spec = ArchSpec.from_dict(arch)
        model = build(spec)
        rf_spec = spec.replace(width=4, widths=None, pool=None)  # the receptive field ignores widths
        table[name] = {"arch": arch, "params": sum(p.numel() for p in model.parameters()),
                       "flops": fvcore_flops(model, spec.in_channels, spec.input_size),
                       "receptive_field": measured_rf(rf_spec, size=spec.input_size),
                       **dict(zip(("peak_activations", "stage_peaks"),
                                  fx_peak_activations(model, spec.in_channels, spec.input_size), strict=True))}
        print(name, table[name])
    GOLDEN.write_text(json.dumps(table, indent=2) + "\n")


@pytest.mark.parametrize("name", GOLDEN_ARCHS)
def test_complexity_matches_pinned_table(name: str) -> None:
    """complexity() reproduces the pinned numbers in golden_complexity.json."""
    row = json.loads(GOLDEN.read_text())[name]
    assert row["arch"] == GOLDEN_ARCHS[name]
    cx = complexity(ArchSpec.from_dict(row["arch"]))
    assert (cx.params, cx.flops, cx.receptive_field, cx.peak_activations, list(cx.stage_peaks)) == (
        row["params"], row["flops"], row["receptive_field"], row["peak_activations"], row["stage_peaks"])


# ---- invalid specs ------------------------------------------------------------------------------
INVALID_ARCHS = [
    ({"blocks": [2, 0, 2, 2]}, "blocks"), ({"blocks": [2, -1, 2, 2]}, "blocks"), ({"blocks": 0}, "blocks"),
    ({"kernel": 4}, "kernel"), ({"skip_kernel": 2}, "skip_kernel"),
    ({"pool": 5}, "pool"),  # input 32, 4 stages: the final map is 4x4
    ({"stages": 3, "blocks": [2, 2]}, "blocks"), ({"depth": 18}, "depth"),
    ({"widths": [16, 32]}, "widths"), ({"shortcut": "zero_pad", "widths": [64, 32, 32, 32]}, "shortcut"),
    ({"block": "resnext"}, "block"), ({"stem": "vit"}, "stem"), ({"head": "mlp"}, "head"),
    ({"shortcut": "none"}, "shortcut"), ({"stages": None}, "stages"), ({"stages": [1, 2], "blocks": 2}, "stages"),
]


@pytest.mark.parametrize("arch,key", INVALID_ARCHS, ids=[f"{k}-{i}" for i, (_, k) in enumerate(INVALID_ARCHS)])
def test_invalid_spec_raises_value_error_naming_key(arch: dict[str, Any], key: str) -> None:
    """An impossible spec is a ValueError whose message names the offending key."""
    with pytest.raises(ValueError, match=re.escape(repr(key))):
        ArchSpec.from_dict(arch)


if __name__ == "__main__":
    if sys.argv[1:] != ["--write-golden"]:
        sys.exit("usage: PYTHONPATH=. python tests/blocks/test_complexity.py --write-golden")
    write_golden()
