"""WaveNet decoder: shapes, causality, receptive field, conditioning (generation: test_generation.py)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import LATENT_DIM
from helpers import make_wavenet as make
from helpers import wavenet_inputs as inputs

from audio_vqvae.wavenet.model import WaveNet


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


@pytest.mark.parametrize("upsample", ["repeat", "transposed"])
def test_conditioning_stack_window_equals_full_conditioning(upsample):
    """With a conditioning stack each frame's conditioning sees its neighbours; a window computed from the frames
    plus the stack's reach is exact (what incremental generation relies on), and the stack does change it."""
    torch.manual_seed(0)
    model = WaveNet(n_classes=256, residual_channels=8, gate_channels=16, skip_channels=12, kernel_size=2,
                    layers_per_cycle=3, cycles=1, cond_channels=6, upsample=upsample, latent_dim=LATENT_DIM, hop=4,
                    global_channels=0, cond_layers=2)
    latents = torch.randn(1, LATENT_DIM, 15)
    per_frame = model.hop // model.cond_rate
    with torch.no_grad():
        full = model.conditioning(latents, None)
        for f0, f1 in [(0, 3), (4, 9), (12, 15)]:
            window = model.conditioning_window(latents, None, f0, f1)
            torch.testing.assert_close(window, full[..., f0 * per_frame : f1 * per_frame], rtol=0, atol=1e-6)
        moved = latents.clone()
        moved[..., 7] += 1.0
        changed = (model.conditioning(moved, None) - full).abs().amax((0, 1, 2)) > 0
    frames = changed.nonzero()[:, 0] // per_frame
    assert frames.min() <= 7 - model.cond_reach and frames.max() >= 7 + model.cond_reach
