"""Int8 accuracy beside fp32: `search export --evaluate` records it per retrained seed (int8.json), and the retrain
summary table, the trial's metrics.json and the report show it with the loss from quantisation; none shows none."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from blocks import ArchSpec
from search import commands
from search.config import TrainSpec
from search.review import export, int8_results, report, tflite
from search.review.evaluate import mean_std
from search.review.results import StudyResults, open_results
from search.review.retrain import Plan
from search.review.retrain_outputs import SeedRun, summary_lines, write_trial_summary
from tests.helpers.studies import best, copy_results, small_study

HAS_MCU = all(importlib.util.find_spec(name) for name in (*tflite.PACKAGES, "tflite_micro"))
needs_mcu = pytest.mark.skipif(not HAS_MCU, reason="the mcu extra is not installed (pip install -e '.[mcu]')")
RUNTIME = "LiteRT interpreter (int8 kernels)"


def retrained(res: StudyResults, trial: int, top1: list[float]) -> list[SeedRun]:
    """retrain/<trial>/ as retrain leaves it, one seed folder per test top-1 (no images, no training)."""
    folder, runs = res.folder / "retrain" / f"{trial:05d}", []
    for k, acc in enumerate(top1):
        run = folder / f"seed_{k}"
        run.mkdir(parents=True)
        (run / "model.pt").write_bytes(f"the weights of seed {k}".encode())
        (run / "run.json").write_text(json.dumps({"trial": trial, "seed": k, "dataset": "synthetic"}))
        (run / "metrics.json").write_text(json.dumps({"recipe": "1 epoch sgd", "test": {"top1": acc}}))
        runs.append(SeedRun(run, k, {"n": 100, "top1": acc, "per_class": []}, torch.zeros(100, 10),
                            torch.zeros(100, dtype=torch.long)))
    doc = {"trial": trial, "val_acc": 0.4, "params": 1000, "epochs": 1, "test": {"top1": mean_std(top1)},
           "test_set": "synthetic test split (100 images)", "seeds": [{"seed": k, "folder": f"seed_{k}"}
                                                                   for k in range(len(top1))]}
    (folder / "metrics.json").write_text(json.dumps(doc))
    return runs


def record(run: SeedRun, int8: float, fp32: float, images: int = 1000, **memory: object) -> Path | None:
    """What export --evaluate records for one seed (int8_results.write_record, as export calls it); `memory`: the
    file's bytes and TFLite Micro's arena, which records before them lack."""
    accuracy = {"images": images, "int8_top1": int8, "fp32_top1": fp32, "agreement": 0.98, "runtime": RUNTIME}
    return int8_results.write_record(run.folder / "model.pt", accuracy,
                                     {"tflite": "model_int8.tflite", "tflite_sha256": "0" * 64, **memory})


def plan() -> Plan:
    """Trial 0 of small_study, as retrain plans it."""
    return Plan(0, ArchSpec(stages=1, blocks=(1,), width=8), TrainSpec(epochs=1), 0, {"val_acc": 0.4, "params": 1000})


def table(res: StudyResults, runs: list[SeedRun]) -> list[str]:
    """The retrain summary's lines for trial 0 retrained as `runs`."""
    return summary_lines(res, [plan()], {0: runs}, None).splitlines()


def test_int8_accuracy_shows_beside_fp32_in_the_retrain_summary(tmp_path: Path) -> None:
    res = small_study(tmp_path, [0.4])
    runs = retrained(res, 0, [0.85, 0.84])
    arena = {"head": 51264, "tail": 6960, "total": 58224}  # ResNet-8's (docs/review-and-retrain.md)
    assert record(runs[0], 0.8420, 0.8450, file_bytes=92304, arena=arena) == runs[0].folder / "int8.json"
    assert record(runs[1], 0.8380, 0.8400, images=2000) == runs[1].folder / "int8.json"
    lines = table(res, runs)
    header, row = lines[-2], lines[-1]
    assert re.search(r"test top-5 plain\s+int8 top-1\s+int8 - fp32\s+int8 images\s+arena head\s+arena tail\s+"
                     r"file bytes\s+params", header), header
    # fp32 0.85 and 0.84; int8 0.8420 and 0.8380: mean 0.8400, sample std 0.0028; int8 - fp32 -0.0030 and -0.0020;
    # the images: the fewer of the two records; the arena and the file: seed 0's, the same design in every seed
    assert re.search(r"0\.8450 ± 0\.0071\s+-\s+-\s+0\.8400 ± 0\.0028\s+-0\.0025 ± 0\.0007\s+1,000\s+51,264\s+"
                     r"6,960\s+92,304\s+1,000\s", row), row
    assert any(line.startswith("int8 = the exported int8 .tflite") for line in lines)

    write_trial_summary(res, plan(), runs, True, runs[0].folder.parent)  # what retrain writes at its end
    doc = json.loads((runs[0].folder.parent / "metrics.json").read_text())
    assert doc["test_int8"]["top1"]["values"] == [0.842, 0.838] and doc["test_int8"]["images"] == 1000
    assert doc["test_int8"]["minus_fp32"]["mean"] == pytest.approx(-0.0025) and doc["test_int8"]["runtime"] == RUNTIME
    assert [s["int8_top1"] for s in doc["seeds"]] == [0.842, 0.838]


