"""The Optuna objective: sample, check the budget and rules, build, train, report, prune."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import optuna
import torch

from blocks import ArchSpec, Complexity, build
from blocks.io import UnreadableFile
from blocks.resnet import arena_bound

from .baselines import resolve_trial
from .checkpoint import CheckpointWriteError, set_aside
from .cli import STORAGE_ERRORS
from .config import SearchConfig, TrainSpec
from .contained import inside
from .dashboard import note_rejected
from .describe import arch_brief
from .device import resolve_device
from .errors import ResultsWriteError, UserError
from .probe import LatencyProbe, cost_attrs, latency_ms
from .progress import PLAIN_EVERY_S, Progress
from .rules import module_violation
from .space import Rejected, Resolved
from .storage import stored_trial
from .threads import epoch_threads
from .trainer import EpochResult, fit, resumable_epochs, seed_everything
from .trial_record import TrialRecord, record_path, records_folder, worker_id
from .trials import (
    BASELINE,
    INTERRUPTED,
    REJECTED,
    RESUMED_FROM,
    RETRY_OF,
    WORKER,
    count_finished,
    count_running,
    is_baseline,
    ranked,
)

if TYPE_CHECKING:
    from .data.datasets import Loaders


class Objective:
    """Callable handed to study.optimize; one instance per worker process."""

    def __init__(self, cfg: SearchConfig, results: Path, device: str = "auto",
                 log: Callable[[str], None] = print, probe: LatencyProbe | None = None,
                 stop: Callable[[], bool] | None = None, progress_every_s: float = PLAIN_EVERY_S, workers: int = 1):
        from .data.datasets import dataset_info

        self.cfg, self.results, self.log = cfg, results, log
        # where trials write, checked before the first trial: a link out of the results folder is refused
        records_folder(results)
        self.checkpoints = inside(results, results / "checkpoints")
        self.probe = probe or latency_ms  # measures inference ms (injectable: tests never time anything)
        self.stop = stop  # asked between batches (search.study.stop.Stop in a worker)
        self.progress_every_s = progress_every_s  # seconds between plain progress lines (not on a terminal)
        self.device = resolve_device(device)
        # torch's CPU threads each epoch: this worker's share (of `workers` on this machine) of the free cores
        self.threads = epoch_threads(self.device, workers, log)
        self.info = dataset_info(cfg.data)
        self.rejections_in_a_row = 0
        self.warned_one_step = False  # the one-step-per-epoch note is printed once per process
        self.gave_up = False  # max_rejections samples in a row broke the budget or rules

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        trial.set_user_attr(WORKER, worker_id())  # who ran it, for the dashboard and the records
        return self._run(trial)  # a Ctrl-C is recorded on the trial by the worker loop (workers.run_trials)

    def _run(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        """Sample, reject what cannot be built, else train."""
        cfg = self.cfg
        verdict = resolve_trial(trial, cfg, self.info.num_classes, self.info.image_size)
        arch, train = verdict.as_dicts()  # resolved: every key, defaults included; else the keys as drawn
        trial.set_user_attr("arch", arch)
        trial.set_user_attr("train", train)
        trial.set_user_attr("arch_short", arch_brief(arch))  # short, readable
        design = verdict if isinstance(verdict, Resolved) else verdict.design
        if design is not None:
            spec, cx = design.spec, design.cx
            trial.set_user_attr("params", cx.params)
            trial.set_user_attr("flops", cx.flops)
            trial.set_user_attr("peak_activations", cx.peak_activations)  # elements, batch 1 (bytes at int8)
            if cfg.budget.arena is not None:  # bytes: TFLite Micro's arena head at most (ARENA_SLACK x tflite_peak)
                trial.set_user_attr("arena_bound", arena_bound(spec))
            trial.set_user_attr("receptive_field", cx.receptive_field)
            trial.set_user_attr("budget_utilisation", round(cx.params / cfg.budget.params, 4))
        if isinstance(verdict, Rejected):
            return self._reject(trial, verdict.reason)
        return self._train(trial, verdict)

    def _reject(self, trial: optuna.Trial, reason: str) -> NoReturn:
        """Record why this sample can never be trained, and end the trial without building anything."""
        self.rejections_in_a_row += 1
        trial.set_user_attr(REJECTED, reason)
        note_rejected(trial, reason)
        self.log(f"[trial {trial.number}] rejected before building: {reason}")
        if self.rejections_in_a_row >= self.cfg.search.max_rejections:
            self.gave_up = True  # the worker loop starts no new trial
            self.log(f"stopping: {self.rejections_in_a_row} samples in a row broke the budget or rules; "
                     f"the space barely fits, shrink it or raise the budget")
        raise optuna.TrialPruned(f"rejected: {reason}")

    def _train(self, trial: optuna.Trial, design: Resolved) -> float | tuple[float, ...]:
        """Build, train with per-epoch reports and pruning, and return the objective values."""
        spec, train, cx = design.spec, design.train, design.cx
        first = self._link_retry(trial)
        seed = self.cfg.search.seed + first  # a retry keeps the seed of the trial it continues
        model = self._build(trial, spec, cx, seed)
        reason = self._over_latency(trial, model, train)
        if reason is not None:
            return self._reject(trial, reason)
        self.rejections_in_a_row = 0  # within every budget: only now does the run of rejections end
        trial.set_user_attr("seed", seed)
        loaders = self._loaders(train, seed)
        record = TrialRecord.start(self.results, trial, self.cfg, design, seed, _device_name(self.device))
        ckpt = self.checkpoints / f"trial_{first}.pt"
        done = self._resume_point(trial, first, ckpt, model, train, record)
        history = self._fit(trial, model, loaders, train, seed, record, ckpt, done)
        return self._finish(trial, model, train, cx, record, history, ckpt)

    def _build(self, trial: optuna.Trial, spec: ArchSpec, cx: Complexity, seed: int) -> torch.nn.Module:
        """The trial's model, seeded, checked against the analytic rule check and parameter count."""
        seed_everything(seed)
        model = build(spec)
        bad = module_violation(model, self.cfg)
        if bad is not None:  # the analytic check and the module disagree: a bug, never train it
            raise RuntimeError(f"rule check mismatch for trial {trial.number}: {bad}")
        built = sum(p.numel() for p in model.parameters())
        if built != cx.params:
            raise RuntimeError(f"analytic params {cx.params} != built {built} for {spec.to_dict()}")
        trial.set_user_attr("device", _device_name(self.device))
        return model

    def _over_latency(self, trial: optuna.Trial, model: torch.nn.Module, train: TrainSpec) -> str | None:
        """Why the model breaks the latency budget (measured before any training), or None."""
        budget = self.cfg.budget
        if budget.latency_ms is None:
            return None
        ms = self.probe(model, self.info.image_size, budget.latency_batch, self.device, train.amp)
        trial.set_user_attr("probe_latency_ms", round(ms, 3))
        if ms > budget.latency_ms:
            return f"latency {ms:.2f} ms at batch {budget.latency_batch} is over the budget of {budget.latency_ms} ms"
        return None

    def _loaders(self, train: TrainSpec, seed: int) -> Loaders:
        """The trial's training and validation loaders (its augmentation policy, batch and seed)."""
        from .data.augment import DEFAULT_POLICY, policy_steps
        from .data.datasets import image_count, make_loaders

        cfg = self.cfg
        steps = policy_steps(cfg.augment, train.augment_policy or DEFAULT_POLICY)
        loaders = make_loaders(cfg.data, steps, train.batch_size, seed=seed, device=self.device.type,
                               where=f"{cfg.path}: augment")
        if len(loaders.train) == 1 and not self.warned_one_step:
            self.warned_one_step = True
            self.log(f"note: {image_count(loaders.train)} training images at batch {train.batch_size} make one "
                     f"optimiser step per epoch, so the learning rate recorded per epoch (set after that step) is "
                     f"never one a step used; use a smaller batch or more images")
        return loaders

    def _resume_point(self, trial: optuna.Trial, first: int, ckpt: Path, model: torch.nn.Module, train: TrainSpec,
                      record: TrialRecord) -> int:
        """Epochs restored from the checkpoint of the trial this one retries (0 for a fresh trial)."""
        done = 0
        if first == trial.number:
            ckpt.unlink(missing_ok=True)  # a fresh trial never resumes (a left-over of a deleted study)
        else:  # an unreadable checkpoint is set aside with one line, and the trial trains from the start
            done = resumable_epochs(ckpt, model, train, lambda why: self.log(
                f"[trial {trial.number}] {why}; trial {first} restarts from epoch 1"))
        if done:
            record.resumed_from(done + 1)
            trial.set_user_attr(RESUMED_FROM, done + 1)
            self.log(f"[trial {trial.number}] resuming trial {first} from epoch {done + 1} ({ckpt})")
        return done

    def _fit(self, trial: optuna.Trial, model: torch.nn.Module, loaders: Loaders, train: TrainSpec, seed: int,
             record: TrialRecord, ckpt: Path, done: int) -> list[EpochResult]:
        """Train the trial; a failure is recorded, and says whether the trial resumes (its checkpoint kept) or not."""
        on_epoch = EpochHook(self, trial, train, record, done)
        try:
            return fit(model, loaders.train, loaders.val, train, self.device, on_epoch=on_epoch,
                       checkpoint=ckpt, native_size=self.info.image_size, seed=seed, stop=self.stop,
                       on_batch=on_epoch.progress, threads=self.threads)
        except KeyboardInterrupt:  # keep the checkpoint: a rerun resumes the trial from its last epoch
            record.stopped("interrupted")
            raise  # recorded on the trial by the worker loop, which knows the signal's name
        except (ResultsWriteError, CheckpointWriteError) as e:
            # The results folder is full or read-only: not the trial's fault, so it resumes like Ctrl-C.
            message = str(e) if isinstance(e, UserError) else f"results folder {self.results}: {e}"
            mark_interrupted(trial, message)  # a rerun resumes it
            record.stopped("interrupted")
            raise ResultsWriteError(message) from None
        except STORAGE_ERRORS:  # the database failed under the trial: not its fault either
            mark_interrupted(trial, "study storage failed")
            record.stopped("interrupted")
            raise
        except optuna.exceptions.UpdateFinishedTrialError:  # failed by another worker: its retry owns the checkpoint
            raise
        except BaseException:  # the trial's own failure (bad data, a bug): it is not resumed
            ckpt.unlink(missing_ok=True)
            record.stopped("failed")
            raise
        finally:
            on_epoch.progress.close()

    def _finish(self, trial: optuna.Trial, model: torch.nn.Module, train: TrainSpec, cx: Complexity,
                record: TrialRecord, history: list[EpochResult], ckpt: Path) -> float | tuple[float, ...]:
        """Measure the trained model's latency, write the final record, and return the objective values."""
        ckpt.unlink(missing_ok=True)
        final = history[-1].val_acc
        if not math.isfinite(final):
            raise FloatingPointError(f"validation accuracy is {final}")
        costs = cost_attrs(model, self.info.image_size, self.device, train.amp, self.probe)
        for key, value in costs.items():
            trial.set_user_attr(key, value)
        best = max(h.val_acc for h in history)
        record.ended(trial, "complete", val_acc=final, best_val_acc=best, **costs)
        trial.set_user_attr("best_val_acc", best)
        values = {"val_acc": final, "params": float(cx.params), "flops": float(cx.flops)}
        out = tuple(values[o] for o in self.cfg.search.objectives)
        return out if len(out) > 1 else out[0]

    def _link_retry(self, trial: optuna.Trial) -> int:
        """The first trial of this one's retry chain (itself when fresh); links the two in attrs and JSON."""
        from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry

        frozen = stored_trial(trial)
        first, chain = Retry.retried_trial_number(frozen), Retry.retry_history(frozen)
        if first is None:
            return trial.number
        trial.set_user_attr(RETRY_OF, first)
        self.log(f"[trial {trial.number}] retries trial {chain[-1]} (same params and seed as trial {first})")
        prev = record_path(self.results, chain[-1])
        if prev.is_file():  # the stopped run's record (when it ran on this machine) points at its retry
            try:
                record = TrialRecord.read(self.results, chain[-1])
            except (UnreadableFile, OSError) as e:  # not the retry's fault: it runs, the record is kept for a look
                self.log(f"[trial {trial.number}] cannot read trial {chain[-1]}'s record {prev}: "
                         f"{getattr(e, 'strerror', None) or e}; kept as {set_aside(prev).name}")
                return first
            record.retried_as(trial.number)
        return first


