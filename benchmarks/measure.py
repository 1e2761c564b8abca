"""Timing primitives: median wall time of repeated runs, the machine's float32 matmul rate, and its description."""
from __future__ import annotations

import json
import os
import platform
import re
import resource
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import torch

from audio_vqvae.io import atomic_write


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of `repeats` calls of fn after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_gflops(n: int, repeats: int) -> float:
    """float32 torch.mm rate of an n x n by n x n product (2 n^3 FLOPs), GFLOP/s, median of `repeats`."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    seconds = median_seconds(lambda: torch.mm(a, b, out=out), repeats, warmup=2)
    return 2 * n**3 / seconds / 1e9


def onednn_gflops(n: int, repeats: int) -> float:
    """The same n x n product as a 1x1 conv1d (oneDNN, which the convolutions use), GFLOP/s, median of `repeats`."""
    x, w = torch.randn(1, n, n), torch.randn(n, n, 1)
    seconds = median_seconds(lambda: torch.nn.functional.conv1d(x, w), repeats, warmup=2)
    return 2 * n**3 / seconds / 1e9


def load_average() -> float:
    """1-minute load average (other work on the machine skews the timings)."""
    return os.getloadavg()[0]


def cpu_model() -> str:
    """`lscpu`'s model name (platform.processor() where lscpu is missing)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")]
    return names[0] if names else "unknown"


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numba": numba.__version__,
        "numba_threads": numba.get_num_threads(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def own_peak_rss_mb() -> float:
    """Peak RSS of this process's own memory, MiB: Linux's VmHWM (ru_maxrss carries over the parent's peak into a
    process it starts, through fork and exec); `peak_rss_mb` where /proc is missing."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return peak_rss_mb()
    return int(re.search(r"VmHWM:\s*(\d+) kB", status).group(1)) / 1024


def cpu_slug(cpu: str) -> str:
    """A CPU model name for file names: lower case, runs of other characters as "-"."""
    return re.sub(r"[^a-z0-9]+", "-", cpu.lower()).strip("-")


def write_results(r: dict[str, Any], path: Path) -> None:
    """Write r as JSON to path (atomically, parent directories created) and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        json.dump(r, f, indent=1)
    print(f"\nwrote {path}")
