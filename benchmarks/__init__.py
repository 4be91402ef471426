"""The benchmark suite: each script runs from the repository root as `python -m benchmarks.<name> --help`.

Speed benchmarks sit in this folder, experiments (whole searches and retrains, with their data) in
benchmarks/experiments/; every one records the machine, the commit and its figures through benchmarks.harness,
as a JSON record under benchmarks/results/. bench_mcu.py also runs as `python benchmarks/bench_mcu.py`, the
command its long runs and benchmarks/mcu/README.md use.
"""
