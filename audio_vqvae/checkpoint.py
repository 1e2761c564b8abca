"""Safe, atomic checkpoints: model weights + resolved config + speaker map + format version (+ resume state).

A checkpoint is a plain dict of tensors and Python containers, so it loads with `torch.load(weights_only=True)`;
a file that needs arbitrary unpickling is refused. Files are written to a temp file in the target directory,
fsynced, then renamed over the target, so a kill at any moment leaves the previous file intact.
"""
from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from .io import atomic_write

FORMAT_VERSION = 1
FORMAT_NAME = "audio-vqvae-checkpoint"


def save_checkpoint(
    path: str | os.PathLike,
    model_state: dict[str, torch.Tensor],
    config: dict[str, Any],
    speakers: list[str],
    step: int,
    resume: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
) -> None:
    """Write a checkpoint atomically. `config` is the resolved run config as plain containers."""
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model": {k: v.detach().cpu() for k, v in model_state.items()},
        "config": config,
        "speakers": list(speakers),
        "step": int(step),
        "metrics": dict(metrics or {}),
        "resume": resume,
    }
    with atomic_write(path, "wb") as f:
        torch.save(payload, f)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a checkpoint with `weights_only=True`; clear one-line errors otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: refused: loading it needs arbitrary unpickling (weights_only=True): {first}") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise ValueError(f"{path}: not an audio-vqvae checkpoint")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format version {version} is not supported (this code reads {FORMAT_VERSION})")
    return payload


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (identifies the checkpoint that produced a units file)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
