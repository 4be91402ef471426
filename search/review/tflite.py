"""A full-integer int8 TFLite model of a built ResNet: convert, inspect, measure its arena, run it.

The converter is two kept Google tools in a row (the `mcu` extra):
- litert-torch converts the fp32 model, wrapped to take NHWC input, into an fp32 `.tflite`;
- ai-edge-quantizer's `static_wi8_ai8` recipe quantises that file: int8 weights per output channel,
  int8 activations with static ranges from calibration images, int8 input and output.
litert-torch's own PT2E quantiser was tried first and left: with version 0.10.0 every identity-shortcut
residual ADD stayed float (DEQUANTIZE, float ADD, QUANTIZE) whatever the add was written as (`+`,
`torch.add`, in-place ReLU or not), which puts float tensors in the arena (issue 26). ai-edge-quantizer
quantises the converted graph op by op, ADD included, so nothing float is left.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from blocks import ArchSpec

from ..errors import UserError

EXTRA = "pip install 'resnet-budget-search[mcu]'"
PACKAGES = ("litert_torch", "ai_edge_quantizer", "ai_edge_litert")  # the converter; tflite_micro is optional
CONVERTS = ("QUANTIZE", "DEQUANTIZE")  # ops that move a tensor between int8 and float
WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")  # ops whose second input is a constant weight
ARENA_TRY = 1 << 24  # bytes offered to TFLite Micro to plan in; it reports what it used of them
SIGNATURE = "serving_default"  # litert-torch's one signature
# The file against the analytic flash_bytes (benchmarks/bench_arena.py, 122 designs; docs/review-and-retrain.md);
# the arena's bound is blocks.resnet.ARENA_SLACK.
CHANNEL_BYTES = 4 + 2 * (4 + 8)  # per output channel: an int32 bias, and a float32 scale + int64 zero point for
# the weight and for the bias (the schema's QuantizationParameters)
LAYER_BYTES = 1200  # file bytes beyond flash_bytes per conv or linear layer, at most (1,110 and 910 measured): the
# flatbuffer's tensors, shapes, ops and the activations' quantisation
RUNTIMES = {"litert": "LiteRT interpreter (int8 kernels)",  # runtime name -> what the records say ran the file
            "micro": "TFLite Micro interpreter (reference int8 kernels)"}


class ConverterRefused(UserError):
    """The converter or the quantiser failed on this design: one line, exit 2."""


def need_converter() -> None:
    """Refuse at once, in one line, when the `mcu` extra is not installed."""
    for name in PACKAGES:
        try:
            with _quiet():  # importing them prints absl's and torch's warnings, which the user cannot act on
                __import__(name)
        except ImportError:
            raise UserError(f"exporting to TFLite needs the mcu extra ({name} is missing): {EXTRA}") from None


def has_micro() -> bool:
    """Whether TFLite Micro's Python interpreter (PyPI `tflite-micro`) is installed, for the arena."""
    try:
        import tflite_micro  # noqa: F401 (imported only to learn that it is installed)
    except ImportError:
        return False
    return True


def flash_bytes(model: nn.Module) -> tuple[int, int]:
    """The int8 file's payload in bytes (int8 weights; per output channel of every conv and linear layer an int32
    bias, BatchNorm folded into it, and the per-channel quantisation of weight and bias) and the layers counted.
    The file is at most LAYER_BYTES a layer larger."""
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    return sum(m.weight.numel() + CHANNEL_BYTES * m.weight.shape[0] for m in layers), len(layers)


def versions() -> dict[str, str]:
    """The converter packages' versions, recorded with each exported file."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("litert-torch", "ai-edge-quantizer", "ai-edge-litert", "tflite-micro", "torch"):
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    return out


def convert_int8(model: nn.Module, spec: ArchSpec, calibration: Iterable[np.ndarray]) -> bytes:
    """The int8 `.tflite` of `model`: NHWC int8 input (normalised images), int8 logits out.

    `calibration`: float32 NHWC batches of normalised images whose activation ranges set the scales.
    """
    import litert_torch
    from ai_edge_quantizer import quantizer, recipe

    model = model.cpu().float().eval().to(memory_format=torch.contiguous_format)
    nhwc = litert_torch.to_channel_last_io(model, args=[0]).eval()  # a new wrapper starts in training mode
    sample = torch.zeros(1, spec.input_size, spec.input_size, spec.in_channels)
    try:
        with _quiet():
            float_model = litert_torch.convert(nhwc, (sample,)).model_content()
            q = quantizer.Quantizer(bytearray(float_model), recipe.static_wi8_ai8())
            name = _input_name(float_model)
            batches = [{name: img[None]} for batch in calibration for img in np.asarray(batch, np.float32)]
            if not batches:
                raise ValueError("no calibration images")
            ranges = _calibrate(float_model, batches)
            quantized = bytes(q.quantize(ranges, enable_progress_report=False).quantized_model)
    except UserError:  # the calibration images could not be read (a missing dataset): not the converter's doing
        raise
    except Exception as e:  # the converters raise many kinds (RuntimeError, ValueError, MLIR errors ...)
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        raise ConverterRefused(f"the TFLite converter refused this design ({type(e).__name__}: {first})") from None
    return compact(quantized)


def _calibrate(float_model: bytes, batches: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Each tensor's range over all calibration images: the absolute min and max, as TensorFlow Lite's own
    calibrator keeps them. ai-edge-quantizer's default is a moving average (0.95) of each image's range,
    which clipped a CIFAR-10 ResNet-8's logits to 2 of their 6 units and flipped 16% of its classes."""
    from ai_edge_quantizer import calibrator, recipe, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(recipe.static_wi8_ai8())
    calib = calibrator.Calibrator(float_model, num_threads=1, qsv_update_func=qsv_utils.min_max_update)
    calib.calibrate({SIGNATURE: batches}, manager)
    return calib.get_model_qsvs()


