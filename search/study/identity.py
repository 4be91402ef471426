"""What a study means: its config's fingerprint and the data it was searched on, recorded and compared.

The fingerprint (fingerprint_sections) hashes what the YAML says; the data identity is what
the dataset is (kind, classes and their names, image size), which the same YAML can change by
pointing at another folder. Both are study user attributes; a study recorded before a part of them
existed is accepted and the part recorded, so old studies keep opening.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import yaml

from ..config import SearchConfig
from ..errors import UserError

DATA_ATTR = "data_identity"  # study user attribute: data_identity() of the data the study was searched on
SHOWN = 3  # class names quoted in a message before "..."
# Keys that do not change what a trial means: how many, how long, where, how fast, how they are drawn.
NOT_IN_FINGERPRINT = {"search": ("n_trials", "timeout", "study_name", "max_rejections", "sampler", "seed"),
                      "data": ("root", "num_workers", "download", "splits")}


def fingerprint_sections(cfg: SearchConfig) -> dict[str, str]:
    """A hash per section of what a trial means: its data, budget, rules, space, training, augmentation,
    baselines, objectives and pruning; not how many trials, how long, where (paths, storage) or how fast
    it runs. What the data is (its classes, their size) is data_identity's."""
    search = {k: v for k, v in dataclasses.asdict(cfg.search).items() if k not in NOT_IN_FINGERPRINT["search"]}
    data = {f.name: getattr(cfg.data, f.name) for f in dataclasses.fields(cfg.data)  # shallow: never a copy
            if f.name not in NOT_IN_FINGERPRINT["data"]}  # of a given dataset object
    # the peak budget is in elements by now; without a peak or an arena budget, the budget hashes as it did
    # before they existed
    budget = {k: v for k, v in dataclasses.asdict(cfg.budget).items()
              if k != "activation_bytes" and (k not in ("peak_activations", "arena") or v is not None)}
    parts = {"data": data, "budget": budget, "rules": dataclasses.asdict(cfg.rules),
             "space": cfg.raw.get("space"), "train": cfg.raw.get("train"), "augment": cfg.raw.get("augment"),
             "search": search, "baselines": [dataclasses.asdict(b) for b in cfg.baselines]}
    return {k: hashlib.sha256(json.dumps(v, sort_keys=True, default=str).encode()).hexdigest()[:16]
            for k, v in parts.items()}


def fingerprint(cfg: SearchConfig) -> str:
    """One hash of fingerprint_sections(): equal for every YAML whose trials mean the same."""
    return hashlib.sha256(json.dumps(fingerprint_sections(cfg), sort_keys=True).encode()).hexdigest()[:16]


def data_identity(dataset: str, info: Any) -> dict[str, Any]:
    """What a trial's meaning depends on in the data (search.data.DatasetInfo), never where it lies."""
    return {"dataset": dataset, "num_classes": info.num_classes, "class_names": list(info.class_names),
            "image_size": info.image_size}


def data_difference(recorded: Mapping[str, Any] | None, now: Mapping[str, Any]) -> str | None:
    """How `now` differs from the recorded identity, in words; None when every key both have agrees."""
    recorded, parts = recorded or {}, []
    differs = [k for k in ("dataset", "num_classes", "image_size") if k in recorded and k in now
               and recorded[k] != now[k]]
    if "dataset" in differs:
        parts.append(f"dataset {now['dataset']} instead of {recorded['dataset']}")
    classes = f"{now['num_classes']} classes instead of {recorded['num_classes']}" if "num_classes" in differs \
        else "other classes"
    old, new = list(recorded.get("class_names") or []), list(now.get("class_names") or [])
    if old and new and old != new:  # Tiny ImageNet has no names until it is downloaded
        added, gone = [n for n in new if n not in old], [n for n in old if n not in new]
        words = "; ".join(f"{label}: {_few(names)}" for label, names in (("new", added), ("missing", gone)) if names)
        parts.append(f"{classes} ({words})" if words else "the same classes in another order (other labels)")
    elif "num_classes" in differs:
        parts.append(classes)
    if "image_size" in differs:
        parts.append(f"{now['image_size']} px images instead of {recorded['image_size']} px")
    return ", ".join(parts) or None


def _few(names: list[str]) -> str:
    """The first SHOWN names, quoted and shortened, then how many more."""
    shown = ", ".join(repr(n[:40]) for n in names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def config_difference(attrs: Mapping[str, Any], cfg: SearchConfig) -> list[str]:
    """The fingerprint sections in which `cfg` differs from the study's record (a section it lacks is not one)."""
    stored = attrs.get("fingerprint")
    if stored is None or stored == fingerprint(cfg):
        return []
    was, now = attrs.get("fingerprint_sections") or {}, fingerprint_sections(cfg)
    if not was:  # recorded before the sections were: nothing says which one differs
        return list(now)
    return [k for k, v in now.items() if k in was and was[k] != v]


def check_and_record(study: optuna.Study, cfg: SearchConfig, where: str, data: Mapping[str, Any] | None) -> None:
    """Refuse a config or data the study was not made from (one line); record what it lacks."""
    attrs = study.user_attrs
    differ = config_difference(attrs, cfg)
    if differ:
        raise UserError(f"study {cfg.study_name!r} in {where} was made from a different space "
                        f"({', '.join(differ)} differ{'s' if len(differ) == 1 else ''}; from "
                        f"{attrs.get('config_path')}); use another --study-name or the same YAML")
    why = data_difference(attrs.get(DATA_ATTR), data) if data is not None else None
    if why:
        raise UserError(f"study {cfg.study_name!r} in {where} was searched on other data: {why} (data.root "
                        f"{cfg.data.root!r}); point --data-root at the study's data or use another --study-name")
    if attrs.get("fingerprint") != fingerprint(cfg):  # an older record: the sections it lacked join it
        study.set_user_attr("fingerprint", fingerprint(cfg))
        study.set_user_attr("fingerprint_sections", fingerprint_sections(cfg))
    if data is not None and attrs.get(DATA_ATTR) is None:
        study.set_user_attr(DATA_ATTR, dict(data))


def recorded_name(folder: Path) -> str | None:
    """The study a results folder belongs to, as its config.yaml records it (None: no config.yaml)."""
    config = folder / "config.yaml"
    if not config.is_file():
        return None
    try:
        raw = yaml.safe_load(config.read_text(encoding="utf-8"))
        name = raw["search"]["study_name"]
    except Exception:  # noqa: BLE001 (written before the name was recorded, or unreadable)
        name = None
    return name if isinstance(name, str) else folder.resolve().name  # run.py names the folder after the study


def check_folder(folder: Path, study_name: str) -> None:
    """Refuse a results folder that belongs to another study (a link to it, or a reused name)."""
    owner = recorded_name(folder)
    if owner is not None and owner != study_name:
        real = folder.resolve()
        shown = f"'{folder}'" + (f" (-> '{real}')" if real != folder.absolute() else "")
        raise UserError(f"results folder {shown} belongs to study {owner!r}, not {study_name!r}: "
                        f"use another --results-dir or --study-name")
