"""The parametric ResNet: blocks, stem, head, `build(spec)` and its twin `complexity(spec)`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import torch
from torch import nn

from .grad_format import same_format_grad
from .layers import (
    MAC_KINDS,
    Cx,
    add_flops,
    block_conv,
    block_conv_cx,
    bn_cx,
    conv,
    conv_cx,
    make_shortcut,
    new_tensor,
    pool_cx,
    residual_add_cx,
)
from .spec import STEM_CONV, STEM_POOL, ArchSpec

ACTIVATION_BYTES = 1  # bytes per activation element: int8, as MLPerf Tiny and TFLite Micro deploy
# TFLite Micro's arena head is at least tflite_peak bytes (any planner's need) and at most this many times it: its
# greedy planner places the largest tensors first, and equal ones in index order (benchmarks/bench_arena.py:
# at most 1.52 over the 122 designs it was set from, 1.56 over 122 more drawn after; docs/sizing.md)
ARENA_SLACK = 1.6


class BasicBlock(nn.Module):
    """Two F x F convs with BN and ReLU plus a shortcut (torchvision's BasicBlock, any kernel)."""

    def __init__(self, c_in: int, width: int, c_out: int, stride: int, spec: ArchSpec):
        super().__init__()
        k, sep = spec.kernel, spec.separable
        self.conv1, self.bn1 = block_conv(c_in, width, k, stride, sep), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = block_conv(width, c_out, k, 1, sep), nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = make_shortcut(spec.shortcut, c_in, c_out, spec.skip_kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))

    @staticmethod
    def complexity(cx: Cx, width: int, c_out: int, stride: int, spec: ArchSpec) -> Cx:
        """Twin of BasicBlock(cx.c, width, c_out, stride, spec)."""
        k, sep = spec.kernel, spec.separable
        x, cx.keep = cx.branch(), True  # the block input stays live until the shortcut has read it
        bn_cx(block_conv_cx(cx, width, k, stride, sep))
        bn_cx(block_conv_cx(cx, c_out, k, 1, sep))
        return residual_add_cx(cx, x, spec.shortcut, spec.skip_kernel, stride)


class Bottleneck(nn.Module):
    """1x1 reduce, F x F (carrying the stride, torchvision's v1.5), 1x1 expand, plus a shortcut."""

    def __init__(self, c_in: int, width: int, c_out: int, stride: int, spec: ArchSpec):
        super().__init__()
        k, sep = spec.kernel, spec.separable
        self.conv1, self.bn1 = conv(c_in, width, 1), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = block_conv(width, width, k, stride, sep), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = conv(width, c_out, 1), nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = make_shortcut(spec.shortcut, c_in, c_out, spec.skip_kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))

    @staticmethod
    def complexity(cx: Cx, width: int, c_out: int, stride: int, spec: ArchSpec) -> Cx:
        """Twin of Bottleneck(cx.c, width, c_out, stride, spec)."""
        x, cx.keep = cx.branch(), True  # the block input stays live until the shortcut has read it
        bn_cx(conv_cx(cx, width, 1))
        bn_cx(block_conv_cx(cx, width, spec.kernel, stride, spec.separable))
        bn_cx(conv_cx(cx, c_out, 1))
        return residual_add_cx(cx, x, spec.shortcut, spec.skip_kernel, stride)


