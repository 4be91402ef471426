"""What every benchmark shares: the machine, the commit, side-by-side timing and one JSON record per run.

A run's record is benchmarks/results/<bench>-<commit>.json (`+` after the commit where tracked code had
uncommitted changes); two records of one benchmark, say two commits', compare with
`python -m benchmarks.harness OLD.json NEW.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# What the benchmarks write, not code: a tree that differs from its commit only there still runs that commit.
OUTPUTS = ("benchmarks/results", "benchmarks/experiments/mcu")
# /proc/cpuinfo flags that decide oneDNN's kernels, and whether `train.amp: auto` finds bf16 native
FLAGS = {"avx512": "avx512f", "avx512_bf16": "avx512_bf16", "amx_bf16": "amx_bf16"}


def cpu_info() -> tuple[str, set[str]]:
    """The CPU's model name and flags from /proc/cpuinfo (elsewhere platform's guess and no flags)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine() or "unknown CPU", set()
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "unknown CPU")
    flags = next((set(ln.split(":", 1)[1].split()) for ln in lines if ln.startswith("flags")), set())
    return model, flags


def machine() -> dict[str, Any]:
    """The facts a figure depends on: CPU, cores, ISA flags, GPU, torch and its threads, the load average."""
    import torch  # here: a script's --help imports no torch

    model, flags = cpu_info()
    return {"cpu": model, "cores": os.cpu_count(), **{key: flag in flags for key, flag in FLAGS.items()},
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
            "load_average": round(os.getloadavg()[0], 2)}


def describe(facts: dict[str, Any]) -> str:
    """The machine in one line, as each benchmark prints it first."""
    flags = ", ".join(key.upper().replace("_", "-") for key in FLAGS if facts.get(key)) or "no AVX512"
    gpu = f", GPU {facts['gpu']}" if facts.get("gpu") else ""
    return (f"{facts['cpu']}, {facts['cores']} cores, {flags}{gpu}; torch {facts['torch']}, "
            f"{facts['threads']} thread(s), load average {facts['load_average']:.1f}; commit {commit()}")


def commit() -> str:
    """The checkout's short commit, `+` after it where tracked code has uncommitted changes; 'unknown' outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        rev = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", *(f":!{p}" for p in OUTPUTS))
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("+" if dirty else "")


def clock(call: Callable[[], object], repeat: int = 1, sync: Callable[[], None] | None = None) -> float:
    """Seconds that `repeat` calls of `call` take; `sync` waits for a device's queued work before the clock stops."""
    start = time.perf_counter()
    for _ in range(repeat):
        call()
    if sync is not None:
        sync()
    return time.perf_counter() - start


@dataclass(frozen=True)
class SideBySide:
    """Each timer's figure in every round; `result[name]` is its median."""

    rounds: dict[str, list[float]]

    def __getitem__(self, name: str) -> float:
        return statistics.median(self.rounds[name])

    def ratio(self, name: str, reference: str) -> float:
        """`name`'s median over `reference`'s."""
        return self[name] / self[reference]

    def medians(self) -> dict[str, float]:
        """Every timer's median."""
        return {name: self[name] for name in self.rounds}

    def figures(self) -> dict[str, Any]:
        """The medians and every round, as a record keeps them."""
        return {"median": self.medians(), "rounds": self.rounds}


def side_by_side(timers: Mapping[str, Callable[[], float]], rounds: int) -> SideBySide:
    """Call every timer once a round, in turn, for `rounds` rounds (so load that comes and goes hits each alike);
    a timer returns its own figure (images/s, ms)."""
    got: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            got[name].append(timer())
    return SideBySide(got)


def record(name: str, figures: dict[str, Any], facts: dict[str, Any] | None = None) -> Path:
    """Write one run's figures with the machine (`facts`, taken now if not given), the commit, the command line
    and the time to benchmarks/results/<name>-<commit>.json, and say so; its path."""
    from search.files import atomic_write_text

    rev = commit()
    doc = {"bench": name, "commit": rev.rstrip("+"), "dirty": rev.endswith("+"),
           "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "argv": sys.argv[1:],
           "machine": facts if facts is not None else machine(), "load_average_end": round(os.getloadavg()[0], 2),
           "figures": figures}
    path = RESULTS / f"{name}-{rev}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=1, default=str) + "\n")
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}", flush=True)
    return path


def flatten(doc: Any, prefix: str = "") -> dict[str, Any]:
    """A nested record as {'figures/steps/new': 661.1, ...}: one line a leaf."""
    if isinstance(doc, dict):
        return {k: v for key, value in doc.items() for k, v in flatten(value, f"{prefix}{key}/").items()}
    if isinstance(doc, list) and doc and all(isinstance(v, dict | list) for v in doc):
        return {k: v for i, value in enumerate(doc) for k, v in flatten(value, f"{prefix}{i}/").items()}
    return {prefix.rstrip("/"): doc}


def compare(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Each leaf of two records that differs, numbers with new / old beside them."""
    a, b = flatten(old), flatten(new)
    lines = []
    for key in [*a, *(k for k in b if k not in a)]:
        x, y = a.get(key), b.get(key)
        if x == y:
            continue
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (x, y))
        ratio = f"  ({y / x:.2f}x)" if numbers and x else ""
        lines.append(f"{key}: {x} -> {y}{ratio}")
    return lines


def main() -> None:
    """Print what differs between two records."""
    p = argparse.ArgumentParser(description="What differs between two benchmark records (machine and figures).")
    p.add_argument("old", type=Path)
    p.add_argument("new", type=Path)
    args = p.parse_args()
    docs = [json.loads(path.read_text()) for path in (args.old, args.new)]
    print("\n".join(compare(*docs)) or "the two records are the same")


if __name__ == "__main__":
    main()
