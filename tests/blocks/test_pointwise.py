"""blocks/pointwise.py: a strided 1x1 conv trained as subsample + 1x1 equals nn.Conv2d, and survives the
odd batches at 2 threads that crash oneDNN's strided 1x1 weight gradient."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from blocks import ArchSpec, build
from blocks.layers import ProjectionShortcut
from blocks.pointwise import StridedPointwiseConv2d
from tests.helpers.processes import child_env
from tests.helpers.spaces import ROOT


@pytest.mark.parametrize("c_in,stride,size,channels_last,bias", [
    (8, 2, 12, True, False), (8, 2, 13, True, False), (3, 2, 32, False, True), (24, 3, 17, True, False)])
def test_output_and_gradients_equal_plain_conv(c_in: int, stride: int, size: int, channels_last: bool,
                                               bias: bool) -> None:
    torch.manual_seed(c_in + stride)
    new = StridedPointwiseConv2d(c_in, 16, stride, bias=bias)
    old = nn.Conv2d(c_in, 16, 1, stride, bias=bias)
    old.load_state_dict(new.state_dict())  # the same state dict: saved models load either way
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(4, c_in, size, size).to(memory_format=fmt)
    out = []
    for conv in (new, old):
        xi = x.clone().requires_grad_()
        y = conv(xi)
        y.backward(torch.ones_like(y))
        out.append((y.detach(), xi.grad, conv.weight.grad))
    for a, b in zip(*out, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_plain_conv_where_nothing_trains() -> None:
    conv = StridedPointwiseConv2d(8, 16, 2)
    x = torch.randn(2, 8, 8, 8)
    assert conv._subsampled(x)
    with torch.no_grad():
        assert not conv._subsampled(x)
    traced = torch.fx.symbolic_trace(nn.Sequential(conv))  # the peak walker's view: one strided conv, no slice
    calls = [n.target for n in traced.graph.nodes if n.op == "call_function"]
    assert calls == [torch.conv2d]


def test_projection_shortcuts_use_it() -> None:
    model = build(ArchSpec(stages=2, blocks=(1, 1), widths=(8, 16), shortcut="projection"))
    convs = [m[0] for m in model.modules() if isinstance(m, ProjectionShortcut)]
    assert convs and all(isinstance(c, StridedPointwiseConv2d) for c in convs)


def test_odd_batches_at_two_threads_train() -> None:
    """The case that crashed: 8 -> 16 channels, stride 2, channels_last, 2 threads, odd batches (a child
    process: a heap corruption would take pytest down with it)."""
    script = textwrap.dedent("""
        import torch
        from blocks.pointwise import StridedPointwiseConv2d
        torch.set_num_threads(2)
        conv = StridedPointwiseConv2d(8, 16, 2).to(memory_format=torch.channels_last)
        for batch in (3, 5, 7, 9, 11, 13, 15, 17, 21, 25, 33, 127):
            for _ in range(5):
                x = torch.randn(batch, 8, 12, 12).to(memory_format=torch.channels_last).requires_grad_()
                conv(x).sum().backward()
        print("trained")
    """)
    env = child_env(ROOT, OMP_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == "trained", (proc.returncode, proc.stderr[-2000:])
