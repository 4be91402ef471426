"""`resnet-search run SPACE.yaml --dry-run`: what the space holds and how long its search would take, training nothing.

Designs are drawn by Optuna's random sampler from an in-memory study (nothing is written, no study is
created or touched), resolved and checked exactly as the objective does, and summarised. A short timed
probe of PROBE_DESIGNS designs, one from each fifth of the drawn designs' FLOPs, gives the expected duration
on this device at their mean time per image, baselines included. On the CPU the probe trains on the threads
a trial would start with here (search.threads: a share of the cores that other processes leave free, the
share of one of `--workers N`), and a busy machine is said in the estimate. Both are bounded: drawing stops
after DRAW_S seconds, and the probe times a smaller batch than the training one when that one would need
over PROBE_BYTES of activations or a step would take over a share of PROBE_S (more on the fewer threads a
busy machine leaves, so that load does not shrink the batch timed).
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import optuna
import torch

from blocks import ArchSpec, build, complexity
from blocks.resnet import ARENA_SLACK, arena_bound
from blocks.text import short_bytes, short_count

from . import trainer
from .config import SearchConfig, TrainSpec
from .describe import arch_brief, plural
from .device import cpu_cores, sync, to_device
from .distributions import from_trial
from .space import Resolved, resolve
from .threads import PROCESS, Load, LoadMeter, fixed_by, threads_for

EVAL_COST = 1 / 3  # a validation image costs about a third of a training image (forward only, no backward)
DRAW_S = 30.0  # seconds drawing may take; the designs drawn by then are summarised
PROBE_S = 10.0  # seconds the timing probe of one design may take after its first one-image steps
PROBE_DESIGNS = 5  # designs probed, one from each fifth of the drawn designs' FLOPs
PROBE_STEPS = 2  # timed steps at the probe's batch (after one warm-up step)
PROBE_BYTES = 2 * 1024**3  # activations the probe may allocate; a larger training batch is timed in part
SAVED_PER_OUTPUT = 8  # float32 tensors of a block's output size kept for backward (conv, BN, ReLU, sum; rough)
# Steps per epoch the probe's schedule is sized for: more than it takes, so that no schedule (one-cycle's
# end is an error) runs out; the learning rate's value does not change a step's time.
SCHEDULE_STEPS = 1000
OWN = "this dry run's"  # whose part of the load average this process's is
Clock = Callable[[], float]


class Timing(NamedTuple):
    """What the probe measured."""

    s_per_img: float  # seconds per training image
    batch: int  # images per timed step: the training batch, or fewer to bound memory and time


class ProbeRefused(Exception):
    """The probe will not time this design (it would need more memory than PROBE_BYTES allows)."""


# Seconds per training image of a design: (spec, train, device, seconds its timing may take) -> Timing
TrainingTimer = Callable[[ArchSpec, TrainSpec, torch.device, float], Timing]


@dataclass(frozen=True)
class Plan:
    """How the probe runs here, and how many trials the search trains at once."""

    threads: int | None  # the probe's torch threads (None: as this process has them)
    parallel: int  # trials training at once
    limit_s: float  # seconds the probe of one design may take
    threads_said: str = ""  # the probe line's words on its threads, where they are not the quiet machine's
    busy: str = ""  # the estimate line's clause on a machine whose cores are not all free
    crowded: str = ""  # the line saying that workers beyond the cores or GPUs do not shorten the search


@dataclass
class Design:
    """One buildable sampled design."""

    spec: ArchSpec
    train: TrainSpec
    params: int
    flops: int
    peak: int = 0  # peak activation memory, elements at batch 1


def sample_designs(cfg: SearchConfig, n: int, num_classes: int, input_size: int, *, clock: Clock = time.monotonic,
                   limit_s: float = DRAW_S) -> tuple[list[Design], Counter]:
    """Up to n random draws from the space, as many as `limit_s` allows: the buildable ones and rejection counts."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=cfg.search.seed),
                                direction="maximize")  # in memory: nothing is stored
    designs: list[Design] = []
    rejected: Counter[str] = Counter()
    deadline = clock() + limit_s
    for _ in range(n):
        if clock() > deadline:
            break
        trial = study.ask()
        verdict = resolve(cfg, from_trial(trial), num_classes, input_size)
        if isinstance(verdict, Resolved):
            cx = verdict.cx
            designs.append(Design(verdict.spec, verdict.train, cx.params, cx.flops, cx.peak_activations))
        else:
            rejected[verdict.reason.split(" (")[0]] += 1  # the kind of reason, without its per-sample figures
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return designs, rejected


