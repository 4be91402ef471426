"""The decoded-image cache lives in the user's cache folder, not beside the images; off a terminal it logs one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from search.config import DataConfig
from search.data import decode_cache
from search.data.datasets import make_loaders
from tests.helpers.datasets import make_imagefolder


def tree(root: Path) -> dict[str, int]:
    """Every file and folder under root with its size (0 for folders)."""
    return {str(p.relative_to(root)): p.stat().st_size if p.is_file() else 0 for p in root.rglob("*")}


def test_a_read_only_dataset_is_cached_in_the_user_cache_folder(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cache_home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    root = make_imagefolder(tmp_path / "shared", classes=2, per_class=3, size=(12, 12))
    before = tree(root)
    folders = [root, *(p for p in root.rglob("*") if p.is_dir())]
    for folder in folders:
        folder.chmod(0o555)  # as on a shared or cluster dataset (root ignores it: the tree check below still holds)
    try:
        loaders = make_loaders(DataConfig("imagefolder", str(root), num_workers=0), [], 2, seed=0)
    finally:
        for folder in folders:
            folder.chmod(0o755)
    assert tree(root) == before, "nothing is written into the dataset's folder"
    cached = list((cache_home / "resnet-budget-search" / "decoded").glob("imagefolder-train-*.npy"))
    assert len(cached) == 1 and np.load(cached[0], mmap_mode="r").shape == (6, 12, 12, 3)
    assert len(loaders.train.dataset) + len(loaders.val.dataset) == 6


def test_the_cache_folder_follows_xdg_cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert decode_cache.default_dir() == tmp_path / "xdg" / "resnet-budget-search" / "decoded"
    for unset in ("", "relative/path"):  # the XDG spec: unset, empty or relative means ~/.cache
        monkeypatch.setenv("XDG_CACHE_HOME", unset)
        assert decode_cache.default_dir() == Path.home() / ".cache" / "resnet-budget-search" / "decoded"


def test_off_a_terminal_decoding_is_one_plain_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    paths = [tmp_path / f"{i}.png" for i in range(3)]
    for p in paths:
        p.write_bytes(b"")  # the cache key reads their sizes and times; `read` below stands for decoding
    images = decode_cache.decoded(paths, 8, lambda p: np.full((8, 8, 3), 7, np.uint8), tmp_path / "cache", "x")
    assert images.shape == (3, 8, 8, 3)
    assert capsys.readouterr().err == "decoding x once: 3 images\n"  # no bar, no carriage return
