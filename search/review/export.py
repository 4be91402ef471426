"""A retrained model as an int8 `.tflite` a microcontroller runs, with a JSON sidecar of what a deployer needs
(`resnet-search export`: search/commands.py). Calibration images: the first N of the study's training split in a
seeded shuffled order, with no augmentation."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import blocks
from blocks import complexity
from blocks.atomic import atomic_write
from blocks.resnet import ACTIVATION_BYTES, tflite_peak

from ..cli import python_command
from ..config import DataConfig
from ..data.custom import DatasetSplits, given_dataset
from ..errors import UserError
from ..files import atomic_write_text
from ..names import TEMP_ROOM, check_path
from . import int8_results, tflite

FORMAT = "resnet-budget-search.tflite/2"  # bumped when the sidecar's keys change (2: tflite_peak_bytes, flash_bytes)
CALIBRATION_IMAGES = 500  # default; the ranges of a 10-class CIFAR model settle well before this
CALIBRATION_SEED = 0  # the shuffled order the calibration images are taken from
BATCH = 100  # images a loader batch holds while calibrating or evaluating


def locate(source: Path, trial: int | None, seed: int, space: str | None, random_calibration: bool,
           storage: str | None, data_root: str | None) -> tuple[Path, DataConfig | None]:
    """The model.pt to export and the data config its calibration images come from (None: random)."""
    from ..config import load_config
    from .results import open_results

    if source.is_file():
        if trial is not None:
            raise UserError(f"--trial {trial}: {source} is a model file; --trial picks one in a results folder")
        if space is None and not random_calibration:
            raise UserError(f"{source}: a model file carries no dataset; pass --space SPACE.yaml for calibration "
                            f"images (or export from its results folder)")
        roots = [f"data.root={data_root}"] if data_root else []  # a path, taken as typed
        data = None if space is None else load_config(space, strings=roots).data
        return source, data
    res = open_results(source, storage, data_root)
    number = res.choose([trial] if trial is not None else None, None)[0]
    path = source / "retrain" / f"{number:05d}" / f"seed_{seed}" / "model.pt"
    if not path.is_file():
        raise UserError(f"trial {number} has no retrained model ({path} is missing): run `{python_command()} -m search "
                        f"retrain {source} --trial {number}` first")
    return path, res.cfg.data


def load(path: Path) -> blocks.ResNet:
    """blocks.load, with its refusals as one line."""
    try:
        return blocks.load(path)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from None


def calibration(data: DataConfig | None, n: int, spec: blocks.ArchSpec) -> Iterator[np.ndarray]:
    """NHWC float batches of `n` normalised training images (standard-normal noise when `data` is None)."""
    if data is None:
        rng = np.random.default_rng(CALIBRATION_SEED)
        yield rng.standard_normal((n, spec.input_size, spec.input_size, spec.in_channels)).astype(np.float32)
        return
    from ..data.datasets import make_loaders

    loaders = make_loaders(data, [], min(n, BATCH), seed=CALIBRATION_SEED, device="cpu")
    seen = 0
    for images, _ in loaders.train:
        yield tflite.nhwc(images[: n - seen])
        seen += len(images[: n - seen])
        if seen >= n:
            return


def evaluate_int8(tflite_bytes: bytes, model: torch.nn.Module, data: DataConfig, n: int,
             runtime: str = "litert") -> dict[str, Any]:
    """Int8 top-1 in `runtime`'s interpreter beside fp32 top-1 and their agreement on the first n test images."""
    from ..data.datasets import make_loaders

    loaders = make_loaders(data, [], BATCH, seed=CALIBRATION_SEED, device="cpu", test=True)
    if loaders.test is None:
        raise UserError(f"--evaluate: dataset {data.dataset!r} has no labelled test split")
    int8, labels = tflite.int8_predictions(tflite_bytes, loaders.test, runtime, limit=n)
    fp32 = []
    with torch.no_grad():
        for images, _ in loaders.test:
            fp32.append(model(images.float()).argmax(1).numpy())
            if sum(map(len, fp32)) >= len(labels):
                break
    fp = np.concatenate(fp32)[: len(labels)]
    return {"images": len(labels), "int8_top1": float((int8 == labels).mean()), "fp32_top1": float((fp == labels).mean()),
            "agreement": float((int8 == fp).mean()), "runtime": tflite.RUNTIMES[runtime]}


