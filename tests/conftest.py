"""Shared fixtures: one small finished search per test session, its retrain, and throwaway copies of it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.helpers.spaces import ROOT, SMOKE_OVERRIDES  # SMOKE_OVERRIDES: spaces/smoke.yaml shrunk to seconds
from tests.helpers.studies import copy_results


@pytest.fixture(scope="session", autouse=True)
def cache_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """XDG_CACHE_HOME for the session: decoded-image caches go to a throwaway folder, never the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("cache_home")
        mp.setenv("XDG_CACHE_HOME", str(home))
        yield home


@pytest.fixture(scope="session", autouse=True)
def fixed_threads() -> Iterator[str]:
    """OMP_NUM_THREADS for the session (torch's own count unless set): threads that the machine's load does not
    change, so that runs a test compares compute alike (search.threads leaves fixed threads alone); the tests of
    the load-driven choice unset it and give a fake machine's load."""
    with pytest.MonkeyPatch.context() as mp:
        value = os.environ.get("OMP_NUM_THREADS", str(torch.get_num_threads()))
        mp.setenv("OMP_NUM_THREADS", value)
        yield value


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """results/smoke/ of a finished search (baseline + 3 complete trials, some rejected); do not modify it."""
    from search import run

    root = tmp_path_factory.mktemp("smoke_results")
    sets = [arg for o in SMOKE_OVERRIDES for arg in ("--set", o)]
    assert run.main([str(ROOT / "spaces" / "smoke.yaml"), "--results-dir", str(root), "--n-trials", "3",
                     "--device", "cpu", *sets]) == 0
    return root / "smoke"


@pytest.fixture(scope="session")
def smoke_retrained(smoke_study: Path) -> Path:
    """smoke_study with its 2 best trials retrained for 1 epoch on the CPU, and their ensemble tested."""
    from search import commands

    assert commands.retrain_main([str(smoke_study), "--top", "2", "--epochs", "1", "--device", "cpu"]) == 0
    return smoke_study


@pytest.fixture
def smoke_copy(smoke_study: Path, tmp_path: Path) -> Path:
    """A private copy of smoke_study (config, study.db, trial JSONs; no retrain output) to change freely."""
    return copy_results(smoke_study, tmp_path / "smoke")