def test_no_int8_record_shows_no_int8_figure(tmp_path: Path) -> None:
    """No record, or a record of a model.pt since trained again: no int8 column, no zero."""
    res = small_study(tmp_path, [0.4])
    runs = retrained(res, 0, [0.85])
    lines = table(res, runs)
    assert "int8" not in lines[-2] and not any(line.startswith("int8") for line in lines)  # (the paths may say it)
    assert re.search(r"0\.8500\s+-\s+-\s+1,000", lines[-1]), lines[-1]  # top-1, no TTA, no top-5
    record(runs[0], 0.8420, 0.8450)
    (runs[0].folder / "model.pt").write_bytes(b"trained again")
    assert int8_results.read_record(runs[0].folder) is None
    assert "int8" not in table(res, runs)[-2]
    (runs[0].folder / "int8.json").write_text('{"format": "resnet-budget-search.int8/1", "int8_top1": ')  # truncated
    assert int8_results.summary([runs[0].folder]) is None


def test_a_model_outside_a_retrain_folder_is_not_recorded(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"weights")
    accuracy = {"images": 10, "int8_top1": 0.5, "fp32_top1": 0.5, "agreement": 1.0, "runtime": RUNTIME}
    assert int8_results.write_record(tmp_path / "model.pt", accuracy, {}) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


@pytest.mark.parametrize("int8, said", [
    (0.8412, ["int8 top-1 0.8412, fp32 0.8497 on the same 10,000 test images (-0.0085; the same class on 97.1%)",
              "note: int8 loses more than 0.5 points of top-1 to post-training quantisation; quantisation-aware "
              "training is not available in this toolkit yet"]),
    (0.8481, ["int8 top-1 0.8481, fp32 0.8497 on the same 10,000 test images (-0.0016; the same class on 97.1%)"]),
])
def test_export_says_the_int8_accuracy_and_what_quantisation_lost(tmp_path: Path, int8: float,
                                                                 said: list[str]) -> None:
    run = retrained(small_study(tmp_path, [0.4]), 0, [0.85])[0]
    doc = {"accuracy": {"images": 10000, "int8_top1": int8, "fp32_top1": 0.8497, "agreement": 0.9712,
                        "runtime": RUNTIME}, "sha256": "0" * 64, "calibration": {"images": 500}}
    lines: list[str] = []
    export.record(run.folder / "model.pt", run.folder / "model_int8.tflite", doc, lines.append)
    kept = f"; recorded in {run.folder / 'int8.json'} for the retrain summary and the report"
    assert lines == [said[0] + kept, *said[1:]]
    assert int8_results.read_record(run.folder)["int8_top1"] == int8


def test_the_report_shows_int8_beside_fp32_and_nothing_without_it(tmp_path: Path) -> None:
    res = small_study(tmp_path, [0.4, 0.5])
    runs = retrained(res, 1, [0.85, 0.84])
    retrained(res, 0, [0.80])  # no int8 record
    before = report.write_report(res)[0].read_text()
    assert "int8" not in before[before.index("<h2>Retrain results</h2>"):]
    record(runs[0], 0.8420, 0.8450, file_bytes=92304, arena={"head": 51264, "tail": 6960, "total": 58224})
    record(runs[1], 0.8380, 0.8400)
    page = report.write_report(res)[0].read_text()
    section = page[page.index("<h2>Retrain results</h2>"):]
    header, *rows = re.findall(r"<tr>(.*?)</tr>", section)
    cells = [re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", r) for r in (header, *rows)]
    assert cells[0][5:8] == ["int8 top-1", "int8 − fp32 (same images)", "int8 arena head + tail, file (bytes)"]
    by_model = {c[0]: c for c in cells[1:]}
    assert by_model["trial 1"][2] == "0.8450 ± 0.0071 (2 seeds)"  # fp32 test top-1, as before
    assert by_model["trial 1"][5:8] == ["0.8400 ± 0.0028 (2 seeds) (1,000 images)", "-0.0025 ± 0.0007",
                                        "51,264 + 6,960, 92,304"]
    assert by_model["trial 0"][5:8] == ["-", "-", "-"]
    assert "Quantisation-aware training is not available yet" in section


@needs_mcu
def test_export_records_int8_that_a_rerun_retrain_and_the_report_show(smoke_retrained: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    """The real command on a private copy of a retrained trial: int8.json, then the summary and the report."""
    n = best(smoke_retrained, 1)[0]
    copy = copy_results(smoke_retrained, tmp_path / "smoke")
    shutil.copytree(smoke_retrained / "retrain" / f"{n:05d}", copy / "retrain" / f"{n:05d}",
                    ignore=shutil.ignore_patterns("int8.json", "model_int8.*", ".retrain.lock"))
    assert commands.export_main([str(copy), "--trial", str(n), "--calibration-images", "20", "--evaluate", "50"]) == 0
    seed = copy / "retrain" / f"{n:05d}" / "seed_0"
    rec = json.loads((seed / "int8.json").read_text())
    assert rec["images"] == 50 and rec["model_sha256"] == int8_results.sha256(seed / "model.pt")
    assert Path(rec["tflite"]) == seed / "model_int8.tflite" and 0 <= rec["int8_top1"] <= 1
    out = capsys.readouterr().out
    assert f"int8 top-1 {rec['int8_top1']:.4f}, fp32 {rec['fp32_top1']:.4f} on the same 50 test images" in out
    assert commands.retrain_main([str(copy), "--trial", str(n), "--epochs", "1", "--device", "cpu"]) == 0
    row = capsys.readouterr().out.splitlines()[-4]  # the table's last row, then the 3 lines of next steps
    assert row.split()[0] == str(n) and f"{rec['int8_top1']:.4f}" in row and row.split()[-6] == "50", row
    assert row.split()[-5:-2] == [f"{rec['arena'][k]:,}" for k in ("head", "tail")] + [f"{rec['file_bytes']:,}"]
    page = report.write_report(open_results(copy))[0].read_text()
    assert f"{rec['int8_top1']:.4f} (50 images)" in page
