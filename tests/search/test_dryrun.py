"""The dry run summarises a space without a study, downloads nothing, writes nothing, and bounds what its
drawing and its timing probe cost."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from blocks import ArchSpec, complexity
from search import dryrun, run, runner
from search.config import TrainSpec
from search.data import decode_cache, sources
from search.errors import UserError
from tests.helpers.datasets import make_cifar10, make_imagefolder
from tests.helpers.machine import FakeMachine, free_threads  # noqa: F401 (a fixture)
from tests.helpers.spaces import PRUNING_SPACE, ROOT, write_space
from tests.helpers.studies import cli

SMALL = ArchSpec(stages=2, blocks=(1, 1), width=8, input_size=12)


class Clock:
    """A clock that moves by `step` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.t, self.step, self.reads = 0.0, step, 0

    def __call__(self) -> float:
        self.t += self.step
        self.reads += 1
        return self.t


def fixed_probe(spec: ArchSpec, train: TrainSpec, device: torch.device, limit_s: float) -> dryrun.Timing:
    """2 ms per training image at the training batch."""
    return dryrun.Timing(0.002, train.batch_size)


def dry(space: Path | str, *extra: str, probe: dryrun.TrainingTimer = fixed_probe, clock=None,
        machine: FakeMachine | None = None) -> list[str]:
    """The dry run's lines for a space (few draws), on a quiet 2-core machine unless `machine` says otherwise."""
    args = run.parse_args([str(space), "--dry-run", "--dry-run-samples", "20", *extra])
    lines: list[str] = []
    runner.dry_run(run.config_from_args(args), run.options(args), args.dry_run_samples, lines.append, probe=probe,
                   meter=(machine or FakeMachine(cores=2)).meter(), **({"clock": clock} if clock else {}))
    return lines


def files_under(*folders: Path) -> list[Path]:
    """Every file under the folders (that exist)."""
    return [p for f in folders if f.exists() for p in f.rglob("*") if p.is_file()]


