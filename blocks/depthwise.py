"""A depthwise conv whose weight gradient runs on oneDNN's depthwise kernel at every kernel width.

PyTorch's CPU convolutions are oneDNN's. oneDNN's depthwise backward-weights kernel (`jit_dw`) takes
kernels at most 3 wide (oneDNN src/cpu/x64/jit_uni_dw_conv_kernel_utils.cpp: `jcp.kw <= 3`; any height).
A 5x5 or 7x7 depthwise weight gradient falls to oneDNN's generic grouped kernel instead, which took
1.3-2.2x the time of the column groups below on the MCU winner's layers (`python
benchmarks/bench_separable.py --layers-only`). So for kernels wider than 3 the weight gradient is
computed as column groups at most 3 wide, each a depthwise weight gradient of a (k, <=3) kernel on
the input shifted so that the group's columns line up: the same sums, added in another order
(equal to fp32 rounding). The forward and the input gradient are oneDNN's own depthwise kernels.
Everywhere else (CUDA, autograd off, tracing by fvcore, torch.fx or ONNX, torch.compile) it is nn.Conv2d.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.jit import is_scripting, is_tracing  # type: ignore[attr-defined]  # documented, not in its __all__

GROUP = 3  # the widest kernel oneDNN's depthwise backward-weights kernel takes


class DepthwiseConv2d(nn.Conv2d):
    """nn.Conv2d(c, c, k, stride, padding=k // 2, groups=c, bias=False), with a faster CPU weight gradient."""

    def __init__(self, channels: int, k: int, stride: int = 1):
        super().__init__(channels, channels, k, stride=stride, padding=k // 2, groups=channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._column_grouped(x):
            return super().forward(x)
        weight = self.weight
        if torch.is_autocast_enabled("cpu"):  # the casts autocast makes for a conv, recorded by autograd
            dtype = torch.get_autocast_dtype("cpu")
            x, weight = x.to(dtype), weight.to(dtype)
        with torch.autocast("cpu", enabled=False):
            return _ColumnGroupedDepthwise.apply(x, weight, self.stride, self.padding)

    def _column_grouped(self, x: torch.Tensor) -> bool:
        """Whether this call takes the column-grouped weight gradient (training on the CPU, kernel over 3 wide)."""
        return self.kernel_size[1] > GROUP and self.padding_mode == "zeros" and trains_on_cpu(x, self.weight)


def trains_on_cpu(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether a conv call will take a weight gradient on the CPU, outside every tracer (fx, jit, compile, export)."""
    return backward_on_cpu(x) and weight.requires_grad  # x first: under torch.fx both are Proxies


def backward_on_cpu(x: torch.Tensor) -> bool:
    """Whether autograd will run a backward through `x` on the CPU, outside every tracer (fx, jit, compile, export)."""
    if isinstance(x, torch.fx.Proxy):  # torch.fx's symbolic trace: the plain module's graph
        return False
    return (x.device.type == "cpu" and torch.is_grad_enabled()
            and not (is_tracing() or is_scripting() or torch.compiler.is_compiling()))


class _ColumnGroupedDepthwise(torch.autograd.Function):
    """F.conv2d(x, weight, stride, padding, groups=channels), its weight gradient in column groups."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int],
                padding: tuple[int, int]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, None, stride, padding, 1, weight.shape[0])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        x, weight = ctx.saved_tensors
        grad = grad.contiguous(memory_format=torch.channels_last) if x.is_contiguous(
            memory_format=torch.channels_last) else grad.contiguous()
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = _backward(grad, x, weight, ctx.stride, ctx.padding, (True, False))
        if ctx.needs_input_grad[1]:
            grad_w = weight_grad(grad, x, weight, ctx.stride, ctx.padding)
        return grad_x, grad_w, None, None


def weight_grad(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int],
                padding: tuple[int, int]) -> torch.Tensor:
    """The depthwise weight gradient, in column groups at most GROUP wide (see the module docstring)."""
    kw, width, out_w = weight.shape[3], x.shape[3], grad.shape[3]
    parts = []
    for j0 in range(0, kw, GROUP):
        cols = min(GROUP, kw - j0)
        # Kernel column j0 + b meets input column w * stride + j0 + b - padding: this group reads the
        # input from column j0 - padding, `need` columns, zeros where they fall outside it.
        start, need = j0 - padding[1], stride[1] * (out_w - 1) + cols
        shifted = torch.empty((*x.shape[:3], need), dtype=x.dtype, device=x.device, memory_format=_format(x))
        lo, hi = max(0, start), min(width, start + need)
        shifted[..., :lo - start].zero_()
        shifted[..., lo - start:hi - start] = x[..., lo:hi]
        shifted[..., hi - start:].zero_()
        part = weight.new_empty((*weight.shape[:3], cols))
        parts.append(_backward(grad, shifted, part, stride, (padding[0], 0), (False, True)))
    return torch.cat(parts, 3)


def _backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int],
              padding: tuple[int, int], which: tuple[bool, bool]) -> torch.Tensor:
    """The input (which = (True, False)) or weight (False, True) gradient of a depthwise F.conv2d."""
    grads = torch.ops.aten.convolution_backward(grad, x, weight, None, list(stride), list(padding), [1, 1],
                                                False, [0, 0], weight.shape[0], [*which, False])
    return grads[0] if which[0] else grads[1]


def _format(x: torch.Tensor) -> torch.memory_format:
    """The memory format a copy of `x` keeps (oneDNN's depthwise kernels want channels_last)."""
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
