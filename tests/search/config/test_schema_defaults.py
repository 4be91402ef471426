"""spaces/README.md is the key-by-key reference: every default it states is the one the code uses (issue 29:
it showed example values, `search.n_trials: 40` and `rules.max_epochs: 500`, as defaults)."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from blocks import ArchSpec
from search.config.schema import BudgetConfig, DataConfig, RetrainConfig, RulesConfig, SearchSection, TrainSpec
from search.space import FILL_DEFAULT, WIDTH_DEFAULT
from search.yaml_load import load_yaml
from tests.helpers.spaces import ROOT

README = ROOT / "spaces" / "README.md"
SECTIONS = {"data": DataConfig, "budget": BudgetConfig, "rules": RulesConfig, "train": TrainSpec,
            "search": SearchSection, "retrain": RetrainConfig}
# The architecture table's defaults written in words, and the ArchSpec value each stands for.
WORDED = {"blocks": ("2 each", (2,) * ArchSpec.stages), "expansion": ("4 (1 for basic)", None),
          "strides": ("1, then 2", None)}


def sections_block() -> dict[str, Any]:
    """The YAML block under `## Sections`, parsed as the search reads a space."""
    after = README.read_text().split("\n## Sections\n", 1)[1]
    return load_yaml(re.search(r"^```yaml\n(.*?)^```", after, flags=re.S | re.M).group(1))


def defaults(cls: type) -> dict[str, Any]:
    """A dataclass's fields that have a default, with it (a required field has none to state)."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def same(stated: Any, default: Any) -> bool:
    """A YAML value equals a dataclass default (YAML lists for tuples)."""
    return (tuple(stated) if isinstance(stated, list) else stated) == default


@pytest.mark.parametrize("section", SECTIONS)
def test_every_stated_default_is_the_schemas(section: str) -> None:
    stated, known = sections_block()[section], defaults(SECTIONS[section])
    assert set(stated) <= {f.name for f in dataclasses.fields(SECTIONS[section])}, "a key the schema lacks"
    wrong = {k: (v, known[k]) for k, v in stated.items() if k in known and not same(v, known[k])}
    assert wrong == {}, "spaces/README.md key: (stated, schema default)"


def test_the_space_section_states_archspec_defaults() -> None:
    space = sections_block()["space"]
    expected = defaults(ArchSpec) | {"width": WIDTH_DEFAULT, "fill": FILL_DEFAULT}
    assert {k: v for k, v in space.items() if not same(v, expected[k])} == {}


def test_the_architecture_table_states_archspec_defaults() -> None:
    section = README.read_text().split("## Architecture keys", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| .* \| ([^|]+) \|$", section, flags=re.M)
    assert len(rows) == len(dataclasses.fields(ArchSpec)) - 3  # num_classes, input_size, in_channels: the data's
    wrong = {}
    for key, cell in rows:
        if key in WORDED:
            words, value = WORDED[key]
            ok = cell.strip() == words and (value is None or value == getattr(ArchSpec, key))
        else:
            ok = same(load_yaml(cell), getattr(ArchSpec, key))
        if not ok:
            wrong[key] = cell
    assert wrong == {}