def backward_bytes_per_image(spec: ArchSpec) -> int:
    """Rough bytes of activations one training image keeps for backward (float32), from the stage shapes: not
    the deployed peak (Complexity.peak_bytes, budget.activation_bytes), which counts inference at batch 1."""
    shapes = complexity(spec).stage_shapes
    outputs = sum(depth * c * h * w for depth, (c, h, w) in zip(spec.blocks, shapes, strict=True))
    return 4 * (SAVED_PER_OUTPUT * outputs + spec.in_channels * spec.input_size ** 2)


def time_training(spec: ArchSpec, train: TrainSpec, device: torch.device, limit_s: float = PROBE_S, *,
                  clock: Clock = time.perf_counter) -> Timing:
    """Seconds per training image of `spec` on random images, at its batch size or at a bounded part of it
    (`limit_s`: seconds the timed steps may take together, each step a share).

    Each timed step is the trainer's own (trainer.train_step on a model set up by trainer.setup_training):
    channels_last, torch.compile and bf16 autocast exactly as trials train.
    """
    fit = PROBE_BYTES // backward_bytes_per_image(spec)
    if fit < min(2, train.batch_size):
        raise ProbeRefused(f"one image needs about {backward_bytes_per_image(spec) / 1e9:.1f} GB of activations; the "
                           f"probe's bound is {PROBE_BYTES / 1e9:.1f} GB for two")
    most = min(train.batch_size, fit)
    state = trainer.setup_training(build(spec), train, device, SCHEDULE_STEPS)
    state.model.train()
    step = _stepper(state, spec, clock)
    small = min(2, most)  # two images: BatchNorm on a 1x1 map cannot train on one
    step(small)  # warm-up: first calls allocate and pick kernels
    per_img = step(small) / small
    batch = max(small, min(most, int(limit_s / (PROBE_STEPS + 1) / max(per_img, 1e-9))))  # each step in a share
    if batch == small:
        return Timing(per_img, small)
    step(batch)  # warm-up at the new shape
    deadline = clock() + limit_s
    times: list[float] = []
    while len(times) < PROBE_STEPS and (not times or clock() < deadline):
        times.append(step(batch))
    return Timing(statistics.fmean(times) / batch, batch)


def _stepper(state: trainer.TrainState, spec: ArchSpec, clock: Clock) -> Callable[[int], float]:
    """A function that trains one trainer step on `b` random images and returns its seconds."""
    def step(b: int) -> float:
        x = torch.randn(b, spec.in_channels, spec.input_size, spec.input_size)
        y = torch.randint(0, spec.num_classes, (b,))
        x, y = to_device(x, y, state.device)  # the layout fit's batches have
        sync(state.device)
        t0 = clock()
        trainer.train_step(state, x, y)  # looked up on the module: the function fit calls per batch
        sync(state.device)
        return clock() - t0
    return step


def summarise(cfg: SearchConfig, designs: list[Design], rejected: Counter, n_train: int, n_val: int,
              device: torch.device, probe: TrainingTimer = time_training, notes: Sequence[str] = (),
              asked: int | None = None, workers: int = 1, meter: LoadMeter | None = None) -> list[str]:
    """The dry run's report lines; `notes` (what was skipped or bounded) follow the first; `asked`: draws wanted;
    `workers`: the worker processes the search will run on this machine (--workers); `meter`: reads the
    machine's load before the probe (this process's search.threads.PROCESS when None)."""
    n = len(designs) + sum(rejected.values())
    lines = [f"dry run of {cfg.path}: {n:,} designs drawn at random (seed {cfg.search.seed}); nothing trained, "
             f"no study created or touched"]
    if asked is not None and n < asked:
        notes = [*notes, f"drawing stopped at its {DRAW_S:.0f} s limit after {n:,} of {asked:,} designs "
                         f"(--dry-run-samples); the figures below are from those"]
    lines += [f"note: {note}" for note in notes]
    if cfg.budget.latency_ms is not None:  # a measurement of the trial's own device, not a count: not drawn here
        lines.append(f"latency budget: {cfg.budget.latency_ms:g} ms per forward pass at batch "
                     f"{cfg.budget.latency_batch}, measured on each trial's model before it trains (not in this dry run)")
    lines.append(f"rejected before building: {sum(rejected.values()) / n:.1%} ({sum(rejected.values()):,})")
    lines += [f"  {count:>6,}  {reason}" for reason, count in rejected.most_common()]
    if not designs:
        lines.append("no design of this space can be trained: widen the space or raise the budget")
        return lines
    runs = cfg.search.n_trials + len(cfg.baselines)  # baselines train once, outside n_trials
    load = (meter or PROCESS).read() if device.type == "cpu" else None  # read before the probe adds to it
    plan = plan_here(device, workers, runs, load)
    return lines + _space_lines(cfg, designs) + _duration_lines(cfg, designs, n_train, n_val, device, probe, plan,
                                                               workers)


