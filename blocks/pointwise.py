"""A strided 1x1 conv that trains on the CPU as a subsample then a 1x1 conv, around a oneDNN crash.

torch 2.14's CPU convolution (oneDNN) corrupts the heap in the weight gradient of a 1x1 conv with
stride 2 and fewer than 16 input channels, in channels_last, at 2 threads, whenever the batch is odd:
a segfault or `free(): invalid next size` (reproduced on this project's 2-core AMD EPYC VMs with
`Conv2d(8, 16, 1, stride=2)`, batches 3-33 and 127; even batches, 16+ input channels, one thread and
kernels over 1 never crashed; tests/blocks/test_pointwise.py runs the case). The projection shortcut of a
narrow stage is exactly that layer, and an odd batch comes from a batch size, a subset's last batch or
the dry run's probe. A 1x1 conv with stride s and no padding reads only the pixels at multiples of s,
so it equals a 1x1 conv with stride 1 on x[:, :, ::s, ::s]: the same sums (equal to fp32 rounding), on
another oneDNN kernel. Everywhere else (CUDA, autograd off, tracing, torch.compile) it is nn.Conv2d.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .depthwise import trains_on_cpu
from .grad_format import same_format_grad


class StridedPointwiseConv2d(nn.Conv2d):
    """nn.Conv2d(c_in, c_out, 1, stride, bias=bias), trained on the CPU as a subsample then a 1x1 conv."""

    def __init__(self, c_in: int, c_out: int, stride: int, bias: bool = False):
        super().__init__(c_in, c_out, 1, stride=stride, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._subsampled(x):
            return super().forward(x)
        s_h, s_w = self.stride
        x = same_format_grad(x)  # the subsample's backward would send an NCHW gradient (grad_format.py)
        return F.conv2d(x[:, :, ::s_h, ::s_w], self.weight, self.bias)

    def _subsampled(self, x: torch.Tensor) -> bool:
        """Whether this call subsamples first: a weight gradient on the CPU, outside any tracer."""
        return trains_on_cpu(x, self.weight)
