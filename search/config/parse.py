"""Read a search-space YAML and its `--set` overrides into a SearchConfig, checking values alone: types, ranges,
names and unknown keys are refused here, with the file and key in the message."""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from blocks.atomic import open_regular

from ..distributions import Dist, candidates, parse_value
from ..errors import UserError, clip, shown
from ..names import check_name, check_path
from ..yaml_load import MAX_BYTES, load_yaml
from .numbers import whole_numbers
from .schema import (
    ARCH_KEYS,
    DATASET_EXPECTED,
    LATENCY_BATCH_MAX,
    MAX_EPOCHS,
    OBJECTIVES,
    PRUNERS,
    SAMPLERS,
    SEED_MAX,
    SPACE_EXTRA,
    STUDY_NAME_MAX,
    Baseline,
    BudgetConfig,
    DataConfig,
    RetrainConfig,
    RulesConfig,
    SearchConfig,
    SearchSection,
    TrainSpec,
    TrainSpecError,
    check_data_values,
    dataset_known,
    max_train_epochs,
)


def _typed(cls: type, d: Any, where: str) -> Any:
    """Instantiate dataclass `cls` from mapping `d`, rejecting unknown keys and wrong types."""
    if d is None:
        d = {}
    if not isinstance(d, Mapping):
        raise UserError(f"{where}: expected a mapping, got {shown(d)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("python_only")}
    hints = typing.get_type_hints(cls)
    for key, value in d.items():
        if key not in fields:
            raise UserError(f"{where}.{clip(str(key))}: unknown key (expected one of: {', '.join(fields)})")
        _check_type(value, fields[key].metadata.get("yaml", hints[key]), f"{where}.{key}")
    missing = [f.name for f in fields.values()
               if f.name not in d and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:  # `budget: {}` or `--set budget=null`: the tool's words, not dataclass's TypeError
        raise UserError(f"{where}.{missing[0]} is required")
    return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


def _yaml_types(hint: Any) -> tuple[type, ...] | None:
    """The YAML value types a field's type takes (a float takes an int, a tuple a list); None = any."""
    if hint is Any:
        return None
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        parts = [_yaml_types(a) for a in typing.get_args(hint)]
        known = [p for p in parts if p is not None]
        return None if len(known) < len(parts) else tuple(t for p in known for t in p)
    base = typing.get_origin(hint) or hint
    if base in (tuple, list):
        return (list,)
    if base is float:
        return (int, float)
    return (base,) if base in (bool, int, str, type(None)) else None


def _type_name(hint: Any) -> str:
    """A field's type as its annotation reads (`int | None`, `float`, `tuple[str, ...]`)."""
    return hint.__name__ if isinstance(hint, type) else str(hint)


def _check_type(value: Any, hint: Any, where: str) -> None:
    """Raise UserError when `value` does not fit the field's type."""
    allowed = _yaml_types(hint)
    if allowed is None:
        return
    if isinstance(value, bool) and bool not in allowed:  # YAML's true is an int to Python, not to a user
        raise UserError(f"{where}: expected {_type_name(hint)}, got {shown(value)}")
    if not isinstance(value, allowed):
        raise UserError(f"{where}: expected {_type_name(hint)}, got {shown(value)}")
    if isinstance(value, float) and not math.isfinite(value):  # a NaN budget would silently disable its check
        raise UserError(f"{where}: expected a finite number, got {value}")


def apply_overrides(raw: dict, overrides: list[str], where: str, parse: bool = True) -> dict:
    """Apply `--set a.b=value` overrides (value parsed as YAML unless `parse` is false) to the raw config."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set {shown(item)}: expected key.path=value")
        path, value = item.split("=", 1)
        node = raw
        keys = path.split(".")
        for key in keys[:-1]:
            if node.get(key) is None:  # an empty section (`data:` with nothing under it) takes keys
                node[key] = {}
            node = node[key]
            if not isinstance(node, dict):
                raise UserError(f"--set {shown(item)}: {shown(key)} in {where} is not a section")
        try:
            node[keys[-1]] = load_yaml(value) if parse else value
        except UserError as e:
            raise UserError(f"--set {shown(item)}: {e}") from None
        except yaml.YAMLError as e:
            raise UserError(f"--set {shown(item)}: the value is not valid YAML: "
                            f"{getattr(e, 'problem', None) or e}") from None
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None,
                strings: list[str] | None = None) -> SearchConfig:
    """Read, override and validate a search-space YAML; `strings` are overrides taken verbatim (names, URLs)."""
    path = Path(check_path(path, "space"))
    text = _read_space(path)
    try:
        raw = load_yaml(text.decode("utf-8"))
    except UserError as e:  # too deep, an alias bomb, a duplicate key: `line N: ...`
        raise UserError(f"{path}: {e}") from None
    except (UnicodeDecodeError, ValueError) as e:  # a binary file; yaml's ReaderError is a ValueError too
        raise UserError(f"{path}: not a YAML text file ({type(e).__name__})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{at} not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of sections at the top level")
    raw = apply_overrides(raw, overrides or [], str(path))
    raw = apply_overrides(raw, strings or [], str(path), parse=False)
    return parse_config(raw, str(path))


def _read_space(path: Path) -> bytes:
    """The YAML's bytes, from a regular file only: a FIFO (`<(cat x.yaml)`) is refused at once, never waited on,
    as it could be read only once and each --workers process and every rerun reads the YAML again."""
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_BYTES:
                raise UserError(f"{path}: {size:,} bytes, over the {MAX_BYTES:,} a config may hold")
            return f.read()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except OSError as e:  # a FIFO, a device, a folder (open_regular's EINVAL), no permission
        hint = "; give the YAML as a file" if e.errno == errno.EINVAL else ""
        raise UserError(f"{path}: cannot read the YAML: {e.strerror or e}{hint}") from None


SECTIONS = ("data", "budget", "rules", "space", "train", "augment", "search", "storage", "retrain", "baselines")


def parse_config(raw: dict, path: str) -> SearchConfig:
    """Validate the raw YAML mapping into a SearchConfig (values only: no dataset is opened, no model built)."""
    raw = whole_numbers(raw)  # `budget.params: 5e6` is an int where an int is expected
    for key in raw:
        if key not in SECTIONS:
            raise UserError(f"{path}: unknown section {shown(key)} (expected: {', '.join(SECTIONS)})")
    if "budget" not in raw:
        raise UserError(f"{path}: missing section 'budget' (at least budget.params)")
    data = _typed(DataConfig, raw.get("data"), f"{path}: data")
    if not dataset_known(data.dataset):
        raise UserError(f"{path}: data.dataset: unknown dataset {shown(data.dataset)} ({DATASET_EXPECTED})")
    check_data_values(data, f"{path}: data")
    budget = _parse_budget(raw["budget"], path)
    rules = _typed(RulesConfig, raw.get("rules"), f"{path}: rules")
    if rules.head not in (None, "conv", "linear"):
        raise UserError(f"{path}: rules.head: expected conv or linear, got {shown(rules.head)}")
    if isinstance(rules.min_receptive_field, str) and rules.min_receptive_field != "input":
        raise UserError(f"{path}: rules.min_receptive_field: expected pixels or 'input', "
                        f"got {shown(rules.min_receptive_field)}")
    search = _typed(SearchSection, raw.get("search"), f"{path}: search")
    _check_search(search, path)
    space = _parse_space(raw.get("space"), path)
    train = _parse_section_values(raw.get("train"), {f.name for f in dataclasses.fields(TrainSpec)},
                                  f"{path}: train")
    _check_train(train, path)
    retrain = _parse_retrain(raw.get("retrain"), f"{path}: retrain")
    storage = raw.get("storage")
    if storage is not None and not isinstance(storage, str):
        raise UserError(f"{path}: storage: expected an SQLAlchemy URL string, got {shown(storage)}")
    augment = raw.get("augment") or []
    baselines = _parse_baselines(raw.get("baselines"), path)
    cfg = SearchConfig(path, data, budget, rules, space, train, augment, search, storage, retrain, raw, baselines)
    _check_fixed_rules(cfg)
    return cfg


def _check_fixed_rules(cfg: SearchConfig) -> None:
    """Rules that fixed values of the YAML already break (those that need a model: search.checks)."""
    where, rules, space = cfg.path, cfg.rules, cfg.space
    if rules.head is not None and "head" in space and not isinstance(space["head"], Dist) \
            and space["head"] != rules.head:
        raise UserError(f"{where}: space.head {space['head']!r} breaks rules.head: {rules.head}")
    if not rules.dropout and isinstance(space.get("dropout"), (int, float)) and space["dropout"] > 0:
        raise UserError(f"{where}: space.dropout {space['dropout']} breaks rules.dropout: false")
    if max_train_epochs(cfg) > MAX_EPOCHS:
        raise UserError(f"{where}: train.epochs {max_train_epochs(cfg):,}: at most {MAX_EPOCHS:,}")
    if rules.max_epochs is not None:
        if max_train_epochs(cfg) > rules.max_epochs:
            raise UserError(f"{where}: train.epochs {max_train_epochs(cfg)} > rules.max_epochs {rules.max_epochs}")
        if cfg.retrain.epochs > rules.max_epochs:
            raise UserError(f"{where}: retrain.epochs {cfg.retrain.epochs} > rules.max_epochs {rules.max_epochs}")


def _parse_budget(d: Any, path: str) -> BudgetConfig:
    """The `budget` section: typed, positive, its peak in elements, its arena in bytes."""
    budget = _typed(BudgetConfig, d, f"{path}: budget")
    if budget.params <= 0 or (budget.flops is not None and budget.flops <= 0):
        raise UserError(f"{path}: budget: params and flops must be positive")
    if (budget.latency_ms is not None and budget.latency_ms <= 0) or budget.latency_batch < 1:
        raise UserError(f"{path}: budget: latency_ms must be positive and latency_batch at least 1")
    if budget.latency_batch > LATENCY_BATCH_MAX:
        raise UserError(f"{path}: budget.latency_batch {budget.latency_batch}: expected at most {LATENCY_BATCH_MAX} "
                        f"(the probe holds the whole batch in memory)")
    budget = _parse_peak_budget(budget, (d or {}).get("peak_activations"), path)
    if budget.arena is not None:  # bytes: the arena is int8 TFLite Micro's, activation_bytes is the peak's
        budget = dataclasses.replace(budget, arena=_bytes(budget.arena, 1, f"{path}: budget.arena", "bytes"))
    return budget


BYTE_UNITS = {"b": 1, "kb": 10**3, "kib": 2**10, "mb": 10**6, "mib": 2**20, "gb": 10**9, "gib": 2**30}


def _parse_peak_budget(budget: BudgetConfig, value: int | str | None, path: str) -> BudgetConfig:
    """budget.peak_activations (`value`, as the YAML gave it) as whole elements: a unit string ("64KiB") divided
    by activation_bytes."""
    per = budget.activation_bytes
    if per < 1:
        raise UserError(f"{path}: budget.activation_bytes: expected bytes per element >= 1 (1 = int8), got {per}")
    if value is None:
        return budget
    return dataclasses.replace(budget, peak_activations=_bytes(value, per, f"{path}: budget.peak_activations"))


def _bytes(value: int | str, per: int, where: str, count: str = "elements") -> int:
    """`value` as a whole number of `count` of `per` bytes each: a positive int as it is, a unit string ("64KiB")
    its bytes divided by `per`; `where` names the key in the one-line error."""
    if not isinstance(value, str):
        if value <= 0:
            raise UserError(f"{where}: expected a positive number of {count} or a byte size such as 64KiB, "
                            f"got {value}")
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([a-zA-Z]+)\s*", value)
    if m is None or m.group(2).lower() not in BYTE_UNITS:
        raise UserError(f"{where}: {value!r} is not a positive number of {count} or a byte size such as "
                        f"64KiB or 256kB (units: B, kB, KiB, MB, MiB, GB, GiB)")
    n = int(float(m.group(1)) * BYTE_UNITS[m.group(2).lower()] // per)
    if n <= 0:
        at = f" at budget.activation_bytes {per}" if count == "elements" else ""
        raise UserError(f"{where}: {value!r}{at} is less than one {count[:-1]}; expected a positive size")
    return n


def _check_train(train: dict[str, Any], path: str) -> None:
    """Every value a train key can take has the right type and makes a valid TrainSpec."""
    where, hints = f"{path}: train", typing.get_type_hints(TrainSpec)
    values_of = {key: candidates(value) for key, value in train.items()}
    base = {key: values[0] for key, values in values_of.items()}  # a choice's first, a range's low
    for key, values in values_of.items():
        for c in values:
            if key == "progressive" and c is not None:
                ok = isinstance(c, (list, tuple)) and all(
                    isinstance(s, (list, tuple)) and len(s) == 2 and all(isinstance(v, int) for v in s) for s in c)
                if not ok:
                    raise UserError(f"{where}.progressive: expected [[epoch, size], ...] or null, got {shown(c)}")
            elif key != "progressive":
                _check_type(c, hints[key], f"{where}.{key}")
    try:
        TrainSpec.from_dict(base)
    except TrainSpecError as e:  # names its key (train.momentum ...)
        raise UserError(f"{path}: {e}") from None
    for key, values in values_of.items():
        for c in values:
            try:
                TrainSpec.from_dict({**base, key: c})
            except TrainSpecError as e:  # a message about another key: say which value of this one led there
                raise UserError(f"{path}: {e}" if key in e.keys else f"{where}.{key}: {e}") from None


def _parse_baselines(items: Any, path: str) -> tuple[Baseline, ...]:
    """The `baselines` list: each a `name`, ArchSpec keys (width may be `solve`) and an optional fixed `train`."""
    if items is None:
        return ()
    if not isinstance(items, list):
        raise UserError(f"{path}: baselines: expected a list of designs, got {shown(items)}")
    out: list[Baseline] = []
    train_keys = {f.name for f in dataclasses.fields(TrainSpec)}
    for i, item in enumerate(items):
        where = f"{path}: baselines[{i}]"
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str) or not item["name"]:
            raise UserError(f"{where}: expected a mapping with a name and ArchSpec keys, got {shown(item)}")
        if item["name"] in {b.name for b in out}:
            raise UserError(f"{where}.name: {shown(item['name'])} is used twice")
        arch = {k: v for k, v in item.items() if k not in ("name", "train")}
        for key, value in arch.items():
            if key not in ARCH_KEYS or key in ("num_classes", "input_size"):
                raise UserError(f"{where}.{clip(str(key))}: unknown key (expected ArchSpec keys: "
                                f"{', '.join(sorted(ARCH_KEYS - {'num_classes', 'input_size'}))})")
            if isinstance(value, Mapping):
                raise UserError(f"{where}.{key}: a baseline is a fixed design, got the distribution {shown(dict(value))}")
        if isinstance(arch.get("width"), str) and arch["width"] != "solve":
            raise UserError(f"{where}.width: expected an int or 'solve', got {shown(arch['width'])}")
        train = item.get("train") or {}
        if not isinstance(train, Mapping) or any(k not in train_keys for k in train):
            raise UserError(f"{where}.train: expected fixed values of train keys ({', '.join(sorted(train_keys))}), "
                            f"got {shown(train)}")
        out.append(Baseline(item["name"], dict(arch), dict(train)))
    return tuple(out)


def _parse_retrain(d: Any, where: str) -> RetrainConfig:
    """The `retrain` section: typed, its recipe a valid TrainSpec (its augment list is built by search.checks)."""
    retrain = _typed(RetrainConfig, d, where)
    retrain = dataclasses.replace(retrain, augment=None if retrain.augment is None else list(retrain.augment))
    if retrain.epochs < 1 or retrain.seeds < 1 or retrain.lr_batch < 1:
        raise UserError(f"{where}: epochs, seeds and lr_batch must be at least 1")
    if retrain.epochs > MAX_EPOCHS:
        raise UserError(f"{where}.epochs {retrain.epochs:,}: at most {MAX_EPOCHS:,}")
    try:
        TrainSpec.from_dict(retrain.recipe())
    except TrainSpecError as e:
        raise UserError(f"{where}.{e.detail}") from None
    return retrain


def _check_search(s: SearchSection, path: str) -> None:
    """Validate the names in the search section."""
    if s.sampler not in SAMPLERS:
        raise UserError(f"{path}: search.sampler: unknown {shown(s.sampler)} (expected: {', '.join(SAMPLERS)})")
    if s.pruner not in PRUNERS:
        raise UserError(f"{path}: search.pruner: unknown {shown(s.pruner)} (expected: {', '.join(PRUNERS)})")
    if not s.objectives or s.objectives[0] != "val_acc" or any(o not in OBJECTIVES for o in s.objectives):
        raise UserError(f"{path}: search.objectives: expected [val_acc] optionally followed by params "
                        f"and/or flops, got {shown(list(s.objectives))}")
    checks = [
        (s.n_trials >= 1, "n_trials", ">= 1"),
        (s.timeout is None or s.timeout > 0, "timeout", "a positive number of seconds or null"),
        (0 <= s.seed <= SEED_MAX, "seed", f"an integer in [0, {SEED_MAX}] (numpy's seed range, used by the samplers)"),
        (s.max_rejections >= 1, "max_rejections", ">= 1"),
        (s.pruner_warmup_epochs >= 0, "pruner_warmup_epochs", ">= 0"),
        (s.pruner_startup_trials >= 0, "pruner_startup_trials", ">= 0"),
    ]
    for ok, key, expected in checks:
        if not ok:
            raise UserError(f"{path}: search.{key}: expected {expected}, got {shown(getattr(s, key))}")
    name = s.study_name
    if name is not None and (not name.strip() or "/" in name or "\\" in name or name in (".", "..")
                             or name.startswith(".") or len(name) > STUDY_NAME_MAX or not name.isprintable()):
        raise UserError(f"{path}: search.study_name {shown(name)}: expected a plain name of at most "
                        f"{STUDY_NAME_MAX} printable characters (it names a folder under --results-dir: no '/', "
                        f"'\\' or leading '.')")
    if name is not None:
        check_name(name, f"{path}: search.study_name")  # the folder's name: 200 characters can be 800 bytes


def _parse_space(d: Any, path: str) -> dict[str, Any]:
    """The `space` section: ArchSpec keys (plus `fill`), each fixed or a Dist; width may be `solve`."""
    space = _parse_section_values(d, ARCH_KEYS | SPACE_EXTRA, f"{path}: space")
    for key in ("num_classes", "input_size"):
        if key in space:
            raise UserError(f"{path}: space.{key}: set by the dataset, remove it from the space")
    width = space.get("width", "solve")
    if isinstance(width, str) and width != "solve":
        raise UserError(f"{path}: space.width: expected an int, a distribution or 'solve', got {shown(width)}")
    space.setdefault("width", "solve")
    for key, ok, expected in SPACE_TYPES:
        if key in space and not all(ok(c) for c in candidates(space[key])):
            raise UserError(f"{path}: space.{key}: expected {expected}, got {shown(space[key])}")
    return space


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


SPACE_TYPES = (  # (key, test of each value it can take, what is expected)
    ("stages", lambda v: _int(v) and v >= 1, "an integer >= 1 or a distribution of them"),
    ("blocks", lambda v: (_int(v) and v >= 1) or (isinstance(v, (list, tuple)) and bool(v)
                                                  and all(_int(b) and b >= 1 for b in v)),
     "an integer >= 1 per stage, a list of them, or a distribution"),
    ("width", lambda v: v == "solve" or (_int(v) and v >= 1), "'solve', an integer >= 1 or a distribution"),
    ("fill", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1,
     "a fraction of the budget in (0, 1] or a distribution of them"),
)


def _parse_section_values(d: Any, known: set[str], where: str) -> dict[str, Any]:
    """A mapping of known keys to fixed values or Dists."""
    if d is None:
        return {}
    if not isinstance(d, Mapping):
        raise UserError(f"{where}: expected a mapping, got {shown(d)}")
    out = {}
    for key, value in d.items():
        if key not in known:
            raise UserError(f"{where}.{clip(str(key))}: unknown key (expected one of: {', '.join(sorted(known))})")
        out[key] = parse_value(value, f"{where}.{key}")
    return out
