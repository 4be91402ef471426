"""The schema of a search-space YAML: every section as a typed dataclass with its defaults (schema), read from
YAML and `--set` and checked on its values alone, unknown keys being errors (parse). What needs the dataset or a
built model is checked later, by search.checks, in the commands that train."""

from .parse import apply_overrides, load_config, parse_config
from .schema import (
                     DATASETS,
                     GIVEN_DATASET,
                     IMAGE_SIZE_MIN,
                     MAX_EPOCHS,
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
                     max_train_epochs,
)

__all__ = ["DATASETS", "GIVEN_DATASET", "IMAGE_SIZE_MIN", "MAX_EPOCHS", "Baseline", "BudgetConfig", "DataConfig", "RetrainConfig",
           "RulesConfig", "SearchConfig", "SearchSection", "TrainSpec", "TrainSpecError", "apply_overrides", "check_data_values",
           "load_config", "max_train_epochs", "parse_config"]
