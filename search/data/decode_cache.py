"""Image files decoded once into a memory-mapped uint8 array, re-decoded when the files change."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TextIO

import numpy as np
from tqdm import tqdm

from blocks.holds import Check, problem
from blocks.text import one_line, short_bytes
from search.checkpoint import set_aside
from search.errors import UserError
from search.progress import is_terminal

FORMAT = "decoded-v1"  # bump when what is stored changes (a new key re-decodes every cache)
APP = "resnet-budget-search"  # the folder of this tool's caches under the user's cache folder


def default_dir() -> Path:
    """The per-user cache folder of decoded images: $XDG_CACHE_HOME/resnet-budget-search/decoded (~/.cache/...)."""
    # Not beside the images: shared and cluster datasets are often read-only (the XDG base directory spec
    # ignores a relative XDG_CACHE_HOME).
    base = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / APP / "decoded"


def cache_key(paths: Sequence[Path], size: int, prepare: str) -> str:
    """Hash of the file list, each file's size and mtime, the image side and the preparation: changed data, new key."""
    h = hashlib.sha256(f"{FORMAT}|{size}|{prepare}|{len(paths)}".encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"\n{p}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def decoded(paths: Sequence[Path], size: int, read: Callable[[Path], np.ndarray], cache_dir: Path, name: str,
            prepare: str = "", stream: TextIO | None = None) -> np.ndarray:
    """(N, size, size, 3) uint8 images of `paths`, from `cache_dir` or decoded now (with progress) and stored there.

    `read` gives one image already at size x size (decoded and prepared); `prepare` names what it does, for the key.
    Progress goes to `stream` (stderr): a bar on a terminal, one plain line otherwise.
    """
    path = Path(cache_dir) / f"{name}-{cache_key(paths, size, prepare)}.npy"
    out = stream if stream is not None else sys.stderr
    tmp, shape = None, (len(paths), size, size, 3)
    if path.is_file():
        held = _cached(path, shape)
        if not isinstance(held, str):
            return held
        print(f"decoded-image cache {path}: {held}; kept as {set_aside(path).name}, decoding again", file=out)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A new file of a random name, created exclusively: several workers may build at once (last wins), and
        # a link planted at a predictable name is never followed.
        fd, name_tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        tmp = Path(name_tmp)
        try:
            images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            _reserve(fd, tmp)
        finally:
            os.close(fd)
    except OSError as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write the decoded-image cache in '{cache_dir}': {exc.strerror or exc} "
                        f"({short_bytes(int(np.prod(shape)))} needed); set data.cache_dir to a writable folder "
                        f"with room for it") from None
    try:
        _decode_into(images, paths, size, read, f"decoding {name} once", out)
        images.flush()
        del images
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    for stale in path.parent.glob(f"{name}-*.npy"):  # earlier versions of the same data
        if stale != path:
            stale.unlink(missing_ok=True)
    return np.load(path, mmap_mode="r")


def _reserve(fd: int, tmp: Path) -> None:
    """Allocate every block of the memmap's file now, or raise OSError (ENOSPC) while that is still an error.

    open_memmap leaves the file sparse, and a store into a page the disk has no room for cannot fail: the
    kernel kills the process with SIGBUS (exit 135), leaving the temporary file behind. posix_fallocate
    reserves the blocks or says ENOSPC; without it (macOS), the free space is checked instead.
    """
    size = tmp.stat().st_size
    if hasattr(os, "posix_fallocate"):
        os.posix_fallocate(fd, 0, size)
    elif shutil.disk_usage(tmp.parent).free < size:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp.parent))


def _cached(path: Path, shape: tuple[int, ...]) -> np.ndarray | str:
    """The images stored at `path` when it holds `shape` uint8 images; why not, in one line, else.

    The key names the files, not what the cache holds: a cache truncated, overwritten or copied from other
    data would otherwise fail later inside numpy, during a trial.
    """
    try:
        images = np.load(path, mmap_mode="r")  # pickles are refused (allow_pickle is False)
    except (ValueError, EOFError, OSError) as e:  # truncated, not an .npy file, unreadable
        return f"it is truncated or not an image array ({one_line(e)[:200]})"
    size = "x".join(map(str, shape[1:]))
    why = problem(images, Check(np.ndarray, lambda a: a.shape == shape and a.dtype == np.uint8,
                                f"{shape[0]} {size} uint8 images"), "it")
    return images if why is None else f"{why} (it holds {images.shape} {images.dtype})"


def _decode_into(out: np.ndarray, paths: Sequence[Path], size: int, read: Callable[[Path], np.ndarray], desc: str,
                 stream: TextIO) -> None:
    """Fill `out` with the images of `paths`, showing progress on `stream`."""
    if is_terminal(stream):
        # leave=False: the bar is wiped when it closes, so an `error:` line after it stands on a line of its own.
        images: Iterable[Path] = tqdm(paths, desc=desc, unit="img", mininterval=2.0, leave=False, file=stream)
    else:  # a log file or a pipe: a bar's carriage returns would run into the next line
        print(f"{desc}: {len(paths):,} images", file=stream, flush=True)
        images = paths
    try:
        for i, p in enumerate(images):
            image = read(p)
            if image.shape != (size, size, 3):
                raise UserError(f"image '{p}' is {image.shape[1]}x{image.shape[0]}, expected {size}x{size}")
            out[i] = image
    finally:
        if isinstance(images, tqdm):
            images.close()