def _space_lines(cfg: SearchConfig, designs: list[Design]) -> list[str]:
    """Budget utilisation (a histogram) and the ranges of depth, width, params and FLOPs."""
    budget = cfg.budget.params
    util = sorted(d.params / budget for d in designs)
    lines = [f"budget utilisation (params / {budget:,}) of the {len(designs):,} buildable designs: "
             + "  ".join(f"{name} {q:.1%}" for name, q in _quantiles(util))]
    for lo in range(0, 100, 10):
        share = sum(lo <= 100 * u < lo + 10 or (lo == 90 and u >= 1.0) for u in util) / len(util)
        if share:
            lines.append(f"  {lo:>3}-{lo + 10}%  {'#' * max(1, round(40 * share)):<40}  {share:.1%}")
    lines.append(_range("depth (blocks)", [sum(d.spec.blocks) for d in designs], str))
    lines.append(_range("width C", [d.spec.width for d in designs], str))
    lines.append(_range("params", [d.params for d in designs], short_count))
    lines.append(_range("FLOPs", [d.flops for d in designs], short_count) + "  (fvcore: one multiply-add = one FLOP)")
    peak, per = cfg.budget.peak_activations, cfg.budget.activation_bytes
    lines.append(_range("peak memory", [d.peak for d in designs], short_count) + "  (activation elements live at "
                 "once, batch 1" + (f"; budget {peak:,} = {short_bytes(peak * per)} at {plural(per, 'byte')} each)"
                                    if peak is not None else ")"))
    if cfg.budget.arena is not None:  # drawn designs are buildable, so every bound here is within the budget
        lines.append(_range("arena bound", [arena_bound(d.spec) for d in designs], short_count)
                     + f"  (bytes of TFLite Micro's arena head at most as int8, {ARENA_SLACK} x the int8 TFLite peak; "
                       f"budget {cfg.budget.arena:,} = {short_bytes(cfg.budget.arena)})")
    return lines


