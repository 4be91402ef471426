"""Small layers (conv + BN, separable conv, shortcuts) and their analytic complexity twins.

Counting conventions follow fvcore (https://github.com/facebookresearch/fvcore, flop_count.py):
one fused multiply-add is one FLOP; convolutions count N * C_out * C_in/groups * k^2 * H_out * W_out
(bias not counted); a linear layer counts in * out; eval-mode BatchNorm with affine counts 2 per
element; adaptive average pooling counts 1 per input element. Activations, additions, max and
fixed-kernel average pooling, padding and slicing count 0 (fvcore ignores or skips them).

Peak activation memory (`Cx.peak`, elements at batch 1) is the largest total size of the tensors that
must be live at the same time when the network runs its layers in order, as a deployed int8 network
does (TFLite Micro's planner, MLPerf Tiny): each layer's input and output are live together; a block's
input stays live until its shortcut has used it (the shortcut runs after the main branch); the
residual add's two inputs and its output are live together. BatchNorm (folded into the conv before
it), ReLU (in place), dropout and flatten are no extra tensor. Every other layer writes a new tensor:
each conv (a separable conv's depthwise output is an intermediate tensor), a projection shortcut, a
zero-pad shortcut's strided subsampling and its padding, each pooling layer and the linear layer.
With `Cx.pads` set (`blocks.resnet.tflite_peak`), the walk also counts the explicit PAD tensor that TFLite's
converter puts before a stride-2 conv or max-pool with a kernel over 1 on an even-sized map (`explicit_pad`).

Every counted FLOP is also counted under the kind of operation that does it (`Cx.macs`, keys MAC_KINDS), so
the kinds add up to the total. The kinds follow the int8 kernels CMSIS-NN picks for a layer (docs/sizing.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .depthwise import DepthwiseConv2d
from .grad_format import same_format_grad
from .pointwise import StridedPointwiseConv2d

# Multiply-adds by kind, in the order printed. The depthwise kinds are the three paths of CMSIS-NN's
# arm_depthwise_conv_wrapper_s8.c: 3x3 with one filter a channel, other kernels with one filter a channel,
# and a channel multiplier over 1 (any kernel). BatchNorm is folded into its conv when deployed.
MAC_KINDS = {
    "dense": "dense conv (k > 1)",
    "depthwise_3x3": "depthwise 3x3",
    "depthwise_other": "depthwise, other kernels",
    "depthwise_multiplier": "depthwise, channel multiplier > 1",
    "pointwise": "pointwise conv (1x1)",
    "linear": "linear",
    "norm_pool": "BatchNorm (folded on device), global pool",
}


@dataclass
class Cx:
    """Running analytic state: the current feature map plus the totals so far (batch of 1)."""

    h: int
    w: int
    c: int
    params: int = 0
    flops: int = 0
    rf: int = 1  # receptive field of one location of the current feature map, in input pixels
    jump: int = 1  # distance in input pixels between neighbouring locations of the current map
    widening_1x1: int = 0  # 1x1 convolutions whose output has more channels than their input
    live: int = 0  # elements of the tensors live now, the current map included
    peak: int = 0  # the largest number of elements live at once so far
    keep: bool = False  # the current map stays live after the next layer (a block input kept for its shortcut)
    macs: dict[str, int] = field(default_factory=dict)  # the FLOPs so far by kind (MAC_KINDS); they sum to flops
    pads: bool = False  # count TFLite's explicit PAD tensors too (explicit_pad)

    def __post_init__(self) -> None:
        if not self.live:  # a fresh state: its feature map (the network's input) is the one live tensor
            self.live = self.peak = self.size

    @property
    def size(self) -> int:
        """Elements of the current feature map."""
        return self.c * self.h * self.w

    def branch(self) -> Cx:
        """Same feature map, zero totals: for counting the other branch of a residual block."""
        return Cx(self.h, self.w, self.c, rf=self.rf, jump=self.jump, pads=self.pads)

    def join(self, other: Cx) -> Cx:
        """Merge a parallel branch into this one: counts add, the receptive field is the larger."""
        self.params += other.params
        for kind, n in other.macs.items():
            add_flops(self, kind, n)
        self.widening_1x1 += other.widening_1x1
        self.rf = max(self.rf, other.rf)
        return self


def add_flops(cx: Cx, kind: str, n: int) -> None:
    """Count `n` FLOPs (multiply-adds) done by an operation of `kind` (a MAC_KINDS key)."""
    cx.flops += n
    cx.macs[kind] = cx.macs.get(kind, 0) + n


def conv_kind(c_in: int, c_out: int, k: int, groups: int) -> str:
    """The MAC_KINDS key of a k x k conv from c_in to c_out channels in `groups` groups."""
    if groups == 1:
        return "pointwise" if k == 1 else "dense"
    if c_out > c_in:  # groups == c_in: each input channel feeds c_out // c_in filters
        return "depthwise_multiplier"
    return "depthwise_3x3" if k == 3 else "depthwise_other"


def new_tensor(cx: Cx, freed: int) -> Cx:
    """Memory twin of a layer that has just written the current map: it was live together with the
    layer's input, which then frees `freed` elements (none when the input is kept)."""
    cx.peak = max(cx.peak, cx.live + cx.size)
    cx.live += cx.size - (0 if cx.keep else freed)
    cx.keep = False
    return cx


