"""`predict` on odd inputs: a binary list, a model.pt without normalisation, an image too large to decode."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import blocks
from blocks import ArchSpec
from search import commands
from search.data import datasets as data
from search.data import sources
from search.review import predict
from tests.helpers.errors import one_error
from tests.helpers.processes import child_env
from tests.helpers.spaces import ROOT

SPEC = ArchSpec(stages=2, blocks=(1, 1), width=8, input_size=12, num_classes=3)


def model_pt(path: Path, **extra: object) -> Path:
    """A small untrained model saved by blocks.save with the given extra entries."""
    return blocks.save(path, blocks.build(SPEC), extra=extra)


def image(path: Path, size: tuple[int, int] = (20, 16)) -> Path:
    """A small RGB PNG."""
    Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).save(path)
    return path


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A PNG whose header says width x height, with the data of a 1x1 image (nothing large is written)."""
    Image.new("RGB", (1, 1)).save(path)
    raw = bytearray(path.read_bytes())
    ihdr = raw[12:29]  # b"IHDR" + 13 bytes of header data, after the 8-byte signature and the chunk length
    ihdr[4:12] = struct.pack(">II", width, height)
    raw[12:33] = ihdr + struct.pack(">I", zlib.crc32(ihdr))
    path.write_bytes(bytes(raw))
    return path




