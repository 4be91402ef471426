"""Experiments: whole searches, retrains and training runs whose figures are accuracies, not speeds.

Each runs from the repository root as `python -m benchmarks.experiments.<name> --help`. bench_mcu.py, the
largest, stays at benchmarks/bench_mcu.py beside its committed data (benchmarks/mcu/), where long runs use it.
"""
