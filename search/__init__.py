"""The search side: config, sampling, budgets and rules, data, training, Optuna glue and CLIs."""
