"""TFLite Micro's arena and the int8 file's bytes against the analytic counts, over 100+ random designs (issue 26).

    python -m benchmarks.bench_arena                 # ResNet-8, the cifar10_mcu winner, 120 random specs
    python -m benchmarks.bench_arena --specs 10 --seed 1

Each design is built with random weights and BatchNorm statistics away from the identity (a fresh model's
zero-initialised last BN of each block lets the converter fold whole branches away), converted to int8 by the
export's own path (`tflite.convert_int8`, 8 noise calibration inputs: the ranges do not change a tensor's
size) and measured; nothing is trained. Per design it prints, in bytes:
- memory: the analytic peak (`complexity(spec).peak_bytes()`, int8), the analytic peak with the converter's
  explicit PAD tensors (`blocks.resnet.tflite_peak`), the converted graph's live peak (the largest total of
  the activation tensors live at one op, each from the op that writes it to the last that reads it: what
  any planner needs at least) and TFLite Micro's arena head (the buffers its greedy planner placed);
- flash: `tflite.flash_bytes` of the built model (int8 weights; per output channel an int32 bias and the
  per-channel quantisation of weight and bias) against the .tflite's bytes, and the difference per layer.
Then the ratios' min/median/max, the bounds blocks.resnet.ARENA_SLACK and tflite.LAYER_BYTES checked on every
design, and the worst designs with the tensors live at their graph's peak. The record goes to
benchmarks/results/bench_arena-<commit>.json (benchmarks.harness).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks.harness import describe, machine, record
from blocks import ArchSpec, build, complexity
from blocks.resnet import ARENA_SLACK, tflite_peak
from search.review import export, tflite

NAMED = {  # MLPerf Tiny's ResNet-8 and the cifar10_mcu search's winner (trial 26)
    "ResNet-8": {"stages": 3, "blocks": [1, 1, 1], "width": 16},
    "winner": {"stages": 3, "blocks": [3, 1, 3], "widths": [16, 56, 88], "kernel": 5, "separable": True},
}
WORST = 8  # designs shown with their graphs' extra tensors


def draw(rng: random.Random) -> dict[str, Any]:
    """One random microcontroller-sized design over every builder option (it may be invalid)."""
    stages = rng.randint(1, 3)
    block = rng.choice(["basic", "basic", "bottleneck"])
    top = 32 if block == "bottleneck" else 64  # a bottleneck's output is its width times the expansion
    d: dict[str, Any] = {
        "stages": stages, "blocks": [rng.randint(1, 3) for _ in range(stages)], "block": block,
        "widths": sorted(rng.randrange(8, top + 1, 8) for _ in range(stages)), "kernel": rng.choice([3, 3, 5, 7]),
        "skip_kernel": rng.choice([1, 1, 3]), "separable": rng.random() < 0.5,
        "shortcut": rng.choice(["projection", "zero_pad"]), "stem": rng.choice(["cifar", "cifar", "conv_s2", "imagenet"]),
        "head": rng.choice(["linear", "conv"]), "input_size": rng.choice([32, 32, 24, 16]),
        "in_channels": rng.choice([3, 3, 3, 1]),
    }
    if block == "bottleneck":
        d["expansion"] = rng.randint(1, 4)
    if rng.random() < 0.3:
        d["strides"] = [rng.choice([1, 2]) for _ in range(stages)]
    if rng.random() < 0.3:
        with contextlib.suppress(ValueError):  # invalid anyway: from_dict says why when the draw is made a spec
            d["pool"] = rng.randint(1, ArchSpec.from_dict(d).stage_sizes()[-1])
    return d


def designs(n: int, seed: int) -> tuple[dict[str, ArchSpec], int]:
    """ResNet-8, the winner and the valid specs among seeded draws until `n` are valid; and the invalid count."""
    rng, out, invalid = random.Random(seed), {k: ArchSpec.from_dict(d) for k, d in NAMED.items()}, 0
    while len(out) < len(NAMED) + n:
        try:
            out[f"r{len(out) - len(NAMED)}"] = ArchSpec.from_dict(draw(rng))
        except ValueError:
            invalid += 1
    return out, invalid


def random_model(spec: ArchSpec, seed: int) -> nn.Module:
    """The built model with random weights and BatchNorm statistics and scales away from the identity."""
    torch.manual_seed(seed)
    model = build(spec).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None  # track_running_stats, as built
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    return model


def live_tensors(data: bytes) -> tuple[int, list[str]]:
    """The converted graph's live peak in bytes and the tensors live there ("PAD 1x36x36x16"): each activation
    tensor lives from the op that writes it (the input from op 0) to the last op that reads it (the output to
    the end), as TFLite Micro's planner takes it."""
    from ai_edge_litert import schema_py_generated as fb

    m = fb.ModelT.InitFromPackedBuf(data, 0)
    g = m.subgraphs[0]
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    life: dict[int, list[int]] = {i: [0, 0] for i in g.inputs}
    writer = {i: "INPUT" for i in g.inputs}
    for j, op in enumerate(g.operators):
        code = m.operatorCodes[op.opcodeIndex]
        for i in op.inputs:
            if i >= 0 and m.buffers[g.tensors[i].buffer].data is None:  # a constant has data in the file
                life.setdefault(i, [j, j])[1] = j
        for i in op.outputs:
            life.setdefault(i, [j, j])
            writer[i] = names[max(code.builtinCode, code.deprecatedBuiltinCode)]
    for i in g.outputs:
        life[i][1] = len(g.operators) - 1
    width = {fb.TensorType.INT8: 1, fb.TensorType.INT16: 2, fb.TensorType.INT32: 4, fb.TensorType.FLOAT32: 4}
    size = {i: int(np.prod(g.tensors[i].shape)) * width[g.tensors[i].type] for i in life}
    at = max(range(len(g.operators)), key=lambda j: sum(size[i] for i, (a, b) in life.items() if a <= j <= b))
    live = sorted((i for i, (a, b) in life.items() if a <= at <= b), key=lambda i: -size[i])
    return sum(size[i] for i in live), [f"{writer[i]} {'x'.join(map(str, g.tensors[i].shape))}" for i in live]


