"""Label new images with retrained models (an ensemble when several: the mean of their softmax), as a CSV
(`resnet-search predict`: search/commands.py, whose help says how images are read and normalised)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision.datasets.folder import IMG_EXTENSIONS

import blocks

from ..data import augment
from ..data.datasets import NORMALISATION, ImageDataset, loader_workers
from ..data.sources import Split
from ..describe import plural
from ..device import resolve_device
from ..errors import UserError
from ..files import atomic_write_text, write_output
from ..names import TEMP_ROOM, check_path, fit_name
from ..progress import Progress
from ..trainer import predict
from .evaluate import ensemble_probs

# The least per-channel std taken: one grey level. A channel that varies less is constant, and dividing by less
# would send its pixels past +-255 (a std of 1e-320 made every probability NaN, as did a mean of 1e308).
STD_MIN = 1 / 255


def model_paths(args: list[str]) -> list[Path]:
    """model.pt files named or found under the given folders."""
    out = []
    for a in args:
        path = Path(a)
        found = sorted(path.rglob("model.pt")) if path.is_dir() else [path] if path.is_file() else []
        if not found:
            raise UserError(f"{a}: no model.pt there (give a retrained model.pt or a folder holding some)")
        out += found
    return out


def image_paths(args: list[str]) -> list[Path]:
    """Image files from folders (recursively), files, and .txt lists of paths, in a stable order."""
    out: list[Path] = []
    for a in args:
        path = Path(a)
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)
        elif path.is_file() and path.suffix.lower() == ".txt":
            listed = [Path(line.strip()) for line in _text_lines(path) if line.strip()]
            missing = next((p for p in listed if not _is_file(p)), None)
            if missing is not None:
                shown = str(missing) if len(str(missing)) <= 200 else f"{str(missing)[:200]}..."  # a whole line
                raise UserError(f"{a}: lists '{shown}', which is not a file")
            out += listed
        elif path.is_file():
            out.append(path)
        else:
            raise UserError(f"--images {a}: no such file or folder")
    if not out:
        raise UserError(f"--images {' '.join(args)}: no image files found ({', '.join(IMG_EXTENSIONS[:4])} ...)")
    return out


def _text_lines(path: Path) -> list[str]:
    """The lines of a list of image paths, which must be UTF-8 text."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not a text list of image paths (byte {e.start} is not UTF-8)") from None
    if "\0" in text:  # a NUL cannot be in a path
        raise UserError(f"{path}: not a text list of image paths (byte {raw.index(0)} is a NUL)")
    return text.splitlines()