def sidecar(path: Path, model: blocks.ResNet, data: DataConfig | None, n: int, tflite_bytes: bytes,
            graph: tflite.Graph, seconds: float) -> dict[str, Any]:
    """What a deployer needs beside the file: layout, normalisation, quantisation, classes, memory."""
    spec, extra = model.spec, model.extra
    cx = complexity(spec)
    names = extra.get("class_names") or [str(k) for k in range(spec.num_classes)]
    i = graph.input
    doc: dict[str, Any] = {
        "format": FORMAT, "file": path.name, "file_bytes": len(tflite_bytes),
        "sha256": hashlib.sha256(tflite_bytes).hexdigest(),
        "input": {**i.to_dict(), "layout": "NHWC", "mean": extra.get("mean"), "std": extra.get("std"),
                  "feed": "RGB pixels p in [0, 255]: q = round(((p / 255 - mean[c]) / std[c]) / scale) + zero_point, "
                          "clipped to [-128, 127]"},
        "output": {**graph.output.to_dict(), "meaning": "int8 logits: class = argmax; logit = (q - zero_point) * scale"},
        "class_names": names, "arch": spec.to_dict(), "params": cx.params, "flops": cx.flops,
        "analytic_peak_bytes": cx.peak_bytes(), "tflite_peak_bytes": tflite_peak(spec) * ACTIVATION_BYTES,
        "flash_bytes": tflite.flash_bytes(model)[0],
        "calibration": ({"images": n, "from": f"{data.dataset} training split, the first {n} of a shuffled order "
                                              f"(seed {CALIBRATION_SEED}), no augmentation"}
                        if data is not None else {"images": n, "from": "standard-normal noise (tests only)"}),
        "graph": {"int8_clean": graph.int8_clean, "ops": graph.ops, "float_tensors": list(graph.float_tensors),
                  "quantize_dequantize_ops": graph.converts},
        "converter": tflite.versions(), "convert_seconds": round(seconds, 1),
        "quantisation": "full integer: int8 weights per output channel (symmetric), int8 activations per tensor "
                        "with static calibrated ranges, int32 biases (ai-edge-quantizer static_wi8_ai8)",
    }
    doc["arena"] = (tflite.arena(tflite_bytes) if tflite.has_micro()
                    else "not measured: pip install tflite-micro (TFLite Micro's Python interpreter)")
    return doc


@dataclass(frozen=True)
class Exported:
    """What export wrote: the int8 .tflite, its JSON sidecar, and the int8 accuracy when it was evaluated."""

    tflite: Path
    sidecar: Path  # the same name with .json: layout, normalisation, quantisation, classes, arena
    accuracy: dict[str, Any] | None  # int8_top1, fp32_top1, agreement, images, runtime (with `evaluate`)


