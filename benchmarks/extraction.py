"""Unit extraction throughput: encoder + nearest code over batches of audio pieces, whole and per layer."""
from __future__ import annotations

from collections.abc import Callable

import torch
from flops import extraction_flops_per_second
from measure import median_seconds
from torch import Tensor, nn

from audio_vqvae.model import VQVAE


def audio_batch(model: VQVAE, pieces: int, seconds: float) -> Tensor:
    """Speech-level noise [pieces, 1, seconds * sample_rate] at the model rate."""
    gen = torch.Generator().manual_seed(0)
    return (0.3 * torch.randn(pieces, 1, round(seconds * model.sample_rate), generator=gen)).clamp_(-1, 1)


def extract(model: VQVAE, wav: Tensor) -> Tensor:
    """Codes [B, T // hop] of a model-rate batch: `encode_latents` then the quantizer's nearest code."""
    return model.quantizer.nearest(model.encode_latents(wav))


def real_time_factor(model: VQVAE, pieces: int, seconds: float, repeats: int) -> dict[str, float]:
    """Audio seconds extracted per wall-clock second over `pieces` x `seconds` (one batch), with its FLOP rate."""
    wav = audio_batch(model, pieces, seconds)
    elapsed = median_seconds(lambda: extract(model, wav), repeats)
    audio = pieces * seconds
    return {"audio_seconds": audio, "x_real_time": audio / elapsed,
            "gflops": extraction_flops_per_second(model) * audio / elapsed / 1e9}


def _macs_per_output(stage: nn.Module) -> int:
    """Multiply-adds per output position of a conv block: its convolution's weight size."""
    return next(m for m in stage.modules() if isinstance(m, nn.Conv1d)).weight.numel()


@torch.inference_mode()
def layer_rates(model: VQVAE, pieces: int, seconds: float, repeats: int) -> list[dict[str, float | str]]:
    """GFLOP/s of each encoder stage (the strided conv blocks with their activation, the projection) and of the
    nearest-code search, each timed alone on its real input."""
    x, rows = audio_batch(model, pieces, seconds), []
    stages = [*model.encoder.blocks, model.encoder.proj]
    for i, stage in enumerate(stages):
        y = stage(x)
        flops = 2.0 * _macs_per_output(stage) * y.shape[0] * y.shape[-1]
        name = f"conv{i + 1}" if i < len(stages) - 1 else "proj"
        rows.append(_stage_rate(name, f"{x.shape[1]}->{y.shape[1]}", stage, x, flops, repeats))
        x = y
    flops = 2.0 * model.codebook_size * x.shape[1] * x.shape[0] * x.shape[-1]
    rows.append(_stage_rate("nearest", f"{x.shape[1]}->{model.codebook_size}", model.quantizer.nearest, x, flops,
                            repeats))
    return rows


def _stage_rate(name: str, shape: str, stage: Callable[[Tensor], Tensor], x: Tensor, flops: float,
                repeats: int) -> dict[str, float | str]:
    """One row of `layer_rates`: stage(x) timed alone."""
    elapsed = median_seconds(lambda: stage(x), repeats)
    return {"layer": name, "shape": shape, "gflops": flops / elapsed / 1e9, "ms": 1e3 * elapsed}