def test_dry_run_summarises_the_space_without_a_study(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The dry run's counts come from the sampled designs, its duration from the (injected) probe."""
    from search import dryrun

    path = write_space(tmp_path, base={**PRUNING_SPACE, "train": {**PRUNING_SPACE["train"], "lr": 0.1}})
    args = run.parse_args([str(path), "--dry-run", "--dry-run-samples", "200", "--results-dir",
                           str(tmp_path / "results")])
    cfg = run.config_from_args(args)
    probed = []

    def probe(spec: ArchSpec, train, device, limit_s) -> float:
        probed.append(complexity(spec).flops)
        return dryrun.Timing(0.002 if len(probed) % 2 else 0.001, train.batch_size)  # seconds per training image

    lines = []
    runner.dry_run(cfg, run.options(args), args.dry_run_samples, lines.append, probe=probe,
                   meter=FakeMachine(cores=2).meter())
    assert not (tmp_path / "results").exists()  # no study, no results folder
    designs, rejected = dryrun.sample_designs(cfg, 200, 10, 12)
    assert lines[0].startswith(f"dry run of {path}: 200 designs drawn at random")
    assert lines[1] == f"rejected before building: {sum(rejected.values()) / 200:.1%} ({sum(rejected.values())})"
    params = sorted(d.params for d in designs)
    flops = sorted(d.flops for d in designs)
    assert probed == [flops[int((i + 0.5) * len(flops) / 5)] for i in range(5)]  # one from each fifth
    assert "probe: 5 designs spread over the drawn FLOPs" in lines[-2] and "500 .. 1,000 img/s" in lines[-2]
    assert all(p <= 20_000 for p in params) and f"of the {len(designs)} buildable designs" in lines[2 + len(rejected)]
    # 5 trials x 3 epochs x (360 training + 40 validation / 3) images x the mean 1.6 ms (2, 1, 2, 1, 2) = 9.0 s
    assert "5 trials x 3 epochs x (360 training + 40 validation images) = about 9 s on this device" in lines[-1]
    assert lines[-2].endswith("; 625 img/s in the mean time per image")
    assert any(line.startswith("depth (blocks)  1 .. 2") for line in lines)


def test_dry_run_counts_one_trial_and_one_epoch_in_the_singular(tmp_path: Path) -> None:
    from search import dryrun

    path = write_space(tmp_path, base={**PRUNING_SPACE, "train": {**PRUNING_SPACE["train"], "epochs": 1}})
    args = run.parse_args([str(path), "--dry-run", "--n-trials", "1", "--results-dir", str(tmp_path / "results")])
    lines: list[str] = []
    runner.dry_run(run.config_from_args(args), run.options(args), args.dry_run_samples, lines.append,
                   meter=FakeMachine(cores=2).meter(), probe=lambda spec, train, device, limit_s: dryrun.Timing(0.001, train.batch_size))
    assert "expected duration: 1 trial x 1 epoch x (" in lines[-1], lines[-1]


def test_dry_run_cli_and_fill_share_wording(tmp_path: Path) -> None:
    space = {**PRUNING_SPACE, "space": {**PRUNING_SPACE["space"], "fill": {"float": [0.05, 1.0]}}}
    path = write_space(tmp_path, base=space)
    proc = cli(str(path), "--dry-run", "--dry-run-samples", "100", "--results-dir", "results", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "even width 8 is over the sampled fill share" in proc.stdout  # not the hard budget
    assert "expected duration: 5 trials x 3 epochs" in proc.stdout and "img/s on cpu" in proc.stdout
    assert not (tmp_path / "results").exists()
    bad = cli(str(path), "--dry-run", "--dry-run-samples", "0", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --dry-run-samples 0: expected 1 or more"


@pytest.mark.parametrize("space, counts", [("cifar10_5m.yaml", "45,000 training + 5,000 validation"),
                                           ("cifar10_mcu.yaml", "45,000 training + 5,000 validation"),
                                           ("tiny_26m.yaml", "90,000 training + 10,000 validation")])
def test_a_builtin_dataset_not_on_disk_is_not_downloaded(space: str, counts: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def no_download(*args, **kwargs):  # noqa: ANN002, ANN003
        raise AssertionError("the dry run tried to download")

    monkeypatch.setattr(sources.CIFAR10Files, "download", no_download)
    monkeypatch.setattr(sources, "download_and_extract_archive", no_download)
    lines = dry(ROOT / "spaces" / space, "--data-root", str(tmp_path / "data"), "--set", "search.n_trials=1")
    name = space.split("_")[0].replace("tiny", "tiny_imagenet")
    assert lines[1].startswith(f"note: {name} is not in '{tmp_path / 'data'}' (a search downloads it; a dry run "
                               f"downloads nothing): its official shape is used")
    assert lines[1].endswith("skipped: the files' presence and readability")
    assert counts in lines[-1]
    assert not (tmp_path / "data").exists()
    with pytest.raises(UserError, match=f"^{name} not found in '{tmp_path / 'data'}'"):  # as the search says
        dry(ROOT / "spaces" / space, "--data-root", str(tmp_path / "data"), "--set", "data.download=false")


def test_a_builtin_dataset_on_disk_is_counted(tmp_path: Path) -> None:
    root = make_cifar10(tmp_path / "data")  # 5 batches of 20 training images
    lines = dry(ROOT / "spaces" / "cifar10_5m.yaml", "--data-root", str(root), "--set", "search.n_trials=1")
    assert not any(line.startswith("note:") for line in lines) and "(90 training + 10 validation" in lines[-1]


def test_the_dry_run_writes_no_decoded_image_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root = make_imagefolder(tmp_path / "images", classes=2, per_class=6, size=(12, 12))
    space = {**PRUNING_SPACE, "data": {"dataset": "imagefolder", "root": str(root), "num_workers": 0,
                                       "val_fraction": 0.25}}
    before = files_under(root)
    lines = dry(write_space(tmp_path, base=space))
    assert "(9 training + 3 validation images)" in lines[-1]  # counted without decoding
    assert files_under(root) == before and files_under(decode_cache.default_dir()) == []


def test_drawing_stops_at_its_time_limit_with_a_note(tmp_path: Path) -> None:
    clock = Clock(step=dryrun.DRAW_S / 5)  # each draw reads the clock once: 5 draws fit in the limit
    lines = dry(write_space(tmp_path, base=PRUNING_SPACE), clock=clock)
    assert lines[0].startswith(f"dry run of {tmp_path / 'space.yaml'}: 5 designs drawn at random")
    assert lines[1] == (f"note: drawing stopped at its {dryrun.DRAW_S:.0f} s limit after 5 of 20 designs "
                        f"(--dry-run-samples); the figures below are from those")


@pytest.mark.usefixtures("free_threads")  # the line names OMP_NUM_THREADS when the environment sets it
def test_a_huge_training_batch_is_timed_in_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dryrun, "PROBE_BYTES", 40 * dryrun.backward_bytes_per_image(SMALL))  # 40 images' worth
    timing = dryrun.time_training(SMALL, TrainSpec(batch_size=20_000_000), torch.device("cpu"),
                                  clock=Clock(step=1e-4))
    assert timing.batch == 40 and timing.s_per_img > 0
    lines = dry(write_space(tmp_path, base=PRUNING_SPACE), "--set", "train.batch_size=20000000",
                probe=lambda s, t, d, limit_s: dryrun.Timing(0.002, 40))
    assert "on cpu (timed at batch 40 of 20,000,000, scaled per image);" in lines[-2]


def test_a_slow_step_is_timed_once_at_two_images() -> None:
    clock = Clock(step=100.0)  # every step "takes" 100 s: far over the probe's limit
    timing = dryrun.time_training(SMALL, TrainSpec(batch_size=64), torch.device("cpu"), clock=clock)
    assert timing == dryrun.Timing(50.0, 2) and clock.reads == 4  # the warm-up and one timed step


@pytest.mark.parametrize("failure, said", [
    ("estimate", "not timed: one image needs about"),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"), "cannot be trained in the memory"),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 61440000000 bytes"),
     "cannot be trained in the memory"),
    (MemoryError(), "cannot be trained in the memory")])
def test_a_design_the_probe_cannot_run_is_one_line(failure: object, said: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def probe(spec: ArchSpec, train: TrainSpec, device: torch.device, limit_s: float) -> dryrun.Timing:
        if failure == "estimate":
            monkeypatch.setattr(dryrun, "PROBE_BYTES", 1)
            return dryrun.time_training(spec, train, device, limit_s)
        raise failure

    lines = dry(write_space(tmp_path, base=PRUNING_SPACE), probe=probe)
    assert lines[-1].startswith("probe: a design (") and said in lines[-1]
    assert lines[-1].endswith("; no duration estimate") and not any("expected duration" in ln for ln in lines)


def _priced(space: Path, workers: str, machine: FakeMachine) -> tuple[list[str], list[tuple[int, float]]]:
    """The dry run's lines, and (torch threads, seconds allowed) of each probe, on `machine`."""
    probed: list[tuple[int, float]] = []

    def probe(spec: ArchSpec, train: TrainSpec, device: torch.device, limit_s: float) -> dryrun.Timing:
        probed.append((torch.get_num_threads(), limit_s))
        return fixed_probe(spec, train, device, limit_s)

    return dry(space, "--workers", workers, probe=probe, machine=machine), probed


@pytest.mark.parametrize("workers, average, omp, threads, said", [
    ("1", 0.0, None, 2, "x (360 training + 40 validation images) = about 16 s on this device without pruning (one"),
    ("1", 1.0, None, 1, ("= about 16 s on this device without pruning (one trial about 2 s; pruned trials stop "
                         "early); machine busy: load average 1.0 on 2 cores, 0.0 of it this dry run's: 1 core free; "
                         "estimated on 1 thread: the search takes less time if cores free up, more if the load "
                         "grows")),
    ("2", 0.0, None, 1, "images) / 2 at once = about 8 s with 2 workers without pruning"),
    ("2", 1.0, None, 1, "images) = about 16 s with 2 workers without pruning"),  # one free core for both
    ("2", 0.0, "2", 2, "images) = about 16 s with 2 workers without pruning"),  # 2 x 2 fixed threads on 2 cores
    ("64", 0.0, None, 1, "images) / 2 at once = about 8 s with 64 workers without pruning")])
def test_the_estimate_counts_baselines_workers_and_free_cores(workers: str, average: float, omp: str | None,
                                                              threads: int, said: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              free_threads: None) -> None:  # noqa: F811
    """Baselines train too; --workers N trains N trials at once, each on its share of the cores that other processes
    leave free (unless OMP_NUM_THREADS fixes the threads), and the probe times that share; workers beyond the
    free cores do not divide the time."""
    if omp:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    torch.set_num_threads(2)
    space = write_space(tmp_path, {"baselines": [{"name": "hand", "stages": 1, "blocks": [1]},
                                                 {"name": "deep", "stages": 2, "blocks": [1, 1]}]},
                        base={**PRUNING_SPACE, "train": {**PRUNING_SPACE["train"], "lr": 0.1}})
    lines, probed = _priced(space, workers, FakeMachine(cores=2, average=average))
    # (5 trials + 2 baselines) x 3 epochs x (360 + 40 / 3) images x 2 ms = 15.7 s, over 2 at once 7.8 s
    assert lines[-1].startswith("expected duration: 5 trials + 2 baselines x 3 epochs") and said in lines[-1]
    assert ("machine busy" in lines[-1]) == (average > 0)
    assert {t for t, _ in probed} == {threads}
    assert torch.get_num_threads() == 2  # restored after the probe
    at_once = 2 if "/ 2 at once" in said else 1
    crowded = [line for line in lines if line.startswith(f"note: {workers} workers on")]
    assert bool(crowded) == (at_once < int(workers)), lines
    if workers == "64":
        assert crowded == [("note: 64 workers on 2 free cores at 1 thread each train as fast as 2 would; workers "
                            "beyond the free cores do not shorten the search")]


class StepClock:
    """A clock read before and after each step: a step takes 0.4 s on two threads, 0.8 s on one, and 1.2 s on two
    when another process holds a core (two threads stall on it: the 4-5x collapse of issue 27, in part)."""

    def __init__(self, taken: bool) -> None:
        self.t, self.taken = 0.0, taken

    def __call__(self) -> float:
        threads = torch.get_num_threads()
        self.t += 0.4 * 2 / threads * (3 if self.taken and threads > 1 else 1)
        return self.t


def test_a_busy_machine_gives_its_probe_the_time_fewer_threads_need(tmp_path: Path, free_threads: None) -> None:  # noqa: F811
    """Load does not shrink the batch the probe times: on the one thread a busy 2-core machine leaves, the probe
    may take twice as long, and times the batch it would time on two threads of a quiet one."""
    space = write_space(tmp_path, base=PRUNING_SPACE)  # training batch 32
    batches = {}
    for average in (0.0, 1.0):
        clock = StepClock(taken=average > 0.5)
        lines = dry(space, probe=lambda s, tr, d, limit_s, c=clock: dryrun.time_training(s, tr, d, limit_s, clock=c),
                    machine=FakeMachine(cores=2, average=average))
        batches[average] = lines[-2]
    # A step of 2 images takes 0.4 s on two threads (0.2 s an image): a third of 10 s fits 16 images; on one
    # thread 0.8 s, and a third of the 20 s it is allowed again fits 16 (two stalled threads would fit 5). The
    # batch is even on purpose: torch 2.14's oneDNN corrupts memory in the weight gradient of a 1x1 stride-2
    # convolution (channels_last, under 16 input channels) on an odd batch at two threads (cf. oneDNN #6035).
    assert "(timed at batch 16 of 32, scaled per image" in batches[0.0]
    assert "(timed at batch 16 of 32, scaled per image, 1 thread: the free cores)" in batches[1.0]
