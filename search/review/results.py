"""Open a finished search's results folder: its config, its study and what each trial recorded."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage

from blocks import ArchSpec, build
from blocks.holds import problem
from blocks.io import UnreadableFile

from ..config import SearchConfig, load_config
from ..errors import UserError
from ..names import check_path
from ..storage import default_storage, make_storage, readable_trials, redact_url
from ..study.identity import DATA_ATTR, config_difference, data_difference, data_identity
from ..trial_record import read_record, record_path
from ..trials import ATTRS, REJECTED, ranked

S = optuna.trial.TrialState
MAX_NAME, MAX_LISTED = 60, 10  # characters of a study name, and names, that a message quotes


@dataclass
class StudyResults:
    """results/<study>/ with its resolved config and its Optuna study, loaded."""

    folder: Path
    cfg: SearchConfig
    study: optuna.Study
    storage_url: str

    @property
    def name(self) -> str:
        """The study's name."""
        return self.study.study_name

    @cached_property
    def trials(self) -> list[optuna.trial.FrozenTrial]:
        """Every trial of the study, by number; a user attribute that is not what the search writes is a UserError."""
        trials = sorted(readable_trials(self.study, self.storage_url), key=lambda t: t.number)
        for t in trials:
            why = problem(t.user_attrs, ATTRS)
            if why:
                raise UserError(f"study {self.name!r} in {redact_url(self.storage_url)}: trial {t.number}'s user "
                                f"attribute {why}; restore the database from a copy")
        return trials

    def complete(self) -> list[optuna.trial.FrozenTrial]:
        """Complete trials, best first (highest val_acc, then fewest parameters)."""
        return ranked(self.trials)

    def trial(self, number: int) -> optuna.trial.FrozenTrial:
        """Trial `number`, or a UserError naming the trials there are."""
        found = [t for t in self.trials if t.number == number]
        if not found:
            span = f"trials 0-{self.trials[-1].number}" if self.trials else "no trials"
            raise UserError(f"trial {number} does not exist in study {self.name!r} ({span})")
        return found[0]

    def choose(self, numbers: list[int] | None, top: int | None) -> list[int]:
        """The trials to retrain: the given complete ones, or the `top` best (default: the best one)."""
        done = self.complete()
        if numbers:
            for n in numbers:
                t = self.trial(n)
                if t.state != S.COMPLETE:
                    why = t.user_attrs.get(REJECTED)
                    state = f"rejected ({why})" if why else t.state.name.lower()
                    ok = ", ".join(str(c.number) for c in done[:10]) or "none"
                    raise UserError(f"trial {n} of study {self.name!r} is {state}; only complete trials can be "
                                    f"retrained (best complete: {ok})")
            return list(dict.fromkeys(numbers))
        top = 1 if top is None else top
        if top < 1:
            raise UserError(f"--top {top}: expected at least 1")
        if not done:
            odd = [t for t in self.trials if t.state == S.COMPLETE and t.values]  # complete, none finite
            why = (f" (trial {odd[0].number}'s val_acc is {odd[0].values[0]}, which no search writes: restore study.db "
                   f"from a copy, or name a trial with --trial)" if odd else "")
            raise UserError(f"study {self.name!r} in {self.folder} has no complete trial to retrain{why}")
        if top > len(done):
            raise UserError(f"--top {top}: study {self.name!r} has only {len(done)} complete trials")
        return [t.number for t in done[:top]]

    def trial_json(self, number: int) -> tuple[Path, dict[str, Any] | None]:
        """trials/<number>.json and its content (None when it was never written)."""
        path = record_path(self.folder, number)
        if not path.is_file():
            return path, None
        try:
            return path, read_record(path, number)
        except (UnreadableFile, OSError) as e:
            raise UserError(f"trial {number}: '{path}' is not its record: {getattr(e, 'strerror', None) or e}; "
                            f"fix or delete it") from None

    def verified_spec(self, number: int) -> tuple[ArchSpec, dict[str, Any]]:
        """The trial's ArchSpec, rebuilt and checked against the parameter count recorded at search time."""
        t = self.trial(number)
        sources = [("study.db", t.user_attrs.get("arch"), t.user_attrs.get("params"))]
        path, doc = self.trial_json(number)
        if doc is not None:
            sources.append((str(path), doc.get("arch"), doc.get("params")))
        specs = []
        for where, arch, recorded in sources:
            if arch is None or recorded is None:
                raise UserError(f"trial {number}: {where} records no architecture and parameter count")
            try:
                spec = ArchSpec.from_dict(arch)
            except ValueError as e:
                raise UserError(f"trial {number}: the architecture in {where} is invalid: {e}") from None
            built = sum(p.numel() for p in build(spec).parameters())
            if built != recorded:
                raise UserError(f"trial {number}: the architecture in {where} rebuilds to {built:,} parameters but "
                                f"{recorded:,} were recorded at search time; refusing to retrain a different model")
            specs.append(spec)
        if any(s != specs[0] for s in specs[1:]):
            raise UserError(f"trial {number}: the architecture in {path} differs from the one in study.db "
                            f"(same parameter count); fix or delete the JSON file")
        record = {"val_acc": t.values[0] if t.values else None, "params": t.user_attrs["params"],
                  "flops": t.user_attrs.get("flops"), "receptive_field": t.user_attrs.get("receptive_field")}
        return specs[0], record

    def class_names(self, num_classes: int) -> tuple[str, ...]:
        """The dataset's class names (numbers when it has none)."""
        from ..data.datasets import dataset_info

        names = dataset_info(self.cfg.data).class_names
        return tuple(names) if len(names) == num_classes else tuple(str(k) for k in range(num_classes))

    def check_data(self, specs: list[ArchSpec]) -> None:
        """Refuse data (moved, or changed by --set) that is not what the study searched on: other classes or size."""
        from ..data.datasets import dataset_info

        now = data_identity(self.cfg.data.dataset, dataset_info(self.cfg.data))
        recorded = [self.study.user_attrs.get(DATA_ATTR)]  # absent in a study from before it was recorded ...
        recorded += [{"num_classes": s.num_classes, "image_size": s.input_size} for s in specs]  # ... not these
        why = next((w for r in recorded if (w := data_difference(r, now))), None)
        if why:
            raise UserError(f"the data is not what study {self.name!r} searched on: {why} (data.root "
                            f"{self.cfg.data.root!r}); a retrain trains on the search's data: --set data.* may "
                            f"change how much of it is used and how it loads, --data-root where it lies")

    def retrain_metrics(self) -> list[dict[str, Any]]:
        """Every retrain/<trial>/metrics.json and retrain/ensemble_*/metrics.json, trials first."""
        folder = self.folder / "retrain"
        docs = []
        for path in sorted(folder.glob("*/metrics.json")) if folder.is_dir() else []:
            try:
                doc = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue  # a half-written summary of an interrupted run: not a result yet
            docs.append({**doc, "folder": str(path.parent)})
        return sorted(docs, key=lambda d: ("members" in d, d.get("trial", 0)))