BLOCKS: dict[str, type[BasicBlock | Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


class Stem(nn.Sequential):
    """cifar: 3x3/1 conv; conv_s2: 3x3/2 conv; imagenet: 7x7/2 conv + 3x3/2 max-pool. Each with BN, ReLU."""

    def __init__(self, kind: str, c_in: int, c_out: int):
        k, s = STEM_CONV[kind]
        layers: list[nn.Module] = [conv(c_in, c_out, k, s), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        if kind in STEM_POOL:
            pk, ps = STEM_POOL[kind]
            layers.append(nn.MaxPool2d(pk, stride=ps, padding=pk // 2))
        super().__init__(*layers)

    @staticmethod
    def complexity(cx: Cx, kind: str, c_out: int) -> Cx:
        """Twin of Stem(kind, cx.c, c_out)."""
        k, s = STEM_CONV[kind]
        bn_cx(conv_cx(cx, c_out, k, s))
        return pool_cx(cx, *STEM_POOL[kind]) if kind in STEM_POOL else cx


class Head(nn.Module):
    """Average pool (kernel P, or global), then a linear layer or a 1x1 conv + global average."""

    def __init__(self, kind: str, c_in: int, size: int, pool: int | None, num_classes: int, dropout: float):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1) if pool is None else nn.AvgPool2d(pool)
        side = 1 if pool is None else (size - pool) // pool + 1
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc: nn.Linear | nn.Sequential
        if kind == "linear":
            self.fc = nn.Linear(c_in * side * side, num_classes)
        else:
            self.fc = nn.Sequential(conv(c_in, num_classes, 1, bias=True), nn.AdaptiveAvgPool2d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.pool(same_format_grad(x)))  # the global pool's backward would send NCHW
        if isinstance(self.fc, nn.Linear):
            return self.fc(torch.flatten(x, 1))
        return torch.flatten(self.fc(x), 1)

    @staticmethod
    def complexity(cx: Cx, kind: str, pool: int | None, num_classes: int) -> Cx:
        """Twin of Head(kind, cx.c, cx.h, pool, num_classes, dropout); dropout and flatten are no tensor."""
        freed = cx.size
        if pool is None:
            add_flops(cx, "norm_pool", cx.c * cx.h * cx.w)  # fvcore: adaptive_avg_pool2d, 1 per input element
            cx.h = cx.w = 1
        else:
            cx.h, cx.w = (cx.h - pool) // pool + 1, (cx.w - pool) // pool + 1
        new_tensor(cx, freed)
        if kind == "linear":
            features = cx.c * cx.h * cx.w
            cx.params += features * num_classes + num_classes
            add_flops(cx, "linear", features * num_classes)
        else:
            conv_cx(cx, num_classes, 1, bias=True)
            add_flops(cx, "norm_pool", cx.c * cx.h * cx.w)  # the global average after the 1x1 conv
        freed = cx.size
        cx.c, cx.h, cx.w = num_classes, 1, 1
        return new_tensor(cx, freed)


class ResNet(nn.Module):
    """Stem, N stages of residual blocks, head; built only from an ArchSpec."""

    def __init__(self, spec: ArchSpec):
        super().__init__()
        self.spec = spec
        self.extra: dict[str, Any] = {}  # what blocks.load read beside the weights (blocks.save's `extra`)
        block, e = BLOCKS[spec.block], spec.block_expansion
        self.stem = Stem(spec.stem, spec.in_channels, spec.stem_width)
        c_in, stages = spec.stem_width, []
        for width, depth, stride in zip(spec.stage_widths, spec.blocks, spec.stage_strides, strict=True):
            layers = []
            for i in range(depth):
                layers.append(block(c_in, width, width * e, stride if i == 0 else 1, spec))
                c_in = width * e
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.head = Head(spec.head, c_in, spec.stage_sizes()[-1], spec.pool, spec.num_classes, spec.dropout)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


def _init_weights(model: nn.Module) -> None:
    """Kaiming-normal convs and unit BN, as torchvision's ResNet, with the last BN of every residual
    branch zeroed so each block starts as the identity (Goyal et al. 2017, torchvision's
    `zero_init_residual`): deep or short-trained trials start stable."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in model.modules():
        if isinstance(m, BasicBlock):
            nn.init.zeros_(m.bn2.weight)
        elif isinstance(m, Bottleneck):
            nn.init.zeros_(m.bn3.weight)


@dataclass(frozen=True)
class Complexity:
    """Exact analytic counts for one spec at batch size 1 (FLOPs: fvcore's multiply-add convention)."""

    params: int
    flops: int
    receptive_field: int  # of one location of the last stage's feature map, in input pixels
    widening_1x1: int  # 1x1 convs (shortcuts and head included) that increase the channel count
    stage_shapes: tuple[tuple[int, int, int], ...] = field(default=())  # (C, H, W) after each stage
    # Peak activation memory in elements (see blocks/layers.py): the largest total size of the tensors
    # live at once when the layers run in order, the input image included; BN folded, ReLU in place.
    peak_activations: int = 0
    stage_peaks: tuple[int, ...] = field(default=())  # the same peak within each stage's layers
    # FLOPs split by the kind of operation that does them, every key of MAC_KINDS in its order; they sum to flops
    macs_by_kind: tuple[tuple[str, int], ...] = field(default=())

    def peak_bytes(self, bytes_per_element: int = ACTIVATION_BYTES) -> int:
        """Peak activation memory in bytes at this precision (default int8, as MLPerf Tiny deploys)."""
        return self.peak_activations * bytes_per_element


def build(spec: ArchSpec) -> ResNet:
    """The nn.Module described by `spec`, taking (batch, in_channels, H, W)."""
    spec.validate()
    return ResNet(spec)


def complexity(spec: ArchSpec) -> Complexity:
    """Params, FLOPs, receptive field, stage shapes and peak activation memory of `spec`, without building it."""
    spec.validate()
    cx = Cx(h=spec.input_size, w=spec.input_size, c=spec.in_channels)  # the input image is live until read
    shapes, peaks = _walk(cx, spec)
    macs = tuple((kind, cx.macs.get(kind, 0)) for kind in MAC_KINDS)
    return Complexity(cx.params, cx.flops, cx.rf, cx.widening_1x1, shapes, cx.peak, peaks, macs)


def tflite_peak(spec: ArchSpec) -> int:
    """Peak activation elements of the int8 TFLite graph: `complexity(spec).peak_activations` plus the explicit
    PAD tensor the converter writes before each strided k x k conv or max-pool of an even-sized map (docs/sizing.md).
    """
    spec.validate()
    cx = Cx(h=spec.input_size, w=spec.input_size, c=spec.in_channels, pads=True)
    _walk(cx, spec)
    return cx.peak


def arena_bound(spec: ArchSpec) -> int:
    """Bytes TFLite Micro's arena head takes at most for `spec` as int8: ARENA_SLACK x tflite_peak, rounded up
    (the bound budget.arena holds; the arena's tail is not in it)."""
    return math.ceil(Fraction(str(ARENA_SLACK)) * tflite_peak(spec) * ACTIVATION_BYTES)  # exact: 1.6 as 8/5


def _walk(cx: Cx, spec: ArchSpec) -> tuple[tuple[tuple[int, int, int], ...], tuple[int, ...]]:
    """Run every layer's twin on `cx` (stem, stages, head): the stage shapes and each stage's peak. The head
    (pooling, a linear layer or a 1x1 conv) leaves `cx.rf` at the last stage's receptive field."""
    Stem.complexity(cx, spec.stem, spec.stem_width)
    block, e, shapes, peaks = BLOCKS[spec.block], spec.block_expansion, [], []
    for width, depth, stride in zip(spec.stage_widths, spec.blocks, spec.stage_strides, strict=True):
        before, cx.peak = cx.peak, 0
        for i in range(depth):
            block.complexity(cx, width, width * e, stride if i == 0 else 1, spec)
        shapes.append((cx.c, cx.h, cx.w))
        peaks.append(cx.peak)
        cx.peak = max(before, cx.peak)
    Head.complexity(cx, spec.head, spec.pool, spec.num_classes)
    return tuple(shapes), tuple(peaks)
