"""The review commands' command line (`resnet-search report | retrain | predict | export`): for each, its argparse
options and a main that calls its typed function in search.review (search.api's) under main_guard.

Each review module is imported inside the functions that need it, so that a command loads only its own (the
report does not wait for torchvision, which predict's images need).
"""

from __future__ import annotations

import argparse
import io
import os
import shlex
import sys
from pathlib import Path

from .cli import ArgumentParser, main_guard, python_command, say

REPORT_HELP = "`resnet-search report results/<study>`: one self-contained HTML page of what the search learned."
RETRAIN_HELP = "`resnet-search retrain results/<study>`: train chosen trials to full epochs, then test them once."
PREDICT_HELP = """`resnet-search predict MODEL... --images DIR|FILE...`: label new images with retrained models, as a CSV.

A MODEL is a retrained `model.pt`, or a folder holding some (`results/<study>/retrain/00012` = all its
seeds); several models are an ensemble (the mean of their softmax, as retrain's ensembles). Each image is
read as RGB (at most {megapixels} megapixels), its shorter side resized to the model's input size and the
centre square kept, then normalised with the statistics the model was trained with (stored in model.pt; a
model.pt without them needs --mean/--std, or names a dataset whose defaults are used with a note).
The CSV goes beside the first model, as predictions_<IMAGES>.csv, unless --output says where.
"""
EXPORT_HELP = """`resnet-search export RESULTS --trial N` (or `export MODEL.pt --space SPACE.yaml`): an int8 `.tflite`
a microcontroller runs, with a JSON sidecar of what a deployer needs (input layout, normalisation,
quantisation, class names, the TFLite Micro arena).

Calibration images: the first N images of the study's training split in a seeded shuffled order (the
retrain's validation share included), loaded through the project's own loaders with no augmentation.
"""


def report_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The report command's options."""
    p = ArgumentParser(prog="resnet-search report", description=REPORT_HELP)
    p.add_argument("results", help="the study's results folder, e.g. results/cifar10_5m")
    p.add_argument("--storage", help="the study's SQLAlchemy URL (default: sqlite:///<results>/study.db)")
    p.add_argument("--study-name", help="the study, when its database holds several (default: the folder's own)")
    p.add_argument("--output", help="where to write the page (default: <results>/report.html)")
    p.add_argument("--data-root", help="dataset folder, when it moved since the search (data.root), as retrain "
                                       "takes it; a report reads no image, so it works where the dataset is not")
    return p.parse_args(argv)


def report_main(argv: list[str] | None = None) -> int:
    """`resnet-search report`: one-line errors and exit status 2 for bad input."""
    from .review.report import report

    a = report_args(argv)
    return main_guard(lambda: report(a.results, storage=a.storage, study_name=a.study_name, output=a.output,
                                     data_root=a.data_root))