def export(source: str | Path, *, trial: int | None = None, seed: int = 0,
           calibration_images: int = CALIBRATION_IMAGES, random_calibration: bool = False, space: str | None = None,
           evaluate: int = 0, runtime: str = "litert", output: str | Path | None = None, storage: str | None = None,
           data_root: str | None = None, dataset: DatasetSplits | None = None,
           log: Callable[[str], None] = print) -> Exported:
    """Convert a retrained model (a results folder's `trial`, default the best, or a model.pt) to a full-integer
    int8 .tflite with its sidecar, calibrated on training images (`dataset`: the object a search given one in
    Python trained on). Each keyword is the export command's option of the same name; needs the mcu extra."""
    n = calibration_images
    if n < 1 or evaluate < 0:
        raise UserError(f"--calibration-images {n} --evaluate {evaluate}: expected at least 1 and 0")
    check_path(str(source), "SOURCE")
    if output:  # checked now, not after minutes of conversion; the sidecar may add '.json' to the name
        check_path(str(output), "--output", room=TEMP_ROOM + len(".json"))
    tflite.need_converter()
    model_path, data = locate(Path(source), trial, seed, space, random_calibration, storage, data_root)
    if data is not None and dataset is not None:
        data = given_dataset(data, dataset)
    # Images are read in this process: a DataLoader worker forked after JAX (the converter's) started its threads
    # can deadlock, and a few hundred calibration images need no workers.
    data = None if random_calibration or data is None else dataclasses.replace(data, num_workers=0)
    if evaluate and data is None:
        raise UserError("--evaluate needs the dataset: export from a results folder or pass --space")
    if evaluate and runtime == "micro" and not tflite.has_micro():
        raise UserError(f"--runtime micro needs TFLite Micro's interpreter (tflite_micro is missing): {tflite.EXTRA}")
    model = load(model_path)
    out = Path(output) if output else model_path.with_name("model_int8.tflite")
    log(f"converting {model_path} to int8 TFLite, calibrated on {n} "
        f"{'training images' if data is not None else 'noise inputs'} -> {out}")
    start = time.monotonic()
    tflite_bytes = tflite.convert_int8(model, model.spec, calibration(data, n, model.spec))
    seconds = time.monotonic() - start
    graph = tflite.inspect(tflite_bytes)
    if not graph.int8_clean:
        raise UserError(f"{model_path}: the converted graph is not int8 end to end ({graph.problems()}); "
                        f"nothing written")
    doc = sidecar(out, model, data, n, tflite_bytes, graph, seconds)
    if evaluate and data is not None:  # (evaluate without data was refused above)
        doc["accuracy"] = evaluate_int8(tflite_bytes, model, data, evaluate, runtime)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda f: f.write(tflite_bytes))  # whole or not at all, then the sidecar that describes it
    atomic_write_text(out.with_suffix(".json"), json.dumps(doc, indent=1))
    arena = doc["arena"]
    memory = (f"arena head {arena['head']:,} + tail {arena['tail']:,} = {arena['total']:,} bytes"
              if isinstance(arena, dict) else "arena not measured (no tflite-micro)")
    log(f"wrote {out} ({len(tflite_bytes):,} bytes, {doc['flash_bytes']:,} of them weights, biases and their "
        f"quantisation; int8 end to end, {seconds:.1f} s; {memory}; analytic peak {doc['analytic_peak_bytes']:,} "
        f"bytes, {doc['tflite_peak_bytes']:,} with the PAD tensors) and {out.with_suffix('.json').name}")
    if evaluate:
        record(model_path, out, doc, log)
    return Exported(out, out.with_suffix(".json"), doc.get("accuracy"))


def record(source: Path, out: Path, doc: dict[str, Any], log: Callable[[str], None]) -> None:
    """Say the int8 accuracy and keep it beside a retrained seed's model, where the retrain table and report read it."""
    acc = doc["accuracy"]
    memory = {k: doc[k] for k in ("file_bytes", "arena", "tflite_peak_bytes") if isinstance(doc.get(k), int | dict)}
    where = int8_results.write_record(source, acc, {"tflite": str(out), "tflite_sha256": doc["sha256"],
                                                    "calibration": doc["calibration"], **memory})
    kept = f"; recorded in {where} for the retrain summary and the report" if where else ""
    log(f"int8 top-1 {acc['int8_top1']:.4f}, fp32 {acc['fp32_top1']:.4f} on the same {acc['images']:,} test images "
        f"({acc['int8_top1'] - acc['fp32_top1']:+.4f}; the same class on {acc['agreement']:.1%}){kept}")
    if acc["fp32_top1"] - acc["int8_top1"] > int8_results.PTQ_LOSS:
        log(f"note: int8 loses more than {int8_results.PTQ_LOSS * 100:.1f} points of top-1 to post-training "
            f"quantisation; quantisation-aware training is not available in this toolkit yet")
