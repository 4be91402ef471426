"""The int8 accuracy that `search export --evaluate` records beside a retrained seed's model (`int8.json`), and
its summary over a trial's seeds, shown beside fp32 in the retrain table and the report.

A record names the model.pt it was measured on by its SHA-256: a model trained again in the same folder
leaves the record stale, and a stale, unreadable or missing record shows nothing (never a zero).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from blocks.holds import Number
from blocks.io import UnreadableFile, read_json

from ..files import atomic_write_text
from .evaluate import mean_std

RECORD = "int8.json"  # in retrain/<trial>/seed_K/, beside model.pt
FORMAT = "resnet-budget-search.int8/1"  # bumped when the record's keys change
SHAPE = {"format": str, "model_sha256": str, "images": int, "int8_top1": Number, "fp32_top1": Number,
         "agreement": Number, "runtime": str}
# Top-1 lost to int8 that export warns about: issue 26's "about 0.5 points" (MLPerf Tiny's ResNet-8 loses 0.2,
# mlcommons/tiny PR #116); quantisation-aware training, the remedy, is not available yet.
PTQ_LOSS = 0.005


def sha256(path: Path) -> str:
    """The SHA-256 of a file, read 1 MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


def write_record(model_path: Path, accuracy: dict[str, Any], exported: dict[str, Any]) -> Path | None:
    """Record an int8 evaluation beside a retrain seed's model.pt; None (nothing written) for a model elsewhere."""
    folder = model_path.parent
    if not (folder / "run.json").is_file():  # retrain writes run.json in each seed folder before training
        return None
    doc = {"format": FORMAT, "model": model_path.name, "model_sha256": sha256(model_path), **accuracy, **exported}
    atomic_write_text(folder / RECORD, json.dumps(doc, indent=1))
    return folder / RECORD


def read_record(folder: Path) -> dict[str, Any] | None:
    """A seed folder's int8 record; None when there is none, it cannot be read or its model.pt has changed since."""
    path, model = folder / RECORD, folder / "model.pt"
    if not path.is_file() or not model.is_file():
        return None
    try:
        doc = read_json(path, SHAPE)
    except (UnreadableFile, OSError):
        return None
    return doc if doc["model_sha256"] == sha256(model) else None


def summary(folders: list[Path]) -> dict[str, Any] | None:
    """int8 top-1, fp32 top-1 on the same images and int8 - fp32 (mean, std) over the seed folders with a record."""
    records = [(f.name, r) for f in folders if (r := read_record(f)) is not None]
    if not records:
        return None
    values = {key: [r[key] for _, r in records] for key in ("int8_top1", "fp32_top1")}
    return {"top1": mean_std(values["int8_top1"]), "fp32_top1": mean_std(values["fp32_top1"]),
            "minus_fp32": mean_std([i - f for i, f in zip(values["int8_top1"], values["fp32_top1"], strict=True)]),
            "images": min(r["images"] for _, r in records), "runtime": records[0][1]["runtime"],
            "seeds": [name for name, _ in records], **memory(records[0][1])}


def memory(record: dict[str, Any]) -> dict[str, int]:
    """{'arena_head', 'arena_tail', 'file_bytes'} of the exported file a record names (the same design in every
    seed, so one record tells); only those it has: records before them, or without tflite-micro, lack them."""
    arena = given if isinstance(given := record.get("arena"), dict) else {}
    found = {"arena_head": arena.get("head"), "arena_tail": arena.get("tail"), "file_bytes": record.get("file_bytes")}
    return {k: v for k, v in found.items() if isinstance(v, int) and not isinstance(v, bool)}


def brief(folders: list[Path]) -> dict[str, Any]:
    """{'int8_top1': mean, 'int8_top1_std': std, 'int8_minus_fp32': ..., 'int8_images': n, 'int8_arena_head': bytes
    ...}; {} without a record."""
    s = summary(folders)
    if s is None:
        return {}
    return {"int8_top1": s["top1"]["mean"], "int8_top1_std": s["top1"]["std"],
            "int8_minus_fp32": s["minus_fp32"]["mean"], "int8_minus_fp32_std": s["minus_fp32"]["std"],
            "int8_images": s["images"], **{f"int8_{k}": s[k] for k in ("arena_head", "arena_tail", "file_bytes")
                                           if k in s}}
