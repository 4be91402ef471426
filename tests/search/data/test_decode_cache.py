"""Image folders and Tiny ImageNet decoded once into a memory-mapped array, and again when the files change."""

from __future__ import annotations

import errno
import hashlib
import os
import pty
import select
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from search.config import DataConfig
from search.data import datasets as data
from search.data import decode_cache, sources
from search.data.batches import ArrayBatches
from search.data.datasets import make_loaders
from search.errors import UserError
from tests.helpers.datasets import make_imagefolder, make_tiny_imagenet


def cached(root: Path) -> list[Path]:
    """The cache files of the training split of the data under root, in the default cache folder."""
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]
    return sorted(decode_cache.default_dir().glob(f"*-train-{key}-*.npy"))


def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record every image file the data module decodes from now on."""
    reads: list[Path] = []
    real = sources.read_image
    monkeypatch.setattr(sources, "read_image", lambda p: reads.append(Path(p)) or real(p))
    return reads


def test_imagefolder_is_decoded_once_and_again_when_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_imagefolder(tmp_path / "f", classes=2, per_class=4, size=(20, 16), vary=True)
    cfg = DataConfig("imagefolder", str(root), val_fraction=0.25, num_workers=0)
    reads = count_reads(monkeypatch)
    first = make_loaders(cfg, [{"HorizontalFlip": None}], 3, seed=0)
    assert len(reads) == 8 and len(cached(root)) == 1
    assert isinstance(first.train.dataset, ArrayBatches)  # training batches gathered from the array
    images = np.load(cached(root)[0], mmap_mode="r")
    assert images.shape == (8, 16, 16, 3) and images.dtype == np.uint8  # squared to the shorter side
    reads.clear()
    make_loaders(cfg, [{"HorizontalFlip": None}], 3, seed=0)
    assert reads == []  # no decode on a second run (or epoch)
    changed = root / "train" / "class_1" / "img_0.png"
    Image.fromarray(np.zeros((16, 20, 3), np.uint8)).save(changed)
    os.utime(changed, ns=(1, 1))  # a new mtime even on coarse file-system clocks
    make_loaders(cfg, [], 3, seed=0)
    assert len(reads) == 8 and len(cached(root)) == 1  # re-decoded, the stale array removed
    assert not np.load(cached(root)[0]).any(axis=(1, 2, 3)).all()  # the black image is in it
    reads.clear()
    Image.fromarray(np.full((16, 20, 3), 9, np.uint8)).save(root / "train" / "class_0" / "extra.png")
    make_loaders(cfg, [], 3, seed=0)
    assert len(reads) == 9 and np.load(cached(root)[0], mmap_mode="r").shape[0] == 9  # a new file: re-decoded


def test_tiny_imagenet_train_and_test_are_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_tiny_imagenet(tmp_path, n_classes=2, n_train=3)
    cache = tmp_path / "cache"
    cfg = DataConfig("tiny_imagenet", str(root), download=False, val_fraction=0.0, num_workers=0,
                     cache_dir=str(cache))
    reads = count_reads(monkeypatch)
    loaders = make_loaders(cfg, [], 2, seed=0, test=True)
    n = len(reads)
    assert n > 6 and {p.name.split("-")[1] for p in cache.glob("*.npy")} == {"train", "test"}
    x, _ = next(iter(loaders.train))
    assert x.shape[1:] == (3, 64, 64)
    make_loaders(cfg, [], 2, seed=0, test=True)
    assert len(reads) == n


def test_unwritable_cache_is_one_line(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "f", classes=2, per_class=2)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cfg = DataConfig("imagefolder", str(root), num_workers=0, cache_dir=str(blocker / "sub"))
    with pytest.raises(data.UserError, match=r"^cannot write the decoded-image cache in .*data.cache_dir"):
        make_loaders(cfg, [], 2, seed=0)


def test_a_full_disk_under_the_cache_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No room for the cache: one UserError before any image is decoded, no `.tmp` left (not SIGBUS, rc 135)."""
    root = make_imagefolder(tmp_path / "f", classes=2, per_class=2)
    cache = tmp_path / "cache"

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)  # the disk has no room for the cache's blocks
    reads = count_reads(monkeypatch)
    cfg = DataConfig("imagefolder", str(root), num_workers=0, cache_dir=str(cache))
    with pytest.raises(UserError, match=r"^cannot write the decoded-image cache in .*: No space left on device "
                                        r"\(\d.* needed\); set data.cache_dir"):
        make_loaders(cfg, [], 2, seed=0)
    assert not reads and not list(cache.iterdir()), "nothing decoded, no partial cache file"


def test_a_bad_image_while_decoding_leaves_no_progress_bar(tmp_path: Path) -> None:
    """On a terminal the progress bar is wiped when decoding stops, so the `error:` line that follows stands alone."""
    from search.data.decode_cache import decoded

    paths = [tmp_path / f"{i}.png" for i in range(3)]
    for p in paths:
        p.write_bytes(b"")  # the cache key reads their sizes and times; `read` below stands for decoding

    def read(p: Path) -> np.ndarray:
        return np.zeros((4, 4, 3) if p == paths[1] else (8, 8, 3), np.uint8)

    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as tty:
        with pytest.raises(UserError, match=r"is 4x4, expected 8x8"):
            decoded(paths, 8, read, tmp_path / "cache", "x", stream=tty)
        tty.flush()
        chunks = []
        while select.select([master], [], [], 0.5)[0]:
            chunks.append(os.read(master, 65536))
    os.close(master)
    err = b"".join(chunks).decode()
    assert "decoding x once" in err, "the bar was shown"
    assert err.rsplit("\r", 1)[-1].strip() == "" and "\n" not in err, "and wiped: nothing of it is left on a line"
    assert not list((tmp_path / "cache").glob("*")), "no partial cache file"
