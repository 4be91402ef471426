"""Gradients that come back in their tensor's memory format, where an op's backward would change it.

The trainer runs on the CPU in channels_last. Two ops of this package's models send their gradient
back in the default (NCHW) format whatever their input's format: the global average pool (`mean`'s
backward expands a contiguous gradient) and the zero-pad shortcut (the strided subsample's backward
fills a new NCHW tensor). From there the NCHW gradient spreads: autograd adds it to the main branch's
channels_last gradient into an NCHW sum, and each elementwise backward that meets the two formats
(ReLU's `threshold_backward` above all) runs 8-12x slower than on one format (`python -m
benchmarks.bench_separable`, "formats"). `same_format_grad(x)` is x, whose gradient is turned back into
x's format once, where it arrives: a copy of one tensor in place of those slow mixed-format passes.
The values are the same; only their order in memory changes. Outside CPU training (CUDA, autograd
off, tracing by fvcore, torch.fx or ONNX, torch.compile) it is x itself.
"""

from __future__ import annotations

from typing import Any

import torch

from .depthwise import backward_on_cpu


class _SameFormatGrad(torch.autograd.Function):
    """The identity, whose backward gives the gradient the memory format its input had."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous(memory_format=torch.channels_last) if ctx.channels_last else grad


def same_format_grad(x: torch.Tensor) -> torch.Tensor:
    """`x`; training on the CPU, its gradient comes back channels_last when `x` is channels_last."""
    if not backward_on_cpu(x) or x.dim() != 4 or not x.requires_grad:  # backward_on_cpu first: an fx Proxy
        return x
    return _SameFormatGrad.apply(x)