def out_size(size: int, kernel: int, stride: int) -> int:
    """Output size of a conv/pool with padding kernel // 2 (odd kernel)."""
    pad = kernel // 2
    return (size + 2 * pad - kernel) // stride + 1


def explicit_pad(cx: Cx, k: int, stride: int) -> None:
    """Memory twin of the PAD op TFLite's converter writes before a strided k x k conv or pool (with `cx.pads`).

    PyTorch pads k // 2 on every side; TFLite's SAME padding at stride 2 pads an even-sized map by one less
    before than after, so the converter pads the map into a new (H + k - 1) x (W + k - 1) tensor and runs
    the op unpadded on it. An odd-sized map gets SAME's symmetric padding (litert-torch 0.10)."""
    if cx.pads and stride > 1 and k > 1 and (cx.h % 2 == 0 or cx.w % 2 == 0):
        freed = cx.size
        cx.h, cx.w = cx.h + k - 1, cx.w + k - 1
        new_tensor(cx, freed)


def conv_cx(cx: Cx, c_out: int, k: int, stride: int = 1, groups: int = 1, bias: bool = False) -> Cx:
    """Twin of nn.Conv2d(cx.c, c_out, k, stride, padding=k // 2, groups, bias)."""
    h, w = out_size(cx.h, k, stride), out_size(cx.w, k, stride)
    explicit_pad(cx, k, stride)
    freed = cx.size
    weights = c_out * (cx.c // groups) * k * k
    cx.params += weights + (c_out if bias else 0)
    add_flops(cx, conv_kind(cx.c, c_out, k, groups), weights * h * w)
    cx.rf += (k - 1) * cx.jump
    cx.jump *= stride
    if k == 1 and c_out > cx.c:
        cx.widening_1x1 += 1
    cx.h, cx.w, cx.c = h, w, c_out
    return new_tensor(cx, freed)


def bn_cx(cx: Cx) -> Cx:
    """Twin of nn.BatchNorm2d(cx.c) in eval mode: weight + bias, 2 FLOPs per element (folded: no tensor)."""
    cx.params += 2 * cx.c
    add_flops(cx, "norm_pool", 2 * cx.c * cx.h * cx.w)
    return cx


def pool_cx(cx: Cx, k: int, stride: int) -> Cx:
    """Twin of a max-pool with padding k // 2: moves the map, no params, no counted FLOPs."""
    h, w = out_size(cx.h, k, stride), out_size(cx.w, k, stride)
    explicit_pad(cx, k, stride)  # a PADV2 with the int8 minimum, in TFLite
    freed = cx.size
    cx.h, cx.w = h, w
    cx.rf += (k - 1) * cx.jump
    cx.jump *= stride
    return new_tensor(cx, freed)


def conv(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1, bias: bool = False) -> nn.Conv2d:
    """A 'same'-padded conv (odd kernel)."""
    if k == 1 and stride > 1 and groups == 1:  # a projection shortcut: around a oneDNN crash (pointwise.py)
        return StridedPointwiseConv2d(c_in, c_out, stride, bias=bias)
    return nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, groups=groups, bias=bias)