def open_results(folder: Path, storage: str | None = None, data_root: str | None = None,
                 overrides: list[str] | None = None, study_name: str | None = None) -> StudyResults:
    """Load results/<study>/ (config.yaml, `--set` overrides, the study); every missing piece is a one-line UserError."""
    check_path(folder, "results folder")
    if not folder.is_dir():
        raise UserError(f"results folder '{folder}' does not exist (resnet-search run writes results/<study>/)")
    config = folder / "config.yaml"
    if not config.is_file():
        raise UserError(f"'{config}' is missing: '{folder}' is not a results folder of resnet-search run")
    root = [f"data.root={data_root}"] if data_root else []  # a path, taken as typed
    cfg = load_config(config, strings=root)  # checked against the study as saved; retrain's --set comes after
    if storage is None:
        if not (folder / "study.db").is_file():
            raise UserError(f"'{folder / 'study.db'}' is missing (for a study on a server, pass --storage URL)")
        storage = default_storage(folder)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    rdb = make_storage(storage)
    name = _study_name(rdb, storage, study_name, cfg, folder)
    study = optuna.load_study(study_name=name, storage=rdb)
    differ = config_difference(study.user_attrs, cfg)
    if differ:
        raise UserError(f"'{config}' no longer matches study {name!r} ({', '.join(differ)} "
                        f"differ{'s' if len(differ) == 1 else ''} since the search); restore it")
    if overrides:
        cfg = load_config(config, [*root, *overrides])
    return StudyResults(folder, cfg, study, storage)


def _study_name(rdb: RDBStorage, url: str, chosen: str | None, cfg: SearchConfig, folder: Path) -> str:
    """The study of a results folder: --study-name, else the one its config names or its database holds."""
    names = [s.study_name for s in rdb.get_all_studies()]
    held = ", ".join(repr(n[:MAX_NAME]) for n in names[:MAX_LISTED]) or "none"
    held += f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else ""
    if chosen is not None:
        if chosen in names:
            return chosen
        raise UserError(f"--study-name {chosen[:MAX_NAME]!r}: no such study in {redact_url(url)} (it holds: {held})")
    named = cfg.search.study_name  # the folder's config names its study (run.py records it)
    if named is not None and named in names:
        return named
    if len(names) == 1:  # a folder copied or renamed: its database's one study is the folder's
        return names[0]
    if folder.resolve().name in names:  # run.py names the folder after the study
        return folder.resolve().name
    if not names:
        raise UserError(f"{redact_url(url)} holds no study")
    raise UserError(f"{redact_url(url)} holds {len(names)} studies ({held}): choose one with --study-name")
