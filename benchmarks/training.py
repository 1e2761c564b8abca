"""Training throughput: full VQVAE forward + backward + Adam step on random fixed-length segments."""
from __future__ import annotations

import torch
from measure import median_seconds

from audio_vqvae.model import VQVAE


def training_samples_per_second(model: VQVAE, batch: int, segment: int, steps: int, warmup: int) -> float:
    """Median samples/s of one training step (batch x segment samples, float32); the warm-up steps also initialise
    the codebook (k-means on the first batch)."""
    gen = torch.Generator().manual_seed(0)
    wav = (0.3 * torch.randn(batch, 1, segment, generator=gen)).clamp_(-1, 1)
    speaker = torch.randint(0, len(model.speakers), (batch,), generator=gen)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        out = model(wav, speaker)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()

    return batch * segment / median_seconds(step, steps, warmup)
