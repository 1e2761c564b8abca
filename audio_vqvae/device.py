"""Process setup shared by the training, inference and evaluation apps: device selection, the allocator, and the
console-app wrapper (logging, one-line errors)."""
from __future__ import annotations

import ctypes
import ctypes.util

import torch

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc mallopt parameters (malloc.h)
MAX_TRIM = 2**31 - 1  # mallopt takes an int


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` -> the local CUDA device when present, else CPU; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name}: CUDA is not available on this machine (use device=cpu or device=auto)")
    return device


def retain_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse (no per-block mmap, no trimming) for the rest of the process.

    By default glibc serves each large block (a training step's activations, an encoder layer's output: megabytes)
    with a fresh mmap and returns it to the OS when freed, so every step page-faults its working set in again. Keeping
    it makes CPU training 13-25 % and unit extraction about 2x faster (benchmarks/README.md) for a few % more peak RSS.
    True if applied; False where the C library is not glibc (nothing changes there).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, MAX_TRIM))
    except (OSError, AttributeError, TypeError):
        return False