def measure(spec: ArchSpec, seed: int) -> dict[str, Any]:
    """One design's analytic and measured memory and flash."""
    model = random_model(spec, seed)
    data = tflite.convert_int8(model, spec, export.calibration(None, 8, spec))
    graph, arena = tflite.inspect(data), tflite.arena(data)
    live, at_peak = live_tensors(data)
    peak, padded, (flash, layers) = complexity(spec).peak_bytes(), tflite_peak(spec), tflite.flash_bytes(model)
    return {"arch": spec.to_dict(), "int8_clean": graph.int8_clean, "ops": graph.ops,
            "analytic_peak": peak, "tflite_peak": padded, "live_peak": live, "head": arena["head"],
            "tail": arena["tail"], "live_at_peak": at_peak, "analytic_flash": flash, "layers": layers,
            "file": len(data), "head_ratio": arena["head"] / peak, "padded_ratio": arena["head"] / padded,
            "file_ratio": len(data) / flash, "file_extra_per_layer": (len(data) - flash) / layers}


def short(arch: dict[str, Any]) -> str:
    """The design in one short line."""
    parts = [f"B={arch['blocks']}", f"W={arch.get('widths') or arch['width']}", f"k{arch['kernel']}"]
    parts += ["sep"] * arch.get("separable", False) + [arch.get("block", "basic"), arch.get("shortcut", "projection")]
    parts += [f"stem={arch.get('stem', 'cifar')}", f"head={arch.get('head', 'linear')}", f"in={arch['input_size']}"]
    parts += [f"strides={arch['strides']}"] * ("strides" in arch) + [f"pool={arch['pool']}"] * ("pool" in arch)
    return " ".join(map(str, parts))


