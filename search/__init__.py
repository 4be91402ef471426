"""The search side: config, sampling, budgets and rules, data, training, Optuna glue and CLIs."""

import os

# albumentations asks PyPI for a newer version when imported; searches often run offline.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
