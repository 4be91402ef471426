"""blocks/grad_format.py: gradients come back channels_last through the layers whose backward made them NCHW,
with the same values, and nothing changes outside CPU training."""

from __future__ import annotations

import pytest
import torch

from blocks import ArchSpec, build, grad_format, layers, pointwise, resnet
from blocks.layers import ZeroPadShortcut
from blocks.pointwise import StridedPointwiseConv2d

CL = torch.channels_last


def cl_input(c: int = 8, size: int = 8) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(4, c, size, size).contiguous(memory_format=CL).requires_grad_()


@pytest.mark.parametrize("layer", [ZeroPadShortcut(8, 16, 2), ZeroPadShortcut(8, 8, 2),
                                   StridedPointwiseConv2d(8, 16, 2), torch.nn.AdaptiveAvgPool2d(1)])
def test_a_layers_input_gradient_stays_channels_last(layer: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    if isinstance(layer, torch.nn.AdaptiveAvgPool2d):  # the head's pool, guarded by Head.forward
        layer = resnet.Head("linear", 8, 8, None, 10, 0.0)
    guarded = incoming_grad(layer)
    assert guarded.is_contiguous(memory_format=CL) and not guarded.is_contiguous()
    # The same layer without the guard: the gradient that would have spread, NCHW, with the same values.
    for module in (layers, pointwise, resnet):
        monkeypatch.setattr(module, "same_format_grad", lambda t: t)
    plain = incoming_grad(layer)
    assert not plain.is_contiguous(memory_format=CL)  # NCHW, or a strided slice of the wider gradient
    assert torch.equal(guarded, plain)


def incoming_grad(layer: torch.nn.Module) -> torch.Tensor:
    """The gradient that reaches `layer`'s channels_last input (as the layer before would receive it: a leaf's
    .grad is laid out by AccumulateGrad instead)."""
    x = cl_input() * 1
    seen: list[torch.Tensor] = []
    x.register_hook(seen.append)
    layer(x).square().sum().backward()
    return seen[0]


def test_a_whole_network_trains_to_the_same_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = ArchSpec.from_dict({"num_classes": 10, "input_size": 16, "stages": 3, "blocks": [1, 1, 1],
                               "widths": [8, 16, 24], "kernel": 5, "separable": True, "shortcut": "zero_pad"})
    torch.manual_seed(1)
    model = build(spec).to(memory_format=CL)
    x = torch.randn(6, 3, 16, 16).contiguous(memory_format=CL)

    def grads() -> list[torch.Tensor]:
        model.zero_grad()
        model(x).logsumexp(1).sum().backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    guarded = grads()
    for module in (layers, pointwise, resnet):
        monkeypatch.setattr(module, "same_format_grad", lambda t: t)
    plain = grads()
    assert len(guarded) == len(plain) and all(torch.equal(a, b) for a, b in zip(guarded, plain, strict=True))


def test_it_is_the_tensor_itself_outside_cpu_training() -> None:
    x = cl_input()
    with torch.no_grad():
        assert grad_format.same_format_grad(x) is x
    detached = x.detach()
    assert grad_format.same_format_grad(detached) is detached  # nothing to send a gradient to
    traced = torch.jit.trace(ZeroPadShortcut(8, 16, 2), cl_input())
    assert "PythonOp" not in str(traced.graph)  # fvcore and ONNX see plain ops