def plan_here(device: torch.device, workers: int, runs: int, load: Load | None) -> Plan:
    """The probe's threads and time, and the trials at once, for `workers` processes running `runs` trials here.

    On the CPU each worker takes its share of the cores other processes leave free (search.threads, as
    trials do), and workers beyond the free cores share them; on CUDA one trial runs per GPU.
    """
    if device.type == "cuda":
        gpus = torch.cuda.device_count()
        crowded = (f"{workers} workers on {plural(gpus, 'GPU')}: at most {gpus} trials train at once; workers "
                   f"beyond the GPUs do not shorten the search") if workers > gpus else ""
        return Plan(None, max(1, min(workers, gpus, runs)), PROBE_S, crowded=crowded)
    load = load or Load(0.0, 0.0, cpu_cores())  # no load average on this OS: taken as quiet
    quiet = threads_for(Load(0.0, 0.0, load.cores, load.most), workers)
    fixed = fixed_by()
    threads = torch.get_num_threads() if fixed else threads_for(load, workers)
    free = max(1, load.free)
    at_once = max(1, min(workers, free // threads))
    crowded = (f"{workers} workers on {plural(free, 'free core')} at {plural(threads, 'thread')} each train as "
               f"fast as {at_once} would; workers beyond the free cores do not shorten the search"
               if at_once < workers else "")
    whose = fixed or ("one worker's share of the free cores" if workers > 1 else "the free cores")
    said = f", {plural(threads, 'thread')}: {whose}" if workers > 1 or threads != quiet else ""
    busy = ""
    if load.free < load.cores:
        on = f"the {plural(threads, 'thread')} {fixed} sets" if fixed else plural(threads, "thread")
        busy = (f"; machine busy: {load.says(OWN)}; estimated on {on}: the search takes less time if cores free up, "
                f"more if the load grows")
    limit_s = PROBE_S if fixed else PROBE_S * quiet / threads  # fewer threads: the batch a quiet machine times
    return Plan(None if fixed else threads, min(at_once, runs), limit_s, said, busy, crowded)


def _duration_lines(cfg: SearchConfig, designs: list[Design], n_train: int, n_val: int, device: torch.device,
                    probe: TrainingTimer, plan: Plan, workers: int = 1) -> list[str]:
    """The probe of PROBE_DESIGNS designs spread over the drawn designs' FLOPs, and the expected duration at
    their mean time per image (a trial's time follows its compute; one design's speed can be 10x another's),
    with `plan.parallel` trials at once.
    """
    by_flops = sorted(designs, key=lambda d: d.flops)
    k = min(PROBE_DESIGNS, len(by_flops))
    picked = [by_flops[int((i + 0.5) * len(by_flops) / k)] for i in range(k)]  # distinct: k <= len(by_flops)
    rates = _time_designs(picked, probe, device, plan)
    if isinstance(rates, str):
        return [rates]
    s_per_img = statistics.fmean(r.s_per_img for r in rates)
    at = _batch_words({(r.batch, d.train.batch_size) for r, d in zip(rates, picked, strict=True)}) + plan.threads_said
    speeds = sorted(1 / r.s_per_img for r in rates)
    span = f"{speeds[0]:,.0f} img/s" if len(speeds) == 1 else f"{speeds[0]:,.0f} .. {speeds[-1]:,.0f} img/s"
    flops = f"{short_count(picked[0].flops)}" + (f" .. {short_count(picked[-1].flops)}" if len(picked) > 1 else "")
    epochs = statistics.median(d.train.epochs for d in designs)
    trial_s = epochs * (n_train + EVAL_COST * n_val) * s_per_img
    runs = cfg.search.n_trials + len(cfg.baselines)  # baselines train once, outside n_trials
    total = runs * trial_s / plan.parallel
    n_base = len(cfg.baselines)
    trials = plural(cfg.search.n_trials, "trial") + (f" + {plural(n_base, 'baseline')}" if n_base else "")
    how = f"with {workers} workers" if workers > 1 else "on this device"
    once = f" / {plan.parallel} at once" if plan.parallel > 1 else ""
    return [f"probe: {plural(len(picked), 'design')} spread over the drawn FLOPs ({flops}) train at "
            f"{span} on {device} ({at}); {1 / s_per_img:,.0f} img/s in the mean time per image",
            *([f"note: {plan.crowded}"] if plan.crowded else []),
            f"expected duration: {trials} x {epochs:g} epoch{'s' * (epochs != 1)} x ({n_train:,} training + {n_val:,} validation "
            f"images){once} = about {_hours(total)} {how} without pruning (one trial about {_hours(trial_s)}; "
            f"pruned trials stop early){plan.busy}"]


def _time_designs(picked: list[Design], probe: TrainingTimer, device: torch.device,
                  plan: Plan) -> list[Timing] | str:
    """Each design's Timing on the plan's threads, or the one line saying why there is no estimate."""
    rates = []
    for d in picked:
        what = f"a design ({arch_brief(d.spec.to_dict())}, {short_count(d.params)} params)"
        try:
            with _torch_threads(plan.threads):
                rates.append(probe(d.spec, d.train, device, plan.limit_s))
        except ProbeRefused as e:
            return f"probe: {what} not timed: {e}; no duration estimate"
        except (MemoryError, RuntimeError) as e:  # torch.OutOfMemoryError and the CPU allocator's: RuntimeErrors
            if not isinstance(e, MemoryError) and "memory" not in str(e):
                raise
            return f"probe: {what} cannot be trained in the memory of {device}; no duration estimate"
    return rates


def _batch_words(pairs: set[tuple[int, int]]) -> str:
    """How the probed batches relate to the training ones, from the distinct (timed, training) batch pairs."""
    if len(pairs) > 1:
        return ("some timed at a smaller batch than their training one, scaled per image"
                if any(t != b for t, b in pairs) else "at their training batches")
    ((timed, batch),) = pairs
    return f"batch {batch:,}" if timed == batch else f"timed at batch {timed:,} of {batch:,}, scaled per image"


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `n` for the block (unchanged when None)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _quantiles(values: list[float]) -> list[tuple[str, float]]:
    """min, p10, median, p90, max of sorted values."""
    at = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
    return [("min", values[0]), ("p10", at(0.1)), ("median", at(0.5)), ("p90", at(0.9)), ("max", values[-1])]


def _range(name: str, values: list, fmt: Callable) -> str:
    """`name  lo .. hi (median m)`."""
    values = sorted(values)
    return f"{name:<15} {fmt(values[0])} .. {fmt(values[-1])} (median {fmt(values[len(values) // 2])})"


def _hours(seconds: float) -> str:
    """2 h 05 min / 7 min / 40 s."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"
