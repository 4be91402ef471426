"""Peak activation memory: the analytic count in blocks/ equals a torch.fx walk of the built model."""

from __future__ import annotations

import pytest

from blocks import ArchSpec, build, complexity
from blocks.layers import Cx, bn_cx, conv_cx
from blocks.resnet import tflite_peak
from tests.helpers.fx_memory import fx_peak_activations
from tests.helpers.machine import one_thread  # noqa: F401 (autouse: this module runs on one thread)
from tests.helpers.specs import SPECS

FX_SPECS = SPECS[:120]  # the seeded random specs test_blocks.py uses: every option, >= 100 of them



def test_fx_specs_cover_every_option() -> None:
    """The specs walked below are >= 100 and cover every block, stem, head, shortcut and pooling option."""
    seen = lambda key: {getattr(s, key) for s in FX_SPECS}  # noqa: E731
    assert len(FX_SPECS) >= 100
    assert seen("block") == {"basic", "bottleneck"} and seen("separable") == {False, True}
    assert seen("shortcut") == {"projection", "zero_pad"} and seen("head") == {"linear", "conv"}
    assert seen("stem") == {"cifar", "imagenet", "conv_s2"}
    assert None in seen("pool") and len(seen("pool")) > 3 and 0.1 in seen("dropout")
    assert any(s.strides is not None and 1 in s.stage_strides[1:] for s in FX_SPECS)


@pytest.mark.parametrize("spec", FX_SPECS,
                         ids=[f"{i:03d}-{s.stem}-{s.block}-{s.shortcut}" for i, s in enumerate(FX_SPECS)])
def test_analytic_peak_equals_fx_walk(spec: ArchSpec) -> None:
    """The analytic peak, in the whole network and within each stage, equals the fx graph walk's."""
    cx = complexity(spec)
    assert (cx.peak_activations, cx.stage_peaks) == fx_peak_activations(build(spec), spec.in_channels,
                                                                         spec.input_size)


def test_resnet8_peak_by_hand() -> None:
    """MLPerf Tiny's ResNet-8: the first block's input, its conv1 output and conv2 output, 16 x 32 x 32 each,
    are live together: 49,152 elements, 48 KiB at int8 (the default), 192 KiB at fp32."""
    cx = complexity(ArchSpec.from_dict({"stages": 3, "blocks": [1, 1, 1], "width": 16}))
    assert (cx.params, cx.flops) == (78_042, 12_677_760)  # issue 14: 78,042 params, 12.7 M multiply-adds
    assert cx.peak_activations == 3 * 16 * 32 * 32 == cx.peak_bytes() == 48 * 1024
    assert cx.peak_bytes(4) == 192 * 1024
    # stage 2: conv2's 32x16x16 output beside the kept 16x32x32 input and conv1's output (16,384 + 2 x 8,192)
    assert cx.stage_peaks == (49_152, 32_768, 16_384)


def test_a_layer_twin_counts_its_input_and_output() -> None:
    """A layer's twin on a fresh state: the input and the output are live together."""
    assert conv_cx(Cx(32, 32, 3), 16, 3).peak == 3 * 32 * 32 + 16 * 32 * 32
    assert conv_cx(bn_cx(Cx(8, 8, 4)), 4, 1).live == 4 * 8 * 8  # BN folded: no tensor of its own


def test_separable_and_zero_pad_tensors_by_hand() -> None:
    """A separable conv's depthwise output and a zero-pad shortcut's subsampled and padded copies are tensors."""
    # stage 2 is one basic block, 8 -> 12 channels at stride 2 from an 8x8 map (no depthwise multiplier)
    spec = ArchSpec.from_dict({"stages": 2, "blocks": [1, 1], "widths": [8, 12], "input_size": 8,
                               "separable": True, "shortcut": "zero_pad"})
    x, dw1, out, sub = 8 * 8 * 8, 8 * 4 * 4, 12 * 4 * 4, 8 * 4 * 4
    steps = [x + dw1, x + dw1 + out,  # depthwise 1, pointwise 1 (the block input kept for the shortcut)
             x + out + out, x + out + out,  # depthwise 2 (12 channels), pointwise 2
             x + out + sub, out + sub + out, out + out + out]  # subsample, zero-pad, add
    assert complexity(spec).stage_peaks[1] == max(steps) == 896


@pytest.mark.parametrize(("arch", "expected"), [
    ({"stages": 3, "blocks": [1, 1, 1], "width": 16}, 49_152),  # PAD 16x34x34 + its input: 34,880, under the peak
    # imagenet stem at 16 px: the 7x7/2 conv's PAD 3x22x22 beside the 3x16x16 input (the peak counted 1,280)
    ({"stages": 1, "blocks": [1], "width": 8, "stem": "imagenet", "input_size": 16}, 3 * 22 * 22 + 3 * 16 * 16),
    # the max-pool's PADV2 48x10x10 beside the stem conv's 48x8x8 output
    ({"stages": 1, "blocks": [1], "width": 48, "stem": "imagenet", "input_size": 16}, 48 * 10 * 10 + 48 * 8 * 8),
    ({"stages": 1, "blocks": [1], "width": 8, "input_size": 15, "strides": [2]}, complexity(  # odd: SAME, no PAD
        ArchSpec.from_dict({"stages": 1, "blocks": [1], "width": 8, "input_size": 15, "strides": [2]})).peak_activations),
])
def test_tflite_peak_counts_the_converters_pad_tensors(arch: dict, expected: int) -> None:
    """tflite_peak adds the explicit PAD before each strided k x k conv or pool of an even-sized map; never less
    than the peak (benchmarks/bench_arena.py: equal to the converted graph's live peak on 122 designs)."""
    spec = ArchSpec.from_dict(arch)
    assert tflite_peak(spec) == expected >= complexity(spec).peak_activations
    assert all(tflite_peak(s) >= complexity(s).peak_activations for s in FX_SPECS)