class EpochHook:
    """fit's on_epoch for one trial: record and log each epoch, report it to the pruner, prune."""

    def __init__(self, objective: Objective, trial: optuna.Trial, train: TrainSpec, record: TrialRecord, done: int):
        cfg = objective.cfg
        self.objective, self.trial, self.train, self.record = objective, trial, train, record
        self.done = done  # epochs restored from a checkpoint (fit replays them)
        self.multi = len(cfg.search.objectives) > 1  # Optuna prunes single-objective studies only
        # The log line's place and best-so-far, read once per trial (not a whole-study read per epoch).
        trials = trial.study.get_trials(deepcopy=False)
        self.best = next(iter(ranked(trials)), None)
        # k/n: k counts the finished trials and those running now, this one included (with several workers
        # two trials that start together are the 1st and the 2nd, not both the 1st)
        started = count_finished(trials) + count_running(trials)
        self.place = (f"baseline {trial.user_attrs[BASELINE]}" if is_baseline(trial)
                      else f"{started}/{cfg.search.n_trials}")
        self.progress = Progress(f"trial {trial.number}", train.epochs,
                                 later_runs=max(0, cfg.search.n_trials - started),
                                 log=objective.log, every_s=objective.progress_every_s)

    def __call__(self, r: EpochResult) -> None:
        trial, record, obj = self.trial, self.record, self.objective
        trial.set_user_attr("epoch_times_s", record.add_epoch(r))
        trial.set_user_attr("val_acc_curve", record.val_acc_curve())
        trial.set_user_attr("train_images_per_s", round(r.images_per_s, 1))  # of the latest epoch
        record.write()
        self.progress.close()
        best = self.best
        obj.log(f"[trial {trial.number} ({self.place})] epoch {r.epoch}/{self.train.epochs} "
                f"loss {r.train_loss:.4f} val_acc {r.val_acc:.4f} ({r.image_size}px, {r.time_s:.1f}s)"
                + (f" best so far {best.values[0]:.4f} (trial {best.number})" if best is not None else "")
                + (" [restored from checkpoint]" if r.epoch <= self.done else ""))
        if not self.multi and report_epoch(trial, r, obj.info.image_size, self.train.epochs):
            record.ended(trial, "pruned")
            obj.log(f"[trial {trial.number}] pruned after epoch {r.epoch}")
            raise optuna.TrialPruned(f"pruned at epoch {r.epoch}")


def report_epoch(trial: optuna.Trial, r: EpochResult, native_size: int, epochs: int) -> bool:
    """Report an epoch to the pruner and say whether to prune; only epochs trained at the native size count.

    Progressive-resizing trials train and validate at 16/32 px early on, where accuracy is lower
    for reasons unrelated to the design; the median pruner compares trials at the same step, so
    those epochs would be held against fixed-size trials' native-size ones. Reporting only
    native-size epochs makes every comparison one at the native size (rule: compare only at
    epochs where both trials run at native size). Baselines report but are never pruned.
    """
    if r.image_size != native_size:
        return False
    trial.report(r.val_acc, r.epoch)
    return bool(r.epoch < epochs and not is_baseline(trial) and trial.should_prune())  # a finished run never is


def mark_interrupted(trial: optuna.Trial, reason: str) -> None:
    """Record why a trial stopped before its end (Optuna then marks it FAIL); a rerun resumes it."""
    with contextlib.suppress(Exception):  # the storage went away too: the heartbeat grace period fails and retries it
        trial.set_user_attr(INTERRUPTED, reason)


def _device_name(device: torch.device) -> str:
    """A readable device name (the GPU model on CUDA)."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return "cpu"
