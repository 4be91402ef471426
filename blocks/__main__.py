"""Size one fixed design by hand: `python -m blocks '{"blocks": [2,2,2,2], "width": 64}'` or a YAML file.

Prints exact parameters, FLOPs (fvcore's convention), peak activation memory, receptive field, the count
of 1x1 convs that widen the channels, a per-stage table and the FLOPs by kind of operation, all from
`complexity(spec)` without building the model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import yaml

from .layers import MAC_KINDS
from .resnet import ACTIVATION_BYTES, ARENA_SLACK, Complexity, complexity, tflite_peak
from .spec import ArchSpec
from .text import drop_stdout, one_line, short_bytes, short_count, version

EXIT_USAGE = 2  # bad input, as argparse and the search CLIs use
FILE_SUFFIXES = (".yaml", ".yml", ".json")


class CliError(Exception):
    """Bad input: printed as one `error: ...` line, exit status 2."""


def _is_file(path: Path) -> bool:
    """Whether `path` names an existing file (False for strings that cannot be paths)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _parse(text: str, where: str, try_json: bool) -> Any:
    """JSON first for inline text (PyYAML reads 1e-1 as a string), then YAML."""
    if try_json:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise CliError(f"{where}: not valid JSON or YAML ({one_line(getattr(e, 'problem', None) or e)})") from None


def load_arch(arg: str) -> tuple[dict[str, Any], str]:
    """The architecture dict given inline (JSON or YAML flow mapping) or in a YAML file, and where from."""
    path = Path(arg)
    is_file = path.suffix.lower() in FILE_SUFFIXES or (not arg.lstrip().startswith("{") and _is_file(path))
    if is_file:
        if not _is_file(path):
            raise CliError(f"{arg}: no such file")
        where, text = str(path), path.read_text()
    else:
        where, text = "argument", arg
    data = _parse(text, where, try_json=not is_file)
    if not isinstance(data, dict):
        got = "nothing" if data is None else type(data).__name__
        raise CliError(f"{where}: expected a mapping of architecture keys such as "
                       f"'{{\"blocks\": [2, 2, 2, 2], \"width\": 64}}', got {got}")
    if "space" in data:
        raise CliError(f"{where}: this looks like a search space (it has a 'space' section); only fixed values "
                       "can be sized: give the architecture keys at top level or under 'arch:'")
    if "arch" in data:
        if not isinstance(data["arch"], dict):
            raise CliError(f"{where}: key 'arch' must be a mapping of architecture keys, "
                           f"got {type(data['arch']).__name__}")
        return data["arch"], f"{where}: arch"
    return data, where


def report(spec: ArchSpec, cx: Complexity) -> str:
    """The human-readable sizing of `spec`."""
    size = spec.input_size
    lines = [
        f"params:             {cx.params} ({short_count(cx.params)})",
        f"FLOPs:              {cx.flops} ({short_count(cx.flops, ' FLOPs')}; fvcore convention: one multiply-add "
        f"= one FLOP, batch 1, {spec.in_channels}x{size}x{size} input)",
        f"peak activations:   {cx.peak_activations} elements ({short_bytes(cx.peak_bytes())} at int8, "
        f"{ACTIVATION_BYTES} byte per element; batch 1, layers in order, BN folded, ReLU in place)",
        f"as int8 TFLite:     {(padded := tflite_peak(spec))} elements ({short_bytes(padded * ACTIVATION_BYTES)}; with "
        f"the PAD tensors the converter adds; TFLite Micro's arena head: 1 to {ARENA_SLACK}x this, docs/sizing.md)",
        f"receptive field:    {cx.receptive_field} px (one location of the last stage's feature map)",
        f"widening 1x1 convs: {cx.widening_1x1} (1x1 convs with more output than input channels)",
        "",
        f"{'stage':>5}  {'blocks':>6}  {'width':>5}  {'stride':>6}  {'peak':>10}  output C x H x W",
    ]
    rows = zip(spec.blocks, spec.stage_widths, spec.stage_strides, cx.stage_peaks, cx.stage_shapes, strict=True)
    for i, (depth, width, stride, peak, (c, h, w)) in enumerate(rows, start=1):
        lines.append(f"{i:>5}  {depth:>6}  {width:>5}  {stride:>6}  {peak:>10}  {c} x {h} x {w}")
    return "\n".join(lines + ["", *macs_lines(cx)])


def macs_lines(cx: Complexity) -> list[str]:
    """The FLOPs split by the kind of operation that does them, each with its share of the total."""
    lines = ["FLOPs by kind of operation (which of them CMSIS-NN runs on a fast int8 kernel: docs/sizing.md)"]
    for kind, n in cx.macs_by_kind:
        lines.append(f"  {MAC_KINDS[kind]:<42} {n:>15,}  {n / max(cx.flops, 1):>6.1%}")
    return lines + ["latency on a microcontroller is not measured by this toolkit"]


def to_json(spec: ArchSpec, cx: Complexity) -> str:
    """The Complexity as a JSON object (stage_shapes as lists of [C, H, W]; peak bytes at int8, with and without
    the int8 TFLite graph's PAD tensors)."""
    d = dataclasses.asdict(cx)
    d["stage_shapes"] = [list(s) for s in cx.stage_shapes]
    d["stage_peaks"] = list(cx.stage_peaks)
    d["macs_by_kind"] = dict(cx.macs_by_kind)
    d["peak_activation_bytes"] = cx.peak_bytes()
    d["tflite_peak_bytes"] = tflite_peak(spec) * ACTIVATION_BYTES
    return json.dumps(d, indent=2)


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line and exit status 2 (search.cli's parser does the same; blocks imports no search)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, size the spec and print it; return the exit status."""
    parser = _OneLineParser(
        prog="python -m blocks",
        description="Exact params, FLOPs (fvcore convention: one multiply-add = one FLOP, batch 1) in total and "
                    "by kind of operation, peak activation memory, receptive field and stage shapes of one ResNet "
                    "spec, computed without building it.",
        epilog="examples: python -m blocks '{\"blocks\": [2,2,2,2], \"width\": 64}'   "
               "python -m blocks '{blocks: [3,4,6,3], block: bottleneck, stem: imagenet, input_size: 224}'   "
               "python -m blocks arch.yaml",
    )
    parser.add_argument("spec", help="architecture keys as JSON or an inline YAML mapping, or a YAML file "
                                     "holding them at top level or under 'arch:'")
    parser.add_argument("--json", action="store_true", help="print the Complexity as JSON")
    parser.add_argument("--version", action="version", version=f"resnet-budget-search {version()}")
    args = parser.parse_args(argv)
    try:
        arch, where = load_arch(args.spec)
        try:
            spec = ArchSpec.from_dict(arch)
        except (ValueError, TypeError) as e:
            raise CliError(f"{where}: {one_line(e)}") from None
        cx = complexity(spec)
    except (CliError, OSError, UnicodeDecodeError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    try:
        print(to_json(spec, cx) if args.json else report(spec, cx))
    except BrokenPipeError:  # the reader (e.g. `| head`) left early
        drop_stdout()
    return 0


if __name__ == "__main__":
    sys.exit(main())
