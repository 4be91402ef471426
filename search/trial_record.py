"""A trial's JSON record, results/<study>/trials/<number>.json: its shape, and every write of it.

The objective starts one as a trial starts training and rewrites it whole (atomically) after every epoch and
as the trial ends; the report, retrain and a retry read it back. Reports and resumes of older studies read
these files, so the keys, their order and the layout (indent 1) stay as they are.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import optuna
import torch

from blocks.holds import Check, Maybe
from blocks.io import read_json

from .config import SearchConfig
from .contained import inside
from .dashboard import upload
from .errors import ResultsWriteError
from .files import atomic_write_text
from .space import Resolved
from .trainer import EpochResult
from .trials import RESUMED_FROM, RETRY_OF

FOLDER = "trials"  # results/<study>/trials/


def records_folder(results: Path) -> Path:
    """results/<study>/trials, once checked to lead nowhere outside the results folder."""
    return inside(results, results / FOLDER)


def record_path(results: Path, number: int) -> Path:
    """results/<study>/trials/<number>.json (five digits, so the files list in trial order)."""
    return results / FOLDER / f"{number:05d}.json"


def record_shape(number: int) -> dict[str, Any]:
    """What trials/<number>.json must hold when read back: trial `number`'s document (not a copy of another's)."""
    return {"number": Check(int, lambda n: n == number, f"{number}, this trial's number"), "state": Maybe(str),
            "arch": Maybe(dict), "params": Maybe(int)}


def read_record(path: Path, number: int) -> dict[str, Any]:
    """Trial `number`'s record read from `path`, checked to be its own; UnreadableFile or OSError else."""
    return read_json(path, record_shape(number))


def worker_id() -> str:
    """host:pid of this worker process."""
    return f"{os.uname().nodename}:{os.getpid()}"


class TrialRecord:
    """One trial's JSON document, kept in memory and written whole at each change."""

    def __init__(self, results: Path, number: int, doc: dict[str, Any]):
        self.results, self.number, self.doc = results, number, doc
        self.path = record_path(results, number)

    @classmethod
    def start(cls, results: Path, trial: optuna.Trial, cfg: SearchConfig, design: Resolved, seed: int,
              device: str) -> TrialRecord:
        """The record of a trial about to train (state "running", no epoch yet); written after its first epoch."""
        spec, cx = design.spec, design.cx
        doc = {"number": trial.number, "study": cfg.study_name, "state": "running",
               "arch": spec.to_dict(), "train": design.train.to_dict(), "seed": seed,
               "params": cx.params, "flops": cx.flops, "peak_activations": cx.peak_activations,
               "receptive_field": cx.receptive_field,
               "budget_params": cfg.budget.params, "device": device,
               "threads": torch.get_num_threads(), "host": os.uname().nodename, "worker": worker_id(),
               "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "epochs": []}
        if RETRY_OF in trial.user_attrs:
            doc[RETRY_OF] = trial.user_attrs[RETRY_OF]
        return cls(results, trial.number, doc)

    @classmethod
    def read(cls, results: Path, number: int) -> TrialRecord:
        """Trial `number`'s record as written before (by this machine); UnreadableFile or OSError if it is not."""
        return cls(results, number, read_record(record_path(results, number), number))

    def resumed_from(self, epoch: int) -> None:
        """Note the first epoch trained after loading the checkpoint (written with the next epoch)."""
        self.doc[RESUMED_FROM] = epoch

    def add_epoch(self, r: EpochResult) -> list[float]:
        """Add an epoch (not written yet: `write`); returns every epoch's time so far (s, to the ms)."""
        epochs = self.doc["epochs"]
        epochs.append(vars(r).copy())
        self.doc["epoch_times_s"] = [round(e["time_s"], 3) for e in epochs]
        return self.doc["epoch_times_s"]

    def val_acc_curve(self) -> list[float]:
        """Validation accuracy after each epoch so far (to 5 places)."""
        return [round(e["val_acc"], 5) for e in self.doc["epochs"]]

    def ended(self, trial: optuna.Trial, state: str, **values: Any) -> None:
        """Write the final record (`state` "complete" or "pruned", with `values`) and attach it to the trial."""
        self.doc.update(state=state, **values)
        self.write()
        upload(trial, self.path, self.results)  # optuna-dashboard opens it from the trial's page

    def stopped(self, state: str) -> None:
        """Write the record of a trial that stops before its end ("interrupted" resumes, "failed" not), if it can."""
        self.doc["state"] = state
        self.write(quiet=True)  # the trial already stops for another reason: a failed write adds nothing

    def retried_as(self, number: int) -> None:
        """Point the record of a stopped run at trial `number`, its retry (a run still "running" died: failed)."""
        if self.doc.get("state") == "running":
            self.doc["state"] = "failed"  # its worker died
        self.doc["retried_as"] = number
        self.write()

    def write(self, quiet: bool = False) -> None:
        """Write trials/<number>.json atomically; `quiet` ignores a failed write, else a ResultsWriteError."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps(self.doc, indent=1))
        except OSError as e:
            if not quiet:
                raise ResultsWriteError(f"results folder {self.results}: cannot write {self.path.name}: "
                                        f"{e.strerror or e}") from None