def test_a_binary_list_of_images_is_one_line(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    listing = tmp_path / "list.txt"
    listing.write_bytes(bytes(range(256)))
    code = commands.predict_main([str(model_pt(tmp_path / "m.pt", mean=[0.5] * 3, std=[0.5] * 3)), "--images", str(listing)])
    assert one_error(capfd, code) == f"error: {listing}: not a text list of image paths (byte 128 is not UTF-8)"
    listing.write_bytes(b"a.png\n\x00\x01\x02\n")  # valid UTF-8, but a NUL cannot be in a path
    code = commands.predict_main([str(tmp_path / "m.pt"), "--images", str(listing)])
    assert one_error(capfd, code) == f"error: {listing}: not a text list of image paths (byte 6 is a NUL)"
    listing.write_text("x" * 5000 + "\n")  # a name too long for the file system
    code = commands.predict_main([str(tmp_path / "m.pt"), "--images", str(listing)])
    assert one_error(capfd, code) == f"error: {listing}: lists '{'x' * 200}...', which is not a file"


def test_a_model_without_normalisation(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    bare, img, out = model_pt(tmp_path / "bare.pt"), image(tmp_path / "a.png"), tmp_path / "p.csv"
    base = ["--images", str(img), "--output", str(out), "--device", "cpu"]
    err = one_error(capfd, commands.predict_main([str(bare), *base]))
    assert err.startswith(f"error: {bare}: no normalisation saved with the model") and "--mean R G B --std R G B" in err
    assert not out.exists()
    assert commands.predict_main([str(bare), *base, "--mean", "0.5", "0.5", "0.5", "--std", "0.25", "0.25", "0.25"]) == 0
    assert out.is_file() and len(out.read_text().splitlines()) == 2
    assert "--mean and --std go together" in one_error(capfd, commands.predict_main([str(bare), *base, "--mean", "0", "0", "0"]))
    named = model_pt(tmp_path / "named.pt", dataset="cifar10")  # names its dataset: that dataset's statistics
    logged: list[str] = []
    a = commands.predict_args([str(named), *base])
    predict.predict_images(a.models, a.images, output=a.output, device=a.device, log=logged.append)
    assert logged[0] == (f"note: {named} has no mean/std saved with it; using cifar10's: "
                         f"mean {list(data.CIFAR10_MEAN)} std {list(data.CIFAR10_STD)}")


@pytest.mark.parametrize("mean, std", [("1e308", "0.5"), ("0.5", "1e-320"), ("123.7", "58.4"), ("nan", "0.5"),
                                       ("0.5", "inf")])
def test_absurd_normalisation_is_one_line(mean: str, std: str, tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    """--mean/--std are statistics of pixels in [0, 1]: a mean of 1e308 or a std of 1e-320 wrote a CSV of NaN
    probabilities (exit 0); values in 0-255 units are refused with that hint."""
    out = tmp_path / "p.csv"
    code = commands.predict_main([str(model_pt(tmp_path / "m.pt")), "--images", str(image(tmp_path / "a.png")), "--output",
                         str(out), "--device", "cpu", "--mean", mean, mean, mean, "--std", std, std, std])
    err = one_error(capfd, code)
    assert err.startswith(f"error: --mean {float(mean)} ") and "expected each mean in [0, 1] and each std in [1/255, " \
                                                                "1]" in err and "255 times too large" in err
    assert not out.exists()


def test_bad_normalisation_flags_are_refused_before_any_model_is_read(tmp_path: Path,
                                                                      capfd: pytest.CaptureFixture) -> None:
    """--mean/--std are checked as given: with a model that does not exist, the flags' mistake is the line (the
    model was loaded first, so a mistyped --mean was only reported after the models and images were read)."""
    missing = tmp_path / "no_such_model.pt"
    common = [str(missing), "--images", str(image(tmp_path / "a.png")), "--device", "cpu"]
    err = one_error(capfd, commands.predict_main([*common, "--mean", "128", "128", "128", "--std", "64", "64", "64"]))
    assert err.startswith("error: --mean 128.0 128.0 128.0 --std 64.0 64.0 64.0: expected each mean in [0, 1]")
    err = one_error(capfd, commands.predict_main([*common, "--std", "0.2", "0.2", "0.2"]))
    assert err == "error: --mean and --std go together: give both (3 values each) or neither"


@pytest.mark.parametrize("width, height", [(10_000, 10_000), (20_000, 10_000)])  # PIL warns, then refuses
def test_an_image_over_the_size_limit_is_refused_before_decoding(width: int, height: int, tmp_path: Path,
                                                                 capfd: pytest.CaptureFixture) -> None:
    big = png_claiming(tmp_path / "big.png", width, height)
    code = commands.predict_main([str(model_pt(tmp_path / "m.pt", mean=[0.5] * 3, std=[0.5] * 3)), "--images", str(big),
                         "--output", str(tmp_path / "p.csv"), "--device", "cpu"])
    err = capfd.readouterr().err
    assert code == 2 and "DecompressionBomb" not in err, err
    assert err.strip().splitlines()[-1].startswith(f"error: image '{big}' is ") and "over the limit of 50 megapixels" in err
    with pytest.raises(data.UserError, match=r"over the limit of 50 megapixels \(resize it first\)$"):
        sources.read_image(big)


@pytest.mark.parametrize("output", ["out.csv", "-"])
def test_a_file_name_the_locale_cannot_encode(tmp_path: Path, output: str) -> None:
    """An image named with a byte that is not UTF-8, under the C locale and an ASCII stdout: the CSV is written
    (valid UTF-8, the byte as `\\udcff`), no UnicodeEncodeError; the name printed to stdout the same way."""
    folder = tmp_path / "images"
    folder.mkdir()
    image(Path(os.fsdecode(bytes(folder) + b"/caf\xe9-\xff.png")))
    model = model_pt(tmp_path / "m.pt", mean=[0.5] * 3, std=[0.25] * 3)
    env = child_env(ROOT, OMP_NUM_THREADS="1", LC_ALL="C", PYTHONCOERCECLOCALE="0", PYTHONUTF8="0", PYTHONIOENCODING="ascii")
    proc = subprocess.run([sys.executable, "-m", "search", "predict", str(model), "--images",
                           str(folder), "--output", output, "--device", "cpu"], cwd=tmp_path, env=env,
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    text = (tmp_path / output).read_bytes() if output != "-" else proc.stdout
    assert b"caf\\udce9-\\udcff.png" in text and text.decode("ascii")


def test_one_image_and_one_model_read_in_the_singular(tmp_path: Path) -> None:
    model, img = model_pt(tmp_path / "m.pt", mean=[0.5] * 3, std=[0.25] * 3), image(tmp_path / "a.png")
    logged: list[str] = []
    predict.predict_images([model], [img], output=tmp_path / "p.csv", device="cpu", top_k=1, log=logged.append)
    lines = [line for line in logged if not line.startswith("model 0")]
    assert lines[0].startswith("predicting 1 image with 1 model (12px, 3 classes)")
    assert lines[-1] == f"wrote {tmp_path / 'p.csv'} (1 row, top 1 class each)"
