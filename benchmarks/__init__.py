"""The benchmark suite: each script runs from the repository root as `python -m benchmarks.<name> --help`.

Speed benchmarks sit in this folder, experiments (whole searches and retrains, with their data beside them) in
benchmarks/experiments/; every one records the machine, the commit and its figures through benchmarks.harness,
as a JSON record under benchmarks/results/.
"""
