"""Safe, atomic checkpoints: model weights + resolved config + speaker map + format version (+ resume state).

A checkpoint is a plain dict of tensors and Python containers, so it loads with `torch.load(weights_only=True)`;
a file that needs arbitrary unpickling is refused. Files are written to a temp file in the target directory,
fsynced, then renamed over the target, so a kill at any moment leaves the previous file intact.

A pretrained directory (the layout model hubs use) holds the same model without resume state and without pickle:
`model.safetensors` (weights) + `config.json` (format, version, resolved config, speakers, step, metrics).
`load_checkpoint` reads either, so every app and `VQVAE.from_checkpoint`/`from_pretrained` take both.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from .io import atomic_write

FORMAT_VERSION = 1
FORMAT_NAME = "audio-vqvae-checkpoint"
PRETRAINED_FORMAT = "audio-vqvae-pretrained"
PRETRAINED_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


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


def save_pretrained(directory: str | os.PathLike, checkpoint: dict[str, Any]) -> Path:
    """Export a loaded checkpoint (`load_checkpoint`'s dict) as a pretrained directory: weights as safetensors,
    everything else as JSON; no resume state. Each file is written atomically."""
    from safetensors.torch import save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"format": PRETRAINED_FORMAT, "format_version": PRETRAINED_VERSION}
    meta |= {k: checkpoint[k] for k in ("config", "speakers", "step", "metrics")}
    with atomic_write(directory / WEIGHTS_FILE, "wb") as f:
        f.write(save({k: v.contiguous() for k, v in checkpoint["model"].items()}))
    with atomic_write(directory / CONFIG_FILE) as f:
        json.dump(meta, f, indent=1)
    return directory


def load_pretrained(directory: str | os.PathLike) -> dict[str, Any]:
    """A pretrained directory -> the same dict as `load_checkpoint` (resume None); one-line errors otherwise."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    weights, config = directory / WEIGHTS_FILE, directory / CONFIG_FILE
    if not weights.is_file() or not config.is_file():
        raise FileNotFoundError(f"{directory}: not a pretrained model directory (needs {WEIGHTS_FILE} and {CONFIG_FILE})")
    try:
        meta = json.loads(config.read_text(encoding="utf-8"))
        state = load_file(weights)
    except (json.JSONDecodeError, SafetensorError, OSError) as e:
        raise ValueError(f"{directory}: not a readable pretrained model ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict) or meta.get("format") != PRETRAINED_FORMAT:
        raise ValueError(f"{config}: not an audio-vqvae pretrained config")
    if meta.get("format_version") != PRETRAINED_VERSION:
        raise ValueError(f"{config}: pretrained format version {meta.get('format_version')} is not supported "
                         f"(this code reads {PRETRAINED_VERSION})")
    return {"model": state, "config": meta["config"], "speakers": meta["speakers"], "step": meta["step"],
            "metrics": meta.get("metrics", {}), "resume": None}


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a checkpoint file with `weights_only=True`, or a pretrained directory
    (`load_pretrained`); clear one-line errors otherwise."""
    path = Path(path)
    if path.is_dir():
        return load_pretrained(path)
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
    """Hex SHA-256 of a file (identifies the checkpoint that produced a units file); of a pretrained directory,
    its weights file."""
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_FILE
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
