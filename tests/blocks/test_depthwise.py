"""blocks/depthwise.py: the column-grouped weight gradient equals nn.Conv2d's, and runs where it should."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from blocks import ArchSpec, build, depthwise
from blocks.depthwise import DepthwiseConv2d
from blocks.layers import SeparableConv

WEIGHT_GRAD = depthwise.weight_grad


def twins(channels: int, k: int, stride: int) -> tuple[DepthwiseConv2d, nn.Conv2d]:
    """A DepthwiseConv2d and the plain nn.Conv2d it replaces, with the same weights."""
    torch.manual_seed(k * 10 + stride)
    new = DepthwiseConv2d(channels, k, stride)
    old = nn.Conv2d(channels, channels, k, stride, k // 2, groups=channels, bias=False)
    old.load_state_dict(new.state_dict())
    return new, old


def grads(conv: nn.Module, x: torch.Tensor, out_grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Output, input gradient and weight gradient of `conv` at `x`."""
    x = x.clone().requires_grad_()
    y = conv(x)
    y.backward(out_grad)
    return y.detach(), x.grad, conv.weight.grad


@pytest.mark.parametrize("k,stride,size,channels_last", [
    (5, 1, 32, True), (5, 2, 32, True), (5, 2, 15, True), (7, 1, 16, True), (7, 2, 17, True),
    (9, 1, 12, True), (5, 1, 9, False), (3, 1, 8, True)])
def test_gradients_equal_plain_conv(k: int, stride: int, size: int, channels_last: bool,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(depthwise, "weight_grad", lambda *a: calls.append(1) or WEIGHT_GRAD(*a))
    new, old = twins(16, k, stride)
    x = torch.randn(4, 16, size, size, generator=torch.Generator().manual_seed(0))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out = (size + 2 * (k // 2) - k) // stride + 1
    g = torch.randn(4, 16, out, out, generator=torch.Generator().manual_seed(1))
    y_new, gx_new, gw_new = grads(new, x, g)
    y_old, gx_old, gw_old = grads(old, x, g)
    assert torch.equal(y_new, y_old) and torch.equal(gx_new, gx_old)  # oneDNN's own kernels, unchanged
    torch.testing.assert_close(gw_new, gw_old, rtol=1e-5, atol=1e-5 * gw_old.abs().max().item())
    assert len(calls) == (1 if k > 3 else 0)  # kernels at most 3 wide keep oneDNN's own weight gradient


def test_plain_conv2d_where_the_gradient_is_not_taken() -> None:
    new, old = twins(8, 5, 1)
    x = torch.randn(2, 8, 10, 10)
    assert new._column_grouped(x)
    with torch.no_grad():
        assert not new._column_grouped(x) and torch.equal(new(x), old(x))
    new.weight.requires_grad_(False)  # frozen (e.g. a fine-tune): nothing to gain
    assert not new._column_grouped(x)
    new.weight.requires_grad_(True)
    traced = torch.jit.trace(new, x.detach())  # fvcore and the ONNX exporter trace: nn.Conv2d's graph
    assert "aten::_convolution" in str(traced.graph) or "aten::conv2d" in str(traced.graph)


def test_autocast_matches_plain_conv() -> None:
    new, old = twins(8, 5, 1)
    x = torch.randn(2, 8, 12, 12).contiguous(memory_format=torch.channels_last)
    g = torch.randn(2, 8, 12, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_new, gx_new, gw_new = grads(new, x, g.bfloat16())
        y_old, gx_old, gw_old = grads(old, x, g.bfloat16())
    assert y_new.dtype == y_old.dtype == torch.bfloat16 and gw_new.dtype == gw_old.dtype == torch.float32
    torch.testing.assert_close(y_new, y_old)
    torch.testing.assert_close(gw_new, gw_old, rtol=2e-2, atol=2e-2 * gw_old.abs().max().item())


def test_separable_conv_uses_it_with_the_same_state_dict() -> None:
    sep = SeparableConv(16, 32, 5)  # widening: a channel multiplier, which oneDNN does not run as depthwise
    assert type(sep[0]) is nn.Conv2d and list(sep.state_dict()) == ["0.weight", "1.weight"]
    sep = SeparableConv(16, 24, 5, stride=2)
    assert isinstance(sep[0], DepthwiseConv2d) and list(sep.state_dict()) == ["0.weight", "1.weight"]
    model = build(ArchSpec.from_dict({"stages": 2, "blocks": [1, 1], "widths": [8, 16], "kernel": 5,
                                      "separable": True, "num_classes": 10, "input_size": 16}))
    assert any(isinstance(m, DepthwiseConv2d) for m in model.modules())
