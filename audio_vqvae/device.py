"""Device selection shared by the training, inference and evaluation apps."""
from __future__ import annotations

import torch


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` -> the local CUDA device when present, else CPU; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name}: CUDA is not available on this machine (use device=cpu or device=auto)")
    return device
