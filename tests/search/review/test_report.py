"""The HTML report: self-contained, every chart drawn in a real headless Chromium without script errors."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import optuna
import pytest

from search import commands
from search.review import report
from search.review.results import open_results
from tests.helpers.errors import one_error
from tests.helpers.studies import small_study

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
CHARTS = ["history", "params", "flops", "peak", "speed", "importances", "parallel", "curves", "budget",
          "retrain-curves", "retrain-classes", "retrain-confusion"]


def render(page: Path, tmp: Path) -> str:
    """The DOM of `page` after headless Chromium ran its scripts for up to 10 s of virtual time."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--enable-unsafe-swiftshader",  # software WebGL for the parallel-coordinates chart
             f"--user-data-dir={tmp / 'chromium-profile'}", "--virtual-time-budget=10000", "--dump-dom"]
    out = subprocess.run([CHROMIUM, *flags, page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def drawn(dom: str) -> dict[str, int]:
    """Chart div id -> number of plotly <svg class="main-svg"> elements rendered inside it."""
    parts = re.split(r'(?=<div id="chart-)', dom)[1:]
    return {re.match(r'<div id="chart-([^"]+)"', p).group(1): p.count('class="main-svg"') for p in parts}


def script_errors(dom: str) -> str:
    """What the page's error hook wrote into #script-errors."""
    found = re.search(r'<pre id="script-errors"[^>]*>(.*?)</pre>', dom, re.S)
    assert found, "the error box is missing from the page"
    return html.unescape(found.group(1)).strip()


def test_report_is_self_contained_and_complete(smoke_retrained: Path) -> None:
    assert commands.report_main([str(smoke_retrained)]) == 0
    page = (smoke_retrained / "report.html").read_text()
    assert not re.search(r"<script[^>]*\ssrc=", page) and "<link" not in page  # nothing fetched: opens offline
    assert page.count("window.PlotlyConfig") == 1  # plotly.js embedded once, for all charts
    for chart in CHARTS:
        assert f'id="chart-{chart}"' in page, chart
    for title in ("Optimisation history", "Accuracy against size", "Parameter importances", "Architectures",
                  "Learning curves", "Budget utilisation", "Retrain results", "Pareto front", "budget 60,000"):
        assert title in page, title
    assert "ensemble [" in page and "rejected" in page and "fvcore convention" in page


def test_report_and_retrain_files_are_artifacts_of_the_study(smoke_retrained: Path) -> None:
    """Read back through Optuna's artifact API (what optuna-dashboard lists and opens)."""
    from optuna.artifacts import FileSystemArtifactStore, download_artifact, get_all_artifact_meta

    assert commands.report_main([str(smoke_retrained)]) == 0
    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{smoke_retrained / 'study.db'}")
    store = FileSystemArtifactStore(str(smoke_retrained / "artifacts"))
    pages = [m for m in get_all_artifact_meta(study) if m.filename == "report.html"]
    assert pages and all(m.mimetype == "text/html" for m in pages)
    got = []
    for i, m in enumerate(pages):  # one per report written; the one just written is among them
        download_artifact(artifact_store=store, artifact_id=m.artifact_id, file_path=str(smoke_retrained / f"got{i}"))
        got.append((smoke_retrained / f"got{i}").read_bytes())
        (smoke_retrained / f"got{i}").unlink()
    assert (smoke_retrained / "report.html").read_bytes() in got
    names = [m.filename for m in get_all_artifact_meta(study)]
    retrained = sorted(int(p.name) for p in (smoke_retrained / "retrain").glob("0*"))
    assert len(retrained) == 2
    for n in retrained:
        assert {f"trial{n}-metrics.json", f"trial{n}-seed_0-model.pt", f"trial{n}-seed_0-metrics.json"} <= set(names)
        assert get_all_artifact_meta(study.trials[n], storage=study._storage)[0].filename == f"{n:05d}.json"


def test_report_refuses_a_pdf_path_in_one_line(smoke_study: Path, capsys: pytest.CaptureFixture) -> None:
    assert commands.report_main([str(smoke_study), "--output", str(smoke_study / "x.pdf")]) == 2
    assert capsys.readouterr().err.startswith("error: --output ") and not (smoke_study / "x.pdf").exists()


@needs_chromium
def test_report_draws_every_chart_in_headless_chromium(smoke_retrained: Path, tmp_path: Path) -> None:
    path, charts = report.write_report(open_results(smoke_retrained), tmp_path / "report.html")
    assert charts == [f"chart-{c}" for c in CHARTS]
    dom = render(path, tmp_path)
    assert script_errors(dom) == ""
    counts = drawn(dom)
    assert set(counts) == set(CHARTS)
    assert all(n >= 1 for n in counts.values()), counts


@needs_chromium
def test_browser_check_sees_script_errors(tmp_path: Path) -> None:
    page = report.Page()  # no chart: the check itself is under test, and a page without plotly.js loads fast
    page.raw('<script>throw new Error("boom from the test");</script>')
    page.raw('<script>Promise.reject("lost promise");</script>')
    path = tmp_path / "broken.html"
    path.write_text(page.render("broken"))
    errors = script_errors(render(path, tmp_path))
    assert "boom from the test" in errors and "unhandled rejection: lost promise" in errors


@pytest.mark.parametrize("values, note", [
    ([], "No complete trial yet."),
    ([0.4], "Parameter importances need at least 2 complete trials; this study has 1."),
    ([0.4, 0.5], "need parameters that vary between complete trials"),
])
def test_report_explains_what_it_cannot_draw(tmp_path: Path, values: list[float], note: str) -> None:
    path, charts = report.write_report(small_study(tmp_path, values))
    page = path.read_text()
    assert note in page and "chart-importances" not in charts
    assert "No retrain results yet" in page


def test_report_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert commands.report_main([str(tmp_path / "missing")]) == 2
    one_error(capsys, None, start="results folder")


def test_report_splits_multiply_adds_by_kind(tmp_path: Path) -> None:
    """Each shown trial's FLOPs by kind: one 8-wide basic block at 32 px is all dense 3x3 convs, BN and the head."""
    page = report.write_report(small_study(tmp_path, [0.4]))[0].read_text()
    section = page[page.index("<h2>Multiply-adds by kind of operation</h2>"):]
    assert "Microcontroller latency is not measured here" in section and "docs/sizing.md" in section
    header, row = re.findall(r"<tr>(.*?)</tr>", section)[:2]
    assert re.findall(r"<th[^>]*>(.*?)</th>", header) == [
        "trial", "design", "dense conv (k &gt; 1)", "depthwise 3x3", "depthwise, other kernels",
        "depthwise, channel multiplier &gt; 1", "pointwise conv (1x1)", "linear",
        "BatchNorm (folded on device), global pool", "total"]
    # dense: 3*8*9*32^2 (stem) + 2 * 8*8*9*32^2 = 1,400,832; linear 8*10; BN 3 * 2*8*32^2 + pool 8*32^2 = 57,344
    assert re.findall(r"<td[^>]*>(.*?)</td>", row) == ["0", "searched", "1.40M", "0", "0", "0", "0", "80", "57.34k",
                                                      "1.46M"]
