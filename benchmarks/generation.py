"""Generation throughput: incremental sampling (`WaveNet.generate`, each kernel) and the naive baseline that reruns
the parallel forward over the last receptive field for every sample."""
from __future__ import annotations

import torch
from measure import median_seconds
from torch import Tensor

from audio_vqvae.wavenet.model import WaveNet
from audio_vqvae.wavenet.sampling import generate, gumbel_like


def random_inputs(net: WaveNet, batch: int, n_samples: int, seed: int = 0) -> tuple[Tensor, Tensor | None]:
    """Latents [B, D, n_samples / hop] and speaker vectors [B, G] (None without global conditioning)."""
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, net.upsample.in_channels, -(-n_samples // net.hop), generator=gen)
    g = torch.randn(batch, net.global_channels, generator=gen) if net.global_channels else None
    return latents, g


def incremental_samples_per_second(net: WaveNet, kernel: str, batch: int, n_samples: int, repeats: int) -> float:
    """Aggregate samples/s (batch x samples / time) of `generate`, sampling every step; median of `repeats`,
    after a short warm-up run (which also loads or compiles the kernel)."""
    latents, g = random_inputs(net, batch, n_samples)
    generate(net, latents[..., :2], g, kernel=kernel)
    seconds = median_seconds(lambda: generate(net, latents, g, kernel=kernel), repeats, warmup=0)
    return batch * latents.shape[-1] * net.hop / seconds


def naive_window(net: WaveNet) -> int:
    """Samples the naive baseline runs the forward over per generated sample: the whole frames that hold the
    receptive field plus the current frame."""
    return (-(-net.receptive_field // net.hop) + 1) * net.hop


@torch.no_grad()
def naive_generate(net: WaveNet, latents: Tensor, g: Tensor | None, n_samples: int, start_class: int) -> Tensor:
    """Sample n_samples classes [B, n_samples], each from a parallel forward over the whole frames that hold its
    receptive field (what generation costs without the per-layer queues)."""
    batch, hop = latents.shape[0], net.hop
    window = naive_window(net) // hop
    classes = torch.full((batch, n_samples + 1), start_class, dtype=torch.long)  # classes[:, t] = input at step t
    for t in range(n_samples):
        f1 = t // hop + 1
        f0 = max(0, f1 - window)
        prev = torch.full((batch, (f1 - f0) * hop), start_class, dtype=torch.long)
        seen = classes[:, f0 * hop : t + 1]
        prev[:, : seen.shape[1]] = seen
        logits = net(prev, latents[..., f0:f1], g)[:, :, t - f0 * hop]  # [B, n_classes]
        classes[:, t + 1] = (logits + gumbel_like(logits.shape, logits.device)).argmax(1)
    return classes[:, 1:]


def naive_samples_per_second(net: WaveNet, n_samples: int, start_class: int) -> float:
    """Batch-1 samples/s of `naive_generate` over n_samples (one run: each sample is already many forwards)."""
    latents, g = random_inputs(net, 1, n_samples)
    naive_generate(net, latents, g, 2, start_class)  # warm-up
    return n_samples / median_seconds(lambda: naive_generate(net, latents, g, n_samples, start_class), 1, warmup=0)