def _input_name(tflite: bytes) -> str:
    """The name of the model's one input in its signature (litert-torch names it args_0)."""
    from ai_edge_litert.interpreter import Interpreter

    return next(iter(Interpreter(model_content=tflite).get_signature_list()[SIGNATURE]["inputs"]))


def compact(tflite: bytes) -> bytes:
    """The same model without what only a debugger reads: MLIR location names of every tensor (about 45 KB
    for the winner of cifar10_mcu, a third of its file) and the calibrated min/max kept beside each scale."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    m = fb.ModelT.InitFromPackedBuf(tflite, 0)
    for buf in m.buffers:  # a large model keeps its weights after the flatbuffer (offset, size): bring them in,
        if buf.offset > 1:  # or packing again would drop them (1 is the schema's marker for an empty buffer)
            buf.data = np.frombuffer(tflite, np.uint8, buf.size, buf.offset).copy()
            buf.offset = buf.size = 0
    for g in m.subgraphs:
        for i, t in enumerate(g.tensors):
            t.name = f"t{i}"
            if t.quantization is not None:
                t.quantization.min = t.quantization.max = None
    b = flatbuffers.Builder(len(tflite))
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of the graph: shape, element type and its int8 quantisation."""

    shape: tuple[int, ...]
    dtype: str  # "int8", "float32" ...
    scale: float | None
    zero_point: int | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"shape": list(self.shape), "dtype": self.dtype, "scale": self.scale, "zero_point": self.zero_point}


@dataclass(frozen=True)
class Graph:
    """What the converted graph holds: op counts, its input and output, and anything not integer."""

    ops: dict[str, int]
    input: TensorInfo
    output: TensorInfo
    float_tensors: tuple[str, ...] = field(default=())  # "OP#i -> float32 1x32x32x16" for each float activation
    converts: int = 0  # QUANTIZE / DEQUANTIZE ops
    weightless: int = 0  # convs and linear layers whose weight tensor has no data in the file

    @property
    def int8_clean(self) -> bool:
        """Int8 from input to output: int8 I/O, no float tensor, no QUANTIZE or DEQUANTIZE inside."""
        return (self.input.dtype == self.output.dtype == "int8" and not self.float_tensors
                and not self.converts and not self.weightless)

    def problems(self) -> str:
        """What keeps it from being int8-clean, in one short line."""
        found = [f"{k} {v.dtype}" for k, v in (("input", self.input), ("output", self.output)) if v.dtype != "int8"]
        found += [f"{self.converts} QUANTIZE/DEQUANTIZE ops"] if self.converts else []
        found += [f"{self.weightless} weight tensors without data"] if self.weightless else []
        found += [f"{len(self.float_tensors)} float tensors (first: {self.float_tensors[0]})"] if self.float_tensors else []
        return "; ".join(found) or "none"


