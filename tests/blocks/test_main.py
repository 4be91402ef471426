"""`python -m blocks`: sizes a fixed design from JSON, inline YAML or a YAML file; bad input is one line.

A few cases run the real command in a subprocess; the rest call `main(argv)` in-process, because
each subprocess pays for importing torch (seconds on a busy 2-core machine).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from blocks.__main__ import main
from tests.helpers.processes import child_env
from tests.helpers.spaces import ROOT
from tests.helpers.studies import assert_one_line_error

RESNET18 = '{"blocks": [2, 2, 2, 2], "width": 64, "stem": "imagenet", "input_size": 224, "num_classes": 1000}'


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m blocks ARGS` from the repository root and capture its output."""
    env = child_env(ROOT)
    return subprocess.run([sys.executable, "-m", "blocks", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """Call the CLI's main(argv) in-process; same result shape as run_cli."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["python", "-m", "blocks", *args], code, out, err)


def test_resnet18_report_has_exact_numbers_and_stage_table() -> None:
    """torchvision resnet18's exact params, fvcore FLOPs, receptive field and stage shapes."""
    proc = run_cli(RESNET18)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "11689512 (11.69M)" in out
    assert "1819065856 (1.82 GFLOPs" in out and "one multiply-add = one FLOP, batch 1" in out
    assert "receptive field:    435 px" in out
    assert "widening 1x1 convs: 3" in out  # the three 1x1 projection shortcuts
    # the stem's 64x112x112 conv output and its 64x56x56 max-pool output are live together
    assert "peak activations:   1003520 elements (980 KiB at int8, 1 byte per element" in out
    # as int8 TFLite, the max-pool's input is padded first (PADV2 64x114x114) beside the conv's 64x112x112 output
    assert f"as int8 TFLite:     {64 * 114 * 114 + 64 * 112 * 112} elements (1.559 MiB;" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert rows == [
        ["1", "2", "64", "1", "602112", "64", "x", "56", "x", "56"],
        ["2", "2", "128", "2", "401408", "128", "x", "28", "x", "28"],
        ["3", "2", "256", "2", "200704", "256", "x", "14", "x", "14"],
        ["4", "2", "512", "2", "100352", "512", "x", "7", "x", "7"],
    ]


def test_json_output_from_inline_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints the Complexity; an inline YAML flow mapping is accepted like JSON."""
    proc = run_main(capsys, "{blocks: [2, 2, 2, 2], width: 64}", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "params": 11173962, "flops": 556659712, "receptive_field": 109, "widening_1x1": 3,
        "stage_shapes": [[64, 32, 32], [128, 16, 16], [256, 8, 8], [512, 4, 4]],
        "peak_activations": 196608, "stage_peaks": [196608, 131072, 65536, 32768], "peak_activation_bytes": 196608,
        "tflite_peak_bytes": 196608,  # stage 2's PAD 64x34x34 beside the kept 64x32x32 input: 139,520, under the peak
        # 3x3 convs: the stem's 3 x 64 x 9 x 32^2 and 15 more; 1x1: three projections of 2,097,152 each; 512 x 10
        "macs_by_kind": {"dense": 549126144, "depthwise_3x3": 0, "depthwise_other": 0, "depthwise_multiplier": 0,
                         "pointwise": 6291456, "linear": 5120, "norm_pool": 1236992},
    }


def test_flops_by_kind_of_the_mcu_winner(capsys: pytest.CaptureFixture[str]) -> None:
    """The MLPerf Tiny winner (trial 26): most of its multiply-adds are 1x1 and 5x5 depthwise, none 3x3 depthwise."""
    proc = run_main(capsys, "{stages: 3, blocks: [3, 1, 3], widths: [16, 56, 88], kernel: 5, separable: true}")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "FLOPs:              10498416 (10.50 MFLOPs" in out
    kinds = out[out.index("FLOPs by kind of operation"):].splitlines()
    assert [line.split()[-2:] for line in kinds[1:8]] == [
        ["442,368", "4.2%"], ["0", "0.0%"], ["3,712,000", "35.4%"], ["0", "0.0%"], ["5,943,296", "56.6%"],
        ["880", "0.0%"], ["399,872", "3.8%"]]
    assert kinds[3].startswith("  depthwise, other kernels") and kinds[5].startswith("  pointwise conv (1x1)")
    assert kinds[8] == "latency on a microcontroller is not measured by this toolkit"


@pytest.mark.parametrize("nested", [False, True], ids=["top-level", "under-arch"])
def test_yaml_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], nested: bool) -> None:
    """A YAML file with the keys at top level or under `arch:` (other sections ignored)."""
    keys = "blocks: [3, 3, 3]\nwidth: 16\nshortcut: zero_pad\n"
    text = keys
    if nested:
        text = "arch:\n" + "".join(f"  {line}\n" for line in keys.splitlines()) + "train:\n  epochs: 5\n"
    path = tmp_path / "arch.yaml"
    path.write_text(text)
    proc = run_main(capsys, str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    cx = json.loads(proc.stdout)
    assert (cx["params"], cx["flops"], cx["receptive_field"]) == (269722, 40931968, 81)  # ResNet-20, option A


def test_invalid_spec_in_subprocess_is_one_line_exit_2() -> None:
    """The real command: an invalid key value is one `error:` line naming it, exit status 2."""
    assert_one_line_error(run_cli('{"blocks": [2, 2, 2, 2], "kernel": 4}'), "'kernel'", "4", "odd")


def test_other_errors_are_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Unknown key, unparsable text, not a mapping, a missing file and a search space file."""
    assert_one_line_error(run_main(capsys, '{"blocks": [2, 2, 2, 2], "depth": 18}'), "unknown", "'depth'")
    assert_one_line_error(run_main(capsys, '{"stages": 3, "blocks": [2, 2]}'), "'blocks'", "3 entries")
    assert_one_line_error(run_main(capsys, "{blocks: [2, 2"), "not valid JSON or YAML")
    assert_one_line_error(run_main(capsys, "[2, 2, 2, 2]"), "expected a mapping", "list")
    assert_one_line_error(run_main(capsys, str(tmp_path / "missing.yaml")), "missing.yaml", "no such file")
    space = tmp_path / "space.yaml"
    space.write_text("budget:\n  params: 5000000\nspace:\n  width: {low: 16, high: 64}\n")
    assert_one_line_error(run_main(capsys, str(space)), "space.yaml", "search space", "only fixed values")
    bad = tmp_path / "bad.yaml"
    bad.write_text("arch:\n  blocks: [2, 2]\n  head: mlp\n")
    assert_one_line_error(run_main(capsys, str(bad)), "bad.yaml: arch", "'head'", "mlp")


def test_depth_and_width_are_bounded(capsys: pytest.CaptureFixture[str]) -> None:
    """Specs that overflowed complexity() or never finished building are one line at once."""
    assert_one_line_error(run_main(capsys, '{"stages": 2000}'), "'stages'", "[1, 16]")
    assert_one_line_error(run_main(capsys, '{"blocks": [100000000]}'), "'blocks'", "at most 2048")
    assert_one_line_error(run_main(capsys, '{"blocks": [1, 1], "width": 100000}'), "'width'", "65536")
    assert_one_line_error(run_main(capsys, '{"blocks": [1, 1], "widths": [8, 70000]}'), "widest layer")


def test_one_line_and_short_count() -> None:
    """The one text helper both CLIs print errors and counts with."""
    from blocks.text import one_line, short_count

    assert one_line(ValueError("bad value\nSELECT ... (SQL appended by SQLAlchemy)")) == "bad value"
    wrapped = ("Caught UserError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
               '  File "x.py", line 1, in f\nsearch.errors.UserError: cannot read image \'a.jpg\'\n')
    assert one_line(RuntimeError(wrapped)) == "cannot read image 'a.jpg'"
    assert one_line(RuntimeError("Traceback (most recent call last):\nValueError: x")) == "ValueError: x"
    assert one_line(KeyError()) == "KeyError" and one_line("  \n") == "unknown error"
    assert [short_count(n) for n in (None, 999, 1450, 11_689_512, 2.5e12)] == ["-", "999", "1.45k", "11.69M", "2.50T"]
    assert short_count(1.82e9, " FLOPs") == "1.82 GFLOPs"
