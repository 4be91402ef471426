"""Peak activation memory measured on the built model's torch.fx graph: the check on blocks' analytic count.

The nodes run in graph order; every node's output is a tensor that stays live until its last use,
except the outputs that a deployed network does not store (the conventions in blocks/layers.py):
BatchNorm (folded into its conv), ReLU (in place), identity, dropout and flatten alias their input.
At each node the tensors live together are summed; the peak is the largest sum.
"""

from __future__ import annotations

import torch
from torch import fx, nn

ALIAS_MODULES = (nn.BatchNorm2d, nn.ReLU, nn.Identity, nn.Dropout)
ALIAS_FUNCTIONS = (torch.flatten,)


class _Sizes(fx.Interpreter):
    """Runs the graph once and records the number of elements of every node's output."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.numel: dict[fx.Node, int] = {}

    def run_node(self, n: fx.Node) -> object:
        out = super().run_node(n)
        # get_attr reads a parameter (a conv the trace enters, e.g. blocks.depthwise's): weights, not activations
        if isinstance(out, torch.Tensor) and n.op != "get_attr":
            self.numel[n] = out.numel()
        return out


def _is_alias(gm: fx.GraphModule, n: fx.Node) -> bool:
    """Whether node `n`'s output shares its (first) input's storage under the deployment conventions."""
    if n.op == "call_module":
        return isinstance(gm.get_submodule(str(n.target)), ALIAS_MODULES)
    return n.op == "call_function" and n.target in ALIAS_FUNCTIONS


def live_profile(model: nn.Module, in_channels: int, size: int) -> list[tuple[fx.Node, int]]:
    """Each node of `model`'s graph in run order, with the elements live while it runs (eval, one image)."""
    gm = fx.symbolic_trace(model.eval())
    sizes = _Sizes(gm)
    with torch.no_grad():
        sizes.run(torch.randn(1, in_channels, size, size))
    nodes = list(gm.graph.nodes)
    index = {n: i for i, n in enumerate(nodes)}
    storage: dict[fx.Node, fx.Node] = {}  # node -> the node that wrote the tensor it holds
    for n in nodes:
        if n in sizes.numel:
            storage[n] = storage[n.args[0]] if _is_alias(gm, n) else n
    last_use = {s: index[s] for s in set(storage.values())}
    for n in nodes:
        for user in n.users:
            if n in storage:
                last_use[storage[n]] = max(last_use[storage[n]], index[user])
    return [(n, sum(sizes.numel[s] for s in last_use if index[s] <= i <= last_use[s])) for i, n in enumerate(nodes)]


def fx_peak_activations(model: nn.Module, in_channels: int, size: int) -> tuple[int, tuple[int, ...]]:
    """Peak elements live at once in the whole network, and within each stage's span of nodes."""
    profile = live_profile(model, in_channels, size)
    stage_peaks = []
    for i in range(len(model.stages)):
        span = [k for k, (n, _) in enumerate(profile)
                if n.op == "call_module" and str(n.target).startswith(f"stages.{i}.")]
        stage_peaks.append(max(live for _, live in profile[span[0]:span[-1] + 1]))
    return max(live for _, live in profile), tuple(stage_peaks)