def _is_file(path: Path) -> bool:
    """Whether path names a file (a name too long for the file system names none)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def given_normalisation(mean: Sequence[float] | None, std: Sequence[float] | None) -> tuple[list, list] | None:
    """--mean/--std checked as given (before any model or image is read), or None when neither is given."""
    if (mean is None) != (std is None):
        raise UserError("--mean and --std go together: give both (3 values each) or neither")
    if mean is None or std is None:
        return None
    if len(mean) != 3 or len(std) != 3 or not all(0 <= v <= 1 for v in mean) \
            or not all(STD_MIN <= v <= 1 for v in std):  # NaN fails too
        raise UserError(f"--mean {' '.join(map(str, mean))} --std {' '.join(map(str, std))}: expected "
                        f"each mean in [0, 1] and each std in [1/255, 1], statistics of pixels scaled to [0, 1] "
                        f"(values in 0-255 units are 255 times too large; 3 values each, R G B)")
    return list(mean), list(std)


def normalisation(mean: Sequence[float] | None, std: Sequence[float] | None, extra: dict, where: Path,
                  log: Callable[[str], None] = print) -> tuple[list, list]:
    """Mean and std of the inputs: --mean/--std, else model.pt's, else its dataset's defaults (with a note)."""
    if (given := given_normalisation(mean, std)) is not None:
        return given
    if "mean" in extra and "std" in extra:
        return extra["mean"], extra["std"]
    dataset = extra.get("dataset")
    if dataset in NORMALISATION:
        mean, std = NORMALISATION[dataset]
        log(f"note: {where} has no mean/std saved with it; using {dataset}'s: mean {list(mean)} std {list(std)}")
        return list(mean), list(std)
    raise UserError(f"{where}: no normalisation saved with the model (mean/std; e.g. a model.pt written by "
                    f"blocks.save without them): pass --mean R G B --std R G B, the per-channel statistics of "
                    f"the images it was trained on (pixels in [0, 1])")


def load_models(paths: list[Path], device: torch.device) -> list[blocks.ResNet]:
    """The models, checked to agree on classes, input size and normalisation."""
    models = []
    for p in paths:
        try:
            models.append(blocks.load(p, device))
        except (ValueError, FileNotFoundError) as e:
            raise UserError(str(e)) from None
    first = models[0].extra
    for p, m in zip(paths[1:], models[1:], strict=True):
        for key in ("class_names", "image_size", "mean", "std"):
            if m.extra.get(key) != first.get(key):
                raise UserError(f"{p}: its {key} differs from {paths[0]}'s; an ensemble needs models of one dataset")
    return models


@dataclass(frozen=True)
class Predictions:
    """What predict found: each image's class probabilities (the ensemble's mean softmax) and where the CSV went."""

    files: list[Path]  # the images, in the CSV's order
    class_names: list[str]  # column k of probs
    probs: torch.Tensor  # (images, classes)
    csv: Path  # the CSV written (`-`: standard output)


def predict_images(models: Sequence[str | Path], images: Sequence[str | Path], *, output: str | Path | None = None,
                   top_k: int = 5, batch_size: int = 128, device: str = "auto",
                   mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                   log: Callable[[str], None] = print) -> Predictions:
    """Label images (folders, files, .txt lists) with retrained models (an ensemble when several) and write the
    top-k CSV (default: beside the first model). Each keyword is the predict command's option of that name."""
    model_args, image_args = [str(m) for m in models], [str(i) for i in images]
    out_arg = None if output is None else str(output)
    if top_k < 1 or batch_size < 1:
        raise UserError(f"--top-k {top_k} --batch-size {batch_size}: expected 1 or more")
    given_normalisation(mean, std)  # a flag's mistake is reported before minutes of loading, whatever else is wrong
    for what, given in (("MODEL", model_args), ("--images", image_args)):
        for path in given:
            check_path(path, what)
    if out_arg not in (None, "-"):
        check_path(str(out_arg), "--output", room=TEMP_ROOM)  # a file is written through a temporary one beside it
    where = resolve_device(device)
    paths = model_paths(model_args)
    loaded = load_models(paths, where)
    files = image_paths(image_args)
    extra = loaded[0].extra
    names = extra.get("class_names") or [str(c) for c in range(loaded[0].spec.num_classes)]
    size = int(extra.get("image_size") or loaded[0].spec.input_size)
    mean, std = normalisation(mean, std, extra, paths[0], log)
    ds = ImageDataset(Split(np.arange(len(files)), paths=files), augment.eval_pipeline(pre=augment.square(size)))
    loader = DataLoader(ds, batch_size=batch_size, num_workers=min(loader_workers("auto"), 4),
                        collate_fn=augment.NormalizeCollate(mean, std))
    log(f"predicting {plural(len(files), 'image')} with {plural(len(loaded), 'model')} "
        f"({size}px, {len(names)} classes) on {where}")
    probs = ensemble_probs([predict(m, loader, where, on_batch=Progress(f"model {k}", 0, log=log))[0]
                            for k, m in enumerate(loaded)])
    out = Path(out_arg) if out_arg is not None else default_output(model_args, image_args)
    write_csv(out, files, probs, names, top_k, named=out_arg is not None)
    log(f"wrote {'standard output' if str(out) == '-' else out} ({plural(len(files), 'row')}, top "
        f"{plural(min(top_k, len(names)), 'class', 'classes')} each)")
    return Predictions(files, list(names), probs, out)


def default_output(models: list[str], images: list[str]) -> Path:
    """predictions_<images>.csv in the first MODEL's folder (the folder given, or the one holding the model.pt).

    Beside the model, so inside its results folder, never the current folder; named after the images, so a run
    on other images never replaces it (one on the same images does, as a rerun should).
    """
    first = Path(models[0])
    folder = first if first.is_dir() else first.parent
    label = Path(images[0]).resolve().stem or "images"  # `.` is the current folder's name; `/` has none
    if len(images) > 1:
        label += f"_and_{len(images) - 1}_more"
    return folder / (fit_name(f"predictions_{label}", room=len(".csv") + TEMP_ROOM) + ".csv")


def write_csv(path: Path, files: list[Path], probs: torch.Tensor, names: list[str], k: int,
              named: bool = True) -> None:
    """One row per image: file, then class_i and prob_i for the k most probable classes.

    `named`: the user named `path` (a FIFO or device there is streamed to, a link followed); else it is the
    default name beside the model, written atomically over whatever is there (a planted link is replaced).
    """
    k = min(k, probs.shape[1])
    top = probs.topk(k, dim=1)
    header = ["file"] + [f"{c}_{i}" for i in range(1, k + 1) for c in ("class", "prob")]
    text = io.StringIO(newline="")
    w = csv.writer(text)
    w.writerow(header)
    for file, p, idx in zip(files, top.values.tolist(), top.indices.tolist(), strict=True):
        w.writerow([str(file)] + [v for j in range(k) for v in (names[idx[j]], f"{p[j]:.6f}")])
    try:  # a file: atomically (a kill mid-write leaves the previous CSV); `-`, a FIFO or /dev/null: as a stream
        if str(path) != "-":
            path.parent.mkdir(parents=True, exist_ok=True)
        if named:
            write_output(path, text.getvalue())
        else:
            atomic_write_text(path, text.getvalue())
    except OSError as e:
        hint = "" if named else " (choose where with --output)"
        raise UserError(f"cannot write '{path}': {e.strerror or e}{hint}") from None