def inspect(tflite: bytes) -> Graph:
    """Read the flatbuffer: op counts, I/O types and quantisation, float tensors and int8/float converts."""
    from ai_edge_litert import schema_py_generated as fb

    m = fb.ModelT.InitFromPackedBuf(tflite, 0)
    g = m.subgraphs[0]
    op_names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k.lower() for k, v in vars(fb.TensorType).items() if not k.startswith("_")}
    ops: collections.Counter[str] = collections.Counter()
    floats, weightless = [], 0
    for j, op in enumerate(g.operators):
        code = m.operatorCodes[op.opcodeIndex]
        name = op_names[max(code.builtinCode, code.deprecatedBuiltinCode)]  # the schema keeps two fields
        ops[name] += 1
        if name in WEIGHTED:
            buf = m.buffers[g.tensors[op.inputs[1]].buffer]
            weightless += (buf.data is None or len(buf.data) == 0) and buf.offset <= 1
        for i in op.outputs:
            t = g.tensors[i]
            if type_names[t.type].startswith("float"):
                floats.append(f"{name}#{j} -> {type_names[t.type]} {'x'.join(map(str, t.shape))}")

    def info(i: int) -> TensorInfo:
        t, q = g.tensors[i], g.tensors[i].quantization
        scale = float(q.scale[0]) if q is not None and q.scale is not None and len(q.scale) else None
        zp = int(q.zeroPoint[0]) if q is not None and q.zeroPoint is not None and len(q.zeroPoint) else None
        return TensorInfo(tuple(int(s) for s in t.shape), type_names[t.type], scale, zp)

    return Graph(dict(ops), info(g.inputs[0]), info(g.outputs[0]), tuple(floats), sum(ops[c] for c in CONVERTS),
                 weightless)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the C++ and Python chatter of the converters (progress lines, absl logs, torch's warnings)."""
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "wb") as null:
        try:
            for fd in (1, 2):
                os.dup2(null.fileno(), fd)
            logging.disable(logging.WARNING)  # Python's loggers write to sys.stderr, wherever that points
            yield
        finally:
            logging.disable(logging.NOTSET)
            for fd, old in zip((1, 2), saved, strict=True):
                os.dup2(old, fd)
                os.close(old)


def arena(tflite: bytes) -> dict[str, int]:
    """TFLite Micro's arena for this model, in bytes: head (the planned activation buffers), tail (persistent
    data: tensor structs, quantisation arrays, kernels' scratch), total; printed by `print_allocations()`."""
    from tflite_micro.python.tflite_micro import runtime

    with tempfile.TemporaryFile("w+b") as out:  # TFLite Micro's DebugLog prints from C on stderr: catch it there
        saved = os.dup(2)
        try:
            os.dup2(out.fileno(), 2)
            interpreter = runtime.Interpreter.from_bytes(tflite, arena_size=ARENA_TRY)
            interpreter.print_allocations()
            ctypes.CDLL(None).fflush(None)  # C stdio may buffer the report: flush it into the file
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode(errors="replace")
    found = dict(re.findall(r"Arena allocation (total|head|tail) (\d+) bytes", text))
    if set(found) != {"total", "head", "tail"}:
        raise RuntimeError(f"TFLite Micro printed no arena sizes: {text[:200]!r}")
    return {k: int(found[k]) for k in ("head", "tail", "total")}


class Runner:
    """The int8 model in LiteRT's interpreter ("litert") or TFLite Micro's ("micro"): float in, int8 logits out."""

    def __init__(self, tflite: bytes, runtime: str = "litert"):
        self.graph = inspect(tflite)
        self.runtime = runtime
        if runtime == "micro":
            from tflite_micro.python.tflite_micro import runtime as micro

            self._micro = micro.Interpreter.from_bytes(tflite, arena_size=ARENA_TRY)
        elif runtime == "litert":
            from ai_edge_litert.interpreter import Interpreter

            self._litert = Interpreter(model_content=tflite, num_threads=1)
            self._litert.allocate_tensors()
        else:
            raise ValueError(f"runtime {runtime!r}: expected one of {sorted(RUNTIMES)}")

    def quantise(self, images: np.ndarray) -> np.ndarray:
        """Normalised NHWC float images as the model's int8 input."""
        i = self.graph.input
        return np.clip(np.round(images / i.scale) + i.zero_point, -128, 127).astype(np.int8)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Int8 logits of a batch of normalised NHWC float images, one image at a time (batch 1, as deployed)."""
        out = []
        for x in self.quantise(images):
            if self.runtime == "micro":
                self._micro.set_input(x[None], 0)
                self._micro.invoke()
                out.append(self._micro.get_output(0)[0].copy())
            else:
                self._litert.set_tensor(self._litert.get_input_details()[0]["index"], x[None])
                self._litert.invoke()
                out.append(self._litert.get_tensor(self._litert.get_output_details()[0]["index"])[0].copy())
        return np.stack(out)


def nhwc(batch: torch.Tensor) -> np.ndarray:
    """A (N, C, H, W) tensor of normalised images as a float32 NHWC array, the exported model's layout."""
    return batch.detach().float().permute(0, 2, 3, 1).contiguous().cpu().numpy()


def int8_predictions(tflite: bytes, loader: Iterable, runtime: str = "litert",
                     limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Predicted classes of the int8 model and the labels, over a loader of (images NCHW, labels) batches."""
    run, preds, labels = Runner(tflite, runtime), [], []
    seen = 0
    for images, y in loader:
        if limit is not None and seen >= limit:
            break
        images, y = images[: None if limit is None else limit - seen], y[: None if limit is None else limit - seen]
        preds.append(run.logits(nhwc(images)).argmax(1))
        labels.append(np.asarray(y))
        seen += len(y)
    return np.concatenate(preds), np.concatenate(labels)
