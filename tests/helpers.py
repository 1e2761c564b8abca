"""Shared test fixtures: a tiny VQ-VAE checkpoint (CPU, builds and saves in well under a second) and test audio."""
from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from omegaconf import OmegaConf

from audio_vqvae.audio import load_audio
from audio_vqvae.checkpoint import save_checkpoint
from audio_vqvae.f0 import F0Stats
from audio_vqvae.model import VQVAE
from audio_vqvae.wavenet.model import WaveNet

REPO = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 16000
SPEAKERS = ("p225", "p226", "p227")
LATENT_DIM = 4
"""Latent size of `make_wavenet`'s conditioning."""

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


TINY_SPEECH: dict[str, Any] = OmegaConf.to_container(
    OmegaConf.load(REPO / "audio_vqvae" / "configs" / "speech" / "tiny.yaml"))
"""configs/speech/tiny.yaml: F0 at 200 frames per second, a harmonic-plus-noise decoder of 8 channels."""

SPEECH_HOP = 160
"""Unit hop of `tiny_speech_checkpoint` (the tiny encoder with strides 2, 4, 4, 5): 2 F0 frames per unit."""


def tiny_speech_checkpoint(path: str | Path, speakers: tuple[str, ...] = SPEAKERS, seed: int = 0) -> Path:
    """`make_checkpoint` with a hop of SPEECH_HOP plus an untrained speech path (`VQVAE.attach_speech` of
    configs/speech/tiny.yaml) whose speakers have log-F0 statistics around 120, 200 and 160 Hz; returns the path."""
    encoder = {**TINY_MODEL["encoder"], "strides": [2, 4, 4, 5], "kernel_sizes": [4, 8, 8, 10]}
    make_checkpoint(path, speakers, seed, encoder=encoder)
    model = VQVAE.from_checkpoint(str(path))
    torch.manual_seed(seed)
    model.attach_speech(TINY_SPEECH)
    model.speech.set_stats({s: F0Stats(np.log(hz), 0.1) for s, hz in zip(speakers, (120.0, 200.0, 160.0))})
    save_checkpoint(path, model.state_dict(), {"model": {**model.config["model"], "speech": TINY_SPEECH}},
                    list(speakers), step=0)
    return Path(path)


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


def tone(seconds: float, sr: int = 16000, channels: int = 1, freq: float = 220.0, amp: float = 0.5) -> np.ndarray:
    """A sine [T, C] float32; channel c is at freq * (c + 1), so a downmix is easy to predict."""
    t = np.arange(round(seconds * sr)) / sr
    return np.stack([amp * np.sin(2 * np.pi * freq * (c + 1) * t) for c in range(channels)], axis=1).astype(np.float32)


def write_mixed_corpus(d: Path) -> Path:
    """Four good files of different lengths (one stereo, one at 22.05 kHz) under spk1/ and spk2/, an empty file, a
    non-audio file and one shorter than a frame; returns d."""
    write_wav(d / "spk1" / "a.wav", 0.5, seed=1)
    write_wav(d / "spk1" / "b.wav", 0.31, seed=2, channels=2)
    write_wav(d / "spk2" / "c.wav", 0.77, seed=3, sample_rate=22050)
    write_wav(d / "spk2" / "d.wav", 0.2, seed=4)
    (d / "empty.wav").write_bytes(b"")
    (d / "text.flac").write_text("not audio")
    sf.write(d / "short.wav", np.zeros(10, np.float32), 16000)
    return d


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def assert_same_units(codes: np.ndarray, model: VQVAE, path: Path, gain: float = 1.0) -> None:
    """codes equal whole-file `model.encode` at every frame but those whose two nearest codes are tied to float32
    precision (kernels chosen per input shape may round differently; see extract.encode_utterances)."""
    wav = load_audio(path, model.sample_rate) * gain
    whole = model.encode(wav, model.sample_rate).numpy()
    with torch.inference_mode():
        z = model.encode_latents(wav[None, None])[0].t().double()  # [T_z, D]
    e = model.quantizer.codebook.double()
    d2 = torch.cdist(z, e).square().topk(2, largest=False).values  # [T_z, 2] squared distances
    tied = ((d2[:, 1] - d2[:, 0]) < 1e-6 * (z.square().sum(1) + e.square().sum(1).max())).numpy()
    assert codes.shape == whole.shape == (wav.shape[-1] // model.hop,)
    assert ((codes == whole) | tied).all(), f"{((codes != whole) & ~tied).sum()} frames differ"
    assert tied.mean() < 1e-3


def make_wavenet(
    kernel_size: int = 2, layers_per_cycle: int = 3, cycles: int = 2, upsample: str = "repeat", hop: int = 4,
    global_channels: int = 5, excitation_harmonics: int = 0, input_dropout: float = 0.0,
) -> WaveNet:
    """A small seeded WaveNet (8 residual channels) conditioned on LATENT_DIM latents."""
    torch.manual_seed(0)
    return WaveNet(
        n_classes=256, residual_channels=8, gate_channels=16, skip_channels=12, kernel_size=kernel_size,
        layers_per_cycle=layers_per_cycle, cycles=cycles, cond_channels=6, upsample=upsample,
        latent_dim=LATENT_DIM, hop=hop, global_channels=global_channels, excitation_harmonics=excitation_harmonics,
        input_dropout=input_dropout,
    )


def wavenet_inputs(
    model: WaveNet, batch: int, n_frames: int, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """prev [B, T], latents [B, D, T_z], g [B, G] (None without global conditioning)."""
    gen = torch.Generator().manual_seed(seed)
    prev = torch.randint(0, model.n_classes, (batch, n_frames * model.hop), generator=gen)
    latents = torch.randn(batch, LATENT_DIM, n_frames, generator=gen)
    g = torch.randn(batch, model.global_channels, generator=gen) if model.global_channels else None
    return prev, latents, g


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_script(script: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """tests/<script> with `args` under torchrun, 2 processes on this machine (gloo); the finished process."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", str(Path(__file__).with_name(script)), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, check=False)


def torchrun(out: Path, config: str, overrides: list[str], env: dict[str, str] | None = None) -> list[dict]:
    """Train config `train`, `prior` or `speech_train` with 2 gloo processes (tests/ddp_worker.py); each rank's final
    state dict."""
    proc = torchrun_script("ddp_worker.py", [str(out), config, *overrides], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]