def main() -> None:
    """Measure every design, print the table and the summary, write the JSON record."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--specs", type=int, default=120, help="random designs beside ResNet-8 and the winner")
    p.add_argument("--seed", type=int, default=26, help="the draws' seed")
    args = p.parse_args()
    tflite.need_converter()
    specs, invalid = designs(args.specs, args.seed)
    facts = {**machine(), "converter": tflite.versions()}
    print(f"{describe(facts)}; converter {facts['converter']}")
    figures: dict[str, Any] = {"seed": args.seed, "invalid_draws": invalid, "designs": {}}
    print(f"{'design':>8} {'analytic':>8} {'+pads':>7} {'live':>7} {'head':>7} {'head/an':>7} {'/+pads':>6} "
          f"{'tail':>6} {'flash':>7} {'file':>7} {'/layer':>6}  arch")
    for k, (name, spec) in enumerate(specs.items()):
        try:
            r = measure(spec, seed=k)
        except tflite.ConverterRefused as e:
            figures["designs"][name] = {"arch": spec.to_dict(), "refused": str(e)}
            print(f"{name:>8} refused: {e}", flush=True)
            continue
        figures["designs"][name] = r
        print(f"{name:>8} {r['analytic_peak']:>8} {r['tflite_peak']:>7} {r['live_peak']:>7} {r['head']:>7} "
              f"{r['head_ratio']:>7.2f} {r['padded_ratio']:>6.2f} {r['tail']:>6} {r['analytic_flash']:>7} "
              f"{r['file']:>7} {r['file_extra_per_layer']:>6.0f}  {short(r['arch'])}"
              f"{'' if r['int8_clean'] else '  NOT INT8-CLEAN'}", flush=True)
    summarise(figures)
    record("bench_arena", figures, facts)


def summarise(figures: dict[str, Any]) -> None:
    """The ratios' spread, the documented bounds checked on every design, and the worst designs."""
    done = {k: r for k, r in figures["designs"].items() if "head" in r}
    rows = list(done.values())

    def spread(key: str) -> list[float]:
        values = [r[key] for r in rows]
        return [min(values), statistics.median(values), max(values)]

    summary = {
        "designs": len(rows), "refused": len(figures["designs"]) - len(rows),
        "int8_clean": sum(r["int8_clean"] for r in rows),
        "head_over_analytic": spread("head_ratio"), "head_over_tflite_peak": spread("padded_ratio"),
        "live_equals_tflite_peak": sum(r["live_peak"] == r["tflite_peak"] for r in rows),
        "file_over_flash": spread("file_ratio"), "file_extra_per_layer": spread("file_extra_per_layer"),
        "arena_bound_holds": sum(r["tflite_peak"] <= r["head"] <= ARENA_SLACK * r["tflite_peak"] for r in rows),
        "flash_bound_holds": sum(r["analytic_flash"] <= r["file"] <= r["analytic_flash"] + tflite.LAYER_BYTES
                                 * r["layers"] for r in rows),
    }
    figures["summary"] = summary
    print(f"\n{summary['designs']} designs converted ({summary['refused']} refused, {figures['invalid_draws']} invalid "
          f"draws skipped), {summary['int8_clean']} int8-clean")
    show = lambda v: " / ".join(f"{x:.2f}" for x in v)  # noqa: E731
    print(f"arena head / analytic peak, min / median / max: {show(summary['head_over_analytic'])}")
    print(f"arena head / tflite_peak (analytic + PAD tensors): {show(summary['head_over_tflite_peak'])}; the graph's "
          f"live peak equals tflite_peak in {summary['live_equals_tflite_peak']} of {len(rows)}")
    print(f"tflite_peak <= head <= {ARENA_SLACK} x tflite_peak: {summary['arena_bound_holds']} of {len(rows)}")
    print(f"file / flash_bytes: {show(summary['file_over_flash'])}; (file - flash_bytes) per conv or linear layer: "
          f"{show(summary['file_extra_per_layer'])} bytes")
    print(f"flash_bytes <= file <= flash_bytes + {tflite.LAYER_BYTES} x layers: {summary['flash_bound_holds']} of "
          f"{len(rows)}")
    print(f"\nthe {WORST} designs with the largest head / analytic peak, and the tensors live at their graph's peak:")
    for name, r in sorted(done.items(), key=lambda kv: -kv[1]["head_ratio"])[:WORST]:
        print(f"  {name}: head {r['head']} = {r['head_ratio']:.2f}x analytic {r['analytic_peak']}, "
              f"{r['padded_ratio']:.2f}x tflite_peak {r['tflite_peak']}; {short(r['arch'])}")
        print(f"    live at the peak: {', '.join(r['live_at_peak'])}")
    print(f"\nthe {WORST} designs with the largest head / tflite_peak (the planner's placement):")
    for name, r in sorted(done.items(), key=lambda kv: -kv[1]["padded_ratio"])[:WORST]:
        print(f"  {name}: head {r['head']} = {r['padded_ratio']:.2f}x tflite_peak {r['tflite_peak']}; "
              f"{short(r['arch'])}; live at the peak: {', '.join(r['live_at_peak'])}")


if __name__ == "__main__":
    main()
