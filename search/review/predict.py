"""`resnet-search predict MODEL... --images DIR|FILE...`: label new images with retrained models, as a CSV.

A MODEL is a retrained `model.pt`, or a folder holding some (`results/<study>/retrain/00012` = all its
seeds); several models are an ensemble (the mean of their softmax, as retrain's ensembles). Each image is
read as RGB (at most {megapixels} megapixels), its shorter side resized to the model's input size and the
centre square kept, then normalised with the statistics the model was trained with (stored in model.pt; a
model.pt without them needs --mean/--std, or names a dataset whose defaults are used with a note).
The CSV goes beside the first model, as predictions_<IMAGES>.csv, unless --output says where.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision.datasets.folder import IMG_EXTENSIONS

import blocks
from blocks.atomic import atomic_write_text, write_output
from blocks.text import plural

from ..cli import main_guard
from ..data import augment
from ..data.datasets import NORMALISATION, ImageDataset, loader_workers
from ..data.sources import MAX_PIXELS, Split
from ..device import resolve_device
from ..errors import UserError
from ..names import TEMP_ROOM, check_path, fit_name
from ..progress import Progress
from ..trainer import predict
from .evaluate import ensemble_probs

# The least per-channel std taken: one grey level. A channel that varies less is constant, and dividing by less
# would send its pixels past +-255 (a std of 1e-320 made every probability NaN, as did a mean of 1e308).
STD_MIN = 1 / 255


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="resnet-search predict",
                                description=__doc__.format(megapixels=MAX_PIXELS // 10**6),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="model.pt files or folders holding them (several = an ensemble)")
    p.add_argument("--images", nargs="+", required=True,
                   help="image folders (searched recursively), image files, or .txt files listing one path a line")
    p.add_argument("--output",
                   help="CSV to write (default: predictions_<IMAGES>.csv in the first MODEL's folder, named after the "
                        "first --images); - or a FIFO or device (/dev/stdout) as a stream")
    p.add_argument("--top-k", type=int, default=5, help="classes per image, most probable first (default 5)")
    p.add_argument("--batch-size", type=int, default=128,
                   help="images per forward pass (default 128; lower it if the device runs out of memory)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the models run (default auto: cuda when there is one)")
    p.add_argument("--mean", type=float, nargs=3, metavar=("R", "G", "B"),
                   help="per-channel mean of the training images, pixels in [0, 1] (default: saved in model.pt)")
    p.add_argument("--std", type=float, nargs=3, metavar=("R", "G", "B"),
                   help="per-channel standard deviation, as --mean, 1/255 to 1 (default: saved in model.pt)")
    return p.parse_args(argv)


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


def given_normalisation(args: argparse.Namespace) -> tuple[list, list] | None:
    """--mean/--std checked as given (before any model or image is read), or None when neither is given."""
    if (args.mean is None) != (args.std is None):
        raise UserError("--mean and --std go together: give both (3 values each) or neither")
    if args.mean is None:
        return None
    if not all(0 <= v <= 1 for v in args.mean) or not all(STD_MIN <= v <= 1 for v in args.std):  # NaN fails too
        raise UserError(f"--mean {' '.join(map(str, args.mean))} --std {' '.join(map(str, args.std))}: expected "
                        f"each mean in [0, 1] and each std in [1/255, 1], statistics of pixels scaled to [0, 1] "
                        f"(values in 0-255 units are 255 times too large)")
    return list(args.mean), list(args.std)


def normalisation(args: argparse.Namespace, extra: dict, where: Path,
                  log: Callable[[str], None] = print) -> tuple[list, list]:
    """Mean and std of the inputs: --mean/--std, else model.pt's, else its dataset's defaults (with a note)."""
    if (given := given_normalisation(args)) is not None:
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


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> Path:
    """Predict and write the CSV; returns its path."""
    if args.top_k < 1 or args.batch_size < 1:
        raise UserError(f"--top-k {args.top_k} --batch-size {args.batch_size}: expected 1 or more")
    given_normalisation(args)  # a flag's mistake is reported before minutes of loading, whatever else is wrong
    for what, given in (("MODEL", args.models), ("--images", args.images)):
        for path in given:
            check_path(path, what)
    if args.output not in (None, "-"):
        check_path(args.output, "--output", room=TEMP_ROOM)  # a file is written through a temporary one beside it
    device = resolve_device(args.device)
    paths = model_paths(args.models)
    models = load_models(paths, device)
    files = image_paths(args.images)
    extra = models[0].extra
    names = extra.get("class_names") or [str(c) for c in range(models[0].spec.num_classes)]
    size = int(extra.get("image_size") or models[0].spec.input_size)
    mean, std = normalisation(args, extra, paths[0], log)
    ds = ImageDataset(Split(np.arange(len(files)), paths=files), augment.eval_pipeline(pre=augment.square(size)))
    loader = DataLoader(ds, batch_size=args.batch_size, num_workers=min(loader_workers("auto"), 4),
                        collate_fn=augment.NormalizeCollate(mean, std))
    log(f"predicting {plural(len(files), 'image')} with {plural(len(models), 'model')} "
        f"({size}px, {len(names)} classes) on {device}")
    probs = ensemble_probs([predict(m, loader, device, on_batch=Progress(f"model {k}", 0, log=log))[0]
                            for k, m in enumerate(models)])
    out = Path(args.output) if args.output is not None else default_output(args.models, args.images)
    write_csv(out, files, probs, names, args.top_k, named=args.output is not None)
    log(f"wrote {'standard output' if str(out) == '-' else out} ({plural(len(files), 'row')}, top {plural(min(args.top_k, len(names)), 'class', 'classes')} each)")
    return out


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


def main(argv: list[str] | None = None) -> int:
    """Entry point: one-line errors and exit status 2 for bad input; notes on stderr when the CSV goes to stdout."""
    args = parse_args(argv)
    log = (lambda line: print(line, file=sys.stderr)) if _is_stdout(args.output) else print
    return main_guard(lambda: run(args, log))


def _is_stdout(output: str | None) -> bool:
    """Whether --output is `-` or names the file standard output already is (/dev/stdout)."""
    if output is None:  # the default file beside the model
        return False
    try:
        return output == "-" or os.path.samestat(os.stat(output), os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError, io.UnsupportedOperation):  # no such file; stdout replaced (pytest) or closed
        return False


if __name__ == "__main__":
    sys.exit(main())
