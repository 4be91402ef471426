"""Experiments: whole searches, retrains and training runs whose figures are accuracies, not speeds.

Each runs from the repository root as `python -m benchmarks.experiments.<name> --help`. The largest, the MLPerf
Tiny proof (bench_mcu.py), keeps its committed data beside it in mcu/ (README.md there).
"""
