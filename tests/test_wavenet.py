"""WaveNet decoder: shapes, causality, receptive field, conditioning (generation: test_generation.py)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import make_wavenet as make
from helpers import wavenet_inputs as inputs

from audio_vqvae.wavenet import WaveNet


def affected(model: WaveNet, pos: int, n_frames: int = 24) -> torch.Tensor:
    """Positions whose logits change at all when prev[:, pos] changes (float64: long paths change them little)."""
    model = model.double()
    prev, latents, g = inputs(model, 1, n_frames)
    other = prev.clone()
    other[:, pos] = (other[:, pos] + 97) % model.n_classes
    with torch.no_grad():
        diff = (model(prev, latents.double(), g.double()) - model(other, latents.double(), g.double())).abs()
    return diff.amax(dim=(0, 1)) > 0  # [T]


def test_forward_shape_and_fresh_loss():
    model = make()
    prev, latents, g = inputs(model, 3, 10)
    logits = model(prev, latents, g)
    assert logits.shape == (3, 256, 40)
    loss = F.cross_entropy(logits, prev)
    assert abs(loss.item() - math.log(256)) < 0.1
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_causal():
    model, s = make(), 30  # change sample s, i.e. prev at s+1
    changed = affected(model, s + 1)
    assert not changed[: s + 1].any()
    assert changed[s + 1 :].any()


@pytest.mark.parametrize("kernel_size", [2, 3])
def test_receptive_field_matches_perturbation(kernel_size):
    model, pos = make(kernel_size=kernel_size), 5
    assert model.receptive_field == (kernel_size - 1) * 2 * (1 + 2 + 4) + 1
    changed = affected(model, pos, n_frames=(pos + model.receptive_field) // model.hop + 4).nonzero()[:, 0]
    assert changed.min().item() == pos
    assert changed.max().item() == pos + model.receptive_field - 1


def test_local_and_global_conditioning_matter():
    model = make()
    prev, latents, g = inputs(model, 2, 6)
    with torch.no_grad():
        base = model(prev, latents, g)
        assert (model(prev, torch.randn_like(latents), g) - base).abs().max() > 1e-3
        assert (model(prev, latents, torch.randn_like(g)) - base).abs().max() > 1e-3
        # repeat upsampling: a frame's latent conditions exactly its hop samples
        other = latents.clone()
        other[:, :, 2] += 1.0
        changed = (model(prev, other, g) - base).abs().amax(dim=(0, 1)) > 1e-6
        assert changed[8:12].all() and not changed[:8].any()


def test_bad_input_raises():
    with pytest.raises(ValueError, match="upsample"):
        make(upsample="linear")
    model = make()
    prev, latents, g = inputs(model, 2, 5)
    with pytest.raises(ValueError, match="prev"):
        model(prev[:, :-1], latents, g)
    with pytest.raises(ValueError, match="g must"):
        model(prev, latents, None)
