"""Where and in which precision a model runs: the device, native bf16, channels_last, autocast, torch.compile."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import UserError

# CPU flags of native bf16 arithmetic (Linux /proc/cpuinfo names): AVX512-BF16 (Zen 4, Cooper Lake)
# and AMX-BF16 (Sapphire Rapids). Without them oneDNN emulates bf16 and autocast is slower than fp32.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def resolve_device(name: str = "auto") -> torch.device:
    """auto = CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device is available here (use --device cpu or auto)")
    return torch.device(name)


def cpu_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo does not exist)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def native_bf16(device: torch.device, flags: set[str] | None = None) -> bool:
    """Whether `device` runs bf16 matmuls and convolutions natively (CUDA: Ampere or newer)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return bool(set(BF16_CPU_FLAGS) & (cpu_flags() if flags is None else flags))
    return False


def use_amp(amp: bool | str, device: torch.device) -> bool:
    """Resolve train.amp (auto | true | false) for `device`: auto = native bf16 only."""
    return native_bf16(device) if amp == "auto" else bool(amp)


def autocast(device: torch.device, amp: bool | str) -> Any:
    """bf16 autocast on any device when train.amp resolves to true there; fp32 otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp(amp, device))


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move a model to `device` in channels_last (NHWC) memory format, the fast layout for oneDNN and cuDNN."""
    return model.to(device).to(memory_format=torch.channels_last)


def compiled(model: nn.Module, on: bool) -> Any:
    """torch.compile(model) when `on` (the parameters stay shared, so checkpoints hold the plain model)."""
    return torch.compile(model) if on else model


def sync(device: torch.device) -> None:
    """Wait for queued kernels, so that a clock read after it measures them (CUDA runs them asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def to_device(x: torch.Tensor, y: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Move a batch to `device` in channels_last (non-blocking: a copy from pinned memory overlaps compute)."""
    return x.to(device, non_blocking=True, memory_format=torch.channels_last), y.to(device, non_blocking=True)
