"""Shared test fixtures: a tiny VQ-VAE checkpoint (CPU, builds and saves in well under a second) and test audio."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from omegaconf import OmegaConf

from audio_vqvae.checkpoint import save_checkpoint
from audio_vqvae.model import VQVAE

REPO = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 16000
SPEAKERS = ("p225", "p226", "p227")

TINY_MODEL: dict[str, Any] = OmegaConf.to_container(OmegaConf.load(REPO / "audio_vqvae" / "configs" / "model" / "tiny.yaml"))
"""configs/model/tiny.yaml: hop 16, 16 codes, WaveNet of 2 cycles x 3 layers with 8 residual channels."""


def tiny_model_config(**overrides: Any) -> dict[str, Any]:
    """A deep copy of TINY_MODEL with top-level keys replaced (e.g. `sample_rate=8000`)."""
    cfg = copy.deepcopy(TINY_MODEL)
    cfg.update(overrides)
    return cfg


def make_checkpoint(path: str | Path, speakers: tuple[str, ...] = SPEAKERS, seed: int = 0, **overrides: Any) -> Path:
    """Build a randomly initialised tiny VQVAE and save it as a checkpoint at `path`; returns the path.

    The encoder's output projection is calibrated on noise to zero-mean, unit-variance latents and the codebook is
    drawn from them, so encoding uses many codes and near-ties between codes are as rare as in a trained model.
    """
    torch.manual_seed(seed)
    cfg = tiny_model_config(**overrides)
    model = VQVAE.from_config(cfg, list(speakers)).eval()
    with torch.no_grad():
        proj = model.encoder.proj
        z = model.encoder(torch.randn(1, 1, 256 * model.hop) * 0.3)[0]  # [D, T_z]
        mean, std = z.mean(1), z.std(1)
        proj.weight.div_(std[:, None, None])
        proj.bias.sub_(mean).div_(std)
        z = model.encoder(torch.randn(1, 1, 64 * model.hop) * 0.3)[0].t()  # [T_z, D]
        model.quantizer.embed.copy_(z[torch.randperm(z.shape[0])[: model.codebook_size]])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, model.state_dict(), {"model": cfg}, list(speakers), step=0)
    return path


def noise_signal(seconds: float, sample_rate: int = SAMPLE_RATE, seed: int = 0, channels: int = 1) -> np.ndarray:
    """Band-limited-ish test signal: a few chirpy sines plus noise, float32 [T] (or [T, C]) in [-0.9, 0.9]."""
    rng = np.random.default_rng(seed)
    n = round(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    x = sum(0.2 * np.sin(2 * np.pi * f * t * (1 + 0.1 * np.sin(t))) for f in rng.uniform(80, 2000, 3))
    x = x + 0.1 * rng.standard_normal(n)
    x = np.clip(x, -0.9, 0.9).astype(np.float32)
    return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


def write_wav(path: str | Path, seconds: float, sample_rate: int = SAMPLE_RATE, seed: int = 0, **kw: Any) -> Path:
    """Write `noise_signal(...)` as a float WAV file at `path` (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, noise_signal(seconds, sample_rate, seed, **kw), sample_rate, subtype="FLOAT")
    return path
