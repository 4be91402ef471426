"""glibc's malloc told to keep the memory a CPU training step frees, for the next step to reuse.

A training step allocates its activations and gradients (megabytes each at batch 128) and frees them
all again. glibc's malloc serves an allocation over its mmap threshold from a mapping of its own and
unmaps it when freed; under that threshold it trims the heap's free top back to the kernel once it
exceeds the trim threshold. Either way the next step's tensors land on pages the kernel must fault in
and zero again: the MCU winner's step (batch 128, one thread) took 7,400-28,000 minor page faults. A
network of its shape faults 2,000-9,600 times in its median step with glibc's own thresholds and 0-0.5
times with the ones below (tests/search/test_malloc.py, 20 runs); a step that grows the heap to a new
peak still faults, as often as the heap's layout makes it. PyTorch's CPU tuning guide points to
jemalloc or tcmalloc for the same reason; mallopt(3) gets glibc's own allocator to reuse freed memory
in the running process, with no preloaded library: allocations up to 32 MiB (the most
M_MMAP_THRESHOLD takes on 64-bit) come from the heap, and its free top is kept.

The cost: the process keeps the peak it reached until it exits, as PyTorch's CUDA allocator does. It
is process-wide, so it is set once, only where training runs on the CPU, and never over a user's own
MALLOC_* or GLIBC_TUNABLES settings. Elsewhere (macOS, musl, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD = 32 * 2**20  # the largest glibc takes on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: never trim in practice
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")

_state: dict[str, bool] = {}


def keep_freed_memory() -> bool:
    """Set glibc's thresholds once (see the module docstring); whether they are set now."""
    if "set" not in _state:
        _state["set"] = _set_thresholds()
    return _state["set"]


def _set_thresholds() -> bool:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(k in os.environ for k in USER_SETTINGS):  # the user's own choice stands
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