class SeparableConv(nn.Sequential):
    """Depthwise k x k conv then pointwise 1x1 conv (no norm between, as in timm's SeparableConv2d).

    When the output is a whole multiple of the input, the depthwise conv widens the channels
    (channel multiplier) so the 1x1 never increases the channel count.
    """

    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1):
        mid = c_out if (c_out > c_in and c_out % c_in == 0) else c_in
        # one filter a channel: DepthwiseConv2d, the same module with a faster CPU weight gradient
        depthwise = DepthwiseConv2d(c_in, k, stride) if mid == c_in else conv(c_in, mid, k, stride, groups=c_in)
        super().__init__(depthwise, conv(mid, c_out, 1))

    @staticmethod
    def complexity(cx: Cx, c_out: int, k: int, stride: int = 1) -> Cx:
        """Twin of SeparableConv(cx.c, c_out, k, stride)."""
        c_in = cx.c
        mid = c_out if (c_out > c_in and c_out % c_in == 0) else c_in
        conv_cx(cx, mid, k, stride, groups=c_in)
        return conv_cx(cx, c_out, 1)


def block_conv(c_in: int, c_out: int, k: int, stride: int, separable: bool) -> nn.Module:
    """The k x k conv of a block: plain or depthwise-separable."""
    return SeparableConv(c_in, c_out, k, stride) if separable else conv(c_in, c_out, k, stride)


def block_conv_cx(cx: Cx, c_out: int, k: int, stride: int, separable: bool) -> Cx:
    """Twin of block_conv."""
    if separable:
        return SeparableConv.complexity(cx, c_out, k, stride)
    return conv_cx(cx, c_out, k, stride)


class ZeroPadShortcut(nn.Module):
    """Parameter-free shortcut (ResNet paper, option A): subsample by the stride, zero-pad channels."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        if c_out < c_in:
            raise ValueError(f"zero_pad shortcut cannot shrink {c_in} channels to {c_out}")
        self.pad, self.stride = c_out - c_in, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = same_format_grad(x)  # the subsample's and the pad's backward would send an NCHW gradient
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.pad)) if self.pad else x

    @staticmethod
    def complexity(cx: Cx, c_out: int, stride: int) -> Cx:
        """Twin: subsampling is a 1x1 window with this stride; padding adds nothing counted.

        Memory: the subsampled copy and the padded copy are each a new tensor, as in forward().
        """
        if stride > 1:
            freed = cx.size
            cx.h, cx.w = out_size(cx.h, 1, stride), out_size(cx.w, 1, stride)
            cx.jump *= stride
            new_tensor(cx, freed)
        if c_out > cx.c:
            freed, cx.c = cx.size, c_out
            new_tensor(cx, freed)
        return cx


class ProjectionShortcut(nn.Sequential):
    """K x K conv + BN that matches the residual's shape (torchvision's `downsample` when K = 1)."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int):
        super().__init__(conv(c_in, c_out, k, stride), nn.BatchNorm2d(c_out))

    @staticmethod
    def complexity(cx: Cx, c_out: int, k: int, stride: int) -> Cx:
        """Twin of ProjectionShortcut(cx.c, c_out, k, stride)."""
        return bn_cx(conv_cx(cx, c_out, k, stride))


def make_shortcut(kind: str, c_in: int, c_out: int, k: int, stride: int) -> nn.Module:
    """Identity when shapes match, otherwise the requested shortcut kind."""
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    if kind == "zero_pad":
        return ZeroPadShortcut(c_in, c_out, stride)
    return ProjectionShortcut(c_in, c_out, k, stride)


def shortcut_cx(cx: Cx, kind: str, c_out: int, k: int, stride: int) -> Cx:
    """Twin of make_shortcut."""
    if stride == 1 and cx.c == c_out:
        return cx
    if kind == "zero_pad":
        return ZeroPadShortcut.complexity(cx, c_out, stride)
    return ProjectionShortcut.complexity(cx, c_out, k, stride)


def residual_add_cx(cx: Cx, x: Cx, kind: str, k: int, stride: int) -> Cx:
    """Twin of `main + make_shortcut(kind, x.c, cx.c, k, stride)(x)` once the main branch (`cx`, run from
    `x` with `keep` set) is done: the shortcut runs now, then the add's inputs and output are live together."""
    main = cx.size
    x.live, x.peak = cx.live, cx.peak
    shortcut_cx(x, kind, cx.c, k, stride)
    cx.join(x)
    cx.live, cx.peak = x.live, x.peak
    return new_tensor(cx, main + x.size)