def retrain_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The retrain command's options; unset ones default to the YAML's retrain section."""
    p = ArgumentParser(prog="resnet-search retrain", description=RETRAIN_HELP)
    p.add_argument("results", help="the study's results folder, e.g. results/cifar10_5m")
    pick = p.add_mutually_exclusive_group()
    pick.add_argument("--trial", type=int, action="append", metavar="N",
                      help="retrain trial N (repeatable; several trials are also ensembled)")
    pick.add_argument("--top", type=int, metavar="K",
                      help="retrain the K best complete trials and test their ensemble too (default: 1)")
    p.add_argument("--epochs", type=int, help="epochs of the full run (default: retrain.epochs of the YAML)")
    p.add_argument("--seeds", type=int, help="independent runs per trial, for mean and std (retrain.seeds)")
    p.add_argument("--train-on-val", action=argparse.BooleanOptionalAction, default=None,
                   help="train on train + validation images, the final step (retrain.train_on_val, default "
                        "true); --no-train-on-val keeps a validation curve")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a data.* or retrain.* key of the search's YAML, e.g. --set retrain.ema=null")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to train")
    p.add_argument("--storage", help="the study's SQLAlchemy URL (default: sqlite:///<results>/study.db)")
    p.add_argument("--study-name", help="the study, when its database holds several (default: the folder's own)")
    p.add_argument("--data-root", help="dataset folder, when it moved since the search (data.root)")
    p.add_argument("--onnx", action="store_true", help="also export model.onnx (needs the onnx package)")
    p.add_argument("--predict", action="store_true",
                   help="write predictions.csv for the unlabeled test split (Tiny ImageNet's test/)")
    p.add_argument("--fresh", action="store_true", help="discard earlier retrain output of these trials first")
    return p.parse_args(argv)


def retrain_main(argv: list[str] | None = None) -> int:
    """`resnet-search retrain`: one-line errors, exit status 2 for bad input, 130 for Ctrl-C (rerun to resume);
    what to run next at the end."""
    from .review.retrain import retrain

    a = retrain_args(argv)

    def run() -> None:
        done = retrain(a.results, trials=a.trial, top=a.top, epochs=a.epochs, seeds=a.seeds,
                       train_on_val=a.train_on_val, overrides=a.overrides, device=a.device, storage=a.storage,
                       study_name=a.study_name, data_root=a.data_root, onnx=a.onnx, predict=a.predict,
                       fresh=a.fresh, log=say)
        say(next_steps(done.folder.parent, next(iter(done.models))))  # the folder is <results>/retrain

    return main_guard(run)


def next_steps(results: Path, number: int) -> str:
    """What follows a retrain, run by this interpreter: label new images with the model, or export it."""
    py, model = python_command(), shlex.quote(str(results / "retrain" / f"{number:05d}" / "seed_0" / "model.pt"))
    return "\n".join(["next:",
                      f"  {py} -m search predict {model} --images DIR      # label your own images",
                      f"  {py} -m search export {shlex.quote(str(results))} --trial {number}   "
                      f"# int8 .tflite for a microcontroller (the mcu extra)"])


def predict_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The predict command's options."""
    from .data.sources import MAX_PIXELS

    p = ArgumentParser(prog="resnet-search predict", description=PREDICT_HELP.format(megapixels=MAX_PIXELS // 10**6),
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


def predict_main(argv: list[str] | None = None) -> int:
    """`resnet-search predict`: one-line errors and exit status 2 for bad input; notes on stderr when the CSV goes
    to stdout."""
    from .review.predict import predict_images

    a = predict_args(argv)
    log = (lambda line: print(line, file=sys.stderr)) if _is_stdout(a.output) else print
    return main_guard(lambda: predict_images(a.models, a.images, output=a.output, top_k=a.top_k,
                                             batch_size=a.batch_size, device=a.device, mean=a.mean, std=a.std,
                                             log=log))


def _is_stdout(output: str | None) -> bool:
    """Whether --output is `-` or names the file standard output already is (/dev/stdout)."""
    if output is None:  # the default file beside the model
        return False
    try:
        return output == "-" or os.path.samestat(os.stat(output), os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError, io.UnsupportedOperation):  # no such file; stdout replaced (pytest) or closed
        return False


def export_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The export command's options."""
    from .review.export import CALIBRATION_IMAGES
    from .review.tflite import RUNTIMES

    p = ArgumentParser(prog="resnet-search export", description=EXPORT_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="a results folder (with --trial, retrained by `search retrain`) or a model.pt")
    p.add_argument("--trial", type=int, help="the retrained trial to export (default: the best complete trial)")
    p.add_argument("--seed", type=int, default=0, metavar="K", help="which retrain seed run, seed_K (default 0)")
    p.add_argument("--format", default="tflite", choices=["tflite"], help="int8 TFLite, full integer (default)")
    p.add_argument("--calibration-images", type=int, default=CALIBRATION_IMAGES, metavar="N",
                   help=f"training images that set the activation ranges (default {CALIBRATION_IMAGES})")
    p.add_argument("--random-calibration", action="store_true",
                   help="calibrate on standard-normal noise instead of images: for tests only, the ranges are wrong")
    p.add_argument("--space", help="for a model.pt: the search YAML whose data section gives calibration images")
    p.add_argument("--evaluate", type=int, default=0, metavar="N",
                   help="also run the int8 file on N test images and record int8 and fp32 top-1 (default 0: off)")
    p.add_argument("--runtime", default="litert", choices=sorted(RUNTIMES),
                   help="the interpreter --evaluate runs: litert (LiteRT's int8 kernels, fast; the default) or micro "
                        "(TFLite Micro's own, as a microcontroller runs it; minutes for 10,000 images)")
    p.add_argument("--output", help="the .tflite to write (default: model_int8.tflite beside the model); "
                                    "the sidecar is the same name with .json")
    p.add_argument("--storage", help="the study's URL when it is on a server (default: RESULTS/study.db)")
    p.add_argument("--data-root", help="dataset folder, when it moved since the search (data.root)")
    return p.parse_args(argv)


def export_main(argv: list[str] | None = None) -> int:
    """`resnet-search export`: one-line errors and exit status 2 for bad input."""
    from .review.export import export

    a = export_args(argv)
    return main_guard(lambda: export(a.source, trial=a.trial, seed=a.seed, calibration_images=a.calibration_images,
                                     random_calibration=a.random_calibration, space=a.space, evaluate=a.evaluate,
                                     runtime=a.runtime, output=a.output, storage=a.storage, data_root=a.data_root))
