"""`predict` labels any folder or list of images with a retrained model or an ensemble, as a CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import blocks
from search import commands
from search.__main__ import main as entry
from search.review import predict


def images(folder: Path) -> list[Path]:
    """Five RGB images of assorted sizes and formats, one in a sub-folder."""
    rng = np.random.default_rng(0)
    out = []
    for k, (w, h, ext) in enumerate([(16, 16, "png"), (40, 30, "jpg"), (20, 64, "png"), (16, 16, "bmp"),
                                     (33, 33, "png")]):
        path = folder / ("sub" if k == 4 else "") / f"img{k}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        out.append(path)
    return out


def read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_a_folder_with_one_model_and_an_ensemble(smoke_retrained: Path, tmp_path: Path) -> None:
    files = images(tmp_path / "new")
    models = sorted((smoke_retrained / "retrain").glob("0*/seed_0/model.pt"))
    assert len(models) == 2
    out = tmp_path / "one.csv"
    assert entry(["predict", str(models[0]), "--images", str(tmp_path / "new"), "--output", str(out),
                  "--top-k", "3", "--device", "cpu"]) == 0
    rows = read(out)
    assert sorted(r["file"] for r in rows) == sorted(map(str, files)) and list(rows[0]) == [
        "file", "class_1", "prob_1", "class_2", "prob_2", "class_3", "prob_3"]
    model = blocks.load(models[0])
    extra = model.extra
    row = next(r for r in rows if r["file"].endswith("img0.png"))  # 16 px: fed as is
    x = (np.asarray(Image.open(files[0]).convert("RGB"), np.float32) / 255 - extra["mean"]) / extra["std"]
    with torch.no_grad():
        p = model(torch.from_numpy(x.transpose(2, 0, 1)[None].copy()).float()).softmax(1)[0]
    assert row["class_1"] == extra["class_names"][int(p.argmax())]
    assert float(row["prob_1"]) == pytest.approx(float(p.max()), abs=1e-5)
    probs = [float(row[f"prob_{i}"]) for i in (1, 2, 3)]
    assert probs == sorted(probs, reverse=True)

    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(map(str, files[:2])) + "\n")
    both = tmp_path / "ensemble.csv"
    assert commands.predict_main([str(smoke_retrained / "retrain"), "--images", str(listing), "--output", str(both),
                         "--device", "cpu"]) == 0
    rows = read(both)
    assert [r["file"] for r in rows] == [str(f) for f in files[:2]] and len(rows[0]) == 1 + 2 * 5


def test_the_default_csv_goes_beside_the_model_never_the_current_folder(smoke_retrained: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture) -> None:
    """No --output: predictions_<images>.csv in the model's folder (inside its results folder), printed; the
    current folder is left alone, a link planted at that name is replaced (never written through), and other
    images get a file of their own."""
    files = images(tmp_path / "photos")
    trial = tmp_path / "results" / "smoke" / "retrain" / "00001"  # a copy: the session's study stays as it is
    (trial / "seed_0").mkdir(parents=True)
    model = trial / "seed_0" / "model.pt"
    model.write_bytes(next((smoke_retrained / "retrain").glob("0*/seed_0/model.pt")).read_bytes())
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    expected, outside = model.parent / "predictions_photos.csv", tmp_path / "outside.csv"
    outside.write_text("keep")
    expected.symlink_to(outside)
    assert commands.predict_main([str(model), "--images", str(tmp_path / "photos"), "--device", "cpu"]) == 0
    assert f"wrote {expected} (5 rows, top 5 classes each)" in capsys.readouterr().out
    assert list(work.iterdir()) == [] and outside.read_text() == "keep" and not expected.is_symlink()
    assert sorted(r["file"] for r in read(expected)) == sorted(map(str, files))
    assert commands.predict_main([str(trial), "--images", str(files[0]), str(files[1]), "--device", "cpu"]) == 0
    assert len(read(trial / "predictions_img0_and_1_more.csv")) == 2 and len(read(expected)) == 5
    assert list(work.iterdir()) == []


def test_predict_errors_are_one_line(smoke_retrained: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = next((smoke_retrained / "retrain").glob("0*/seed_0/model.pt"))
    assert commands.predict_main([str(model), "--images", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err == f"error: --images {tmp_path / 'nowhere'}: no such file or folder\n"
    assert commands.predict_main([str(tmp_path), "--images", str(tmp_path)]) == 2
    assert "no model.pt there" in capsys.readouterr().err


def test_a_failed_write_leaves_the_previous_csv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "predictions.csv"
    probs = torch.tensor([[0.7, 0.3], [0.2, 0.8]])
    predict.write_csv(out, [Path("a.png"), Path("b.png")], probs, ["cat", "dog"], 1)
    before = out.read_bytes()
    assert [r["class_1"] for r in read(out)] == ["cat", "dog"]

    class DiskFull(Exception):
        pass

    real_writer = csv.writer

    def failing_writer(f):  # the second row fails, as a full disk would halfway through the file
        rows = real_writer(f)

        class Failing:
            def writerow(self, row: list) -> None:
                if row[0] == "b.png":
                    raise DiskFull
                rows.writerow(row)
        return Failing()

    monkeypatch.setattr(csv, "writer", failing_writer)
    with pytest.raises(DiskFull):
        predict.write_csv(out, [Path("a.png"), Path("b.png")], probs.flip(1), ["cat", "dog"], 1)
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["predictions.csv"]
