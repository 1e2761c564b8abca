"""WaveNet decoder: shapes, causality, receptive field, incremental == parallel, sampling, conditioning."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from audio_vqvae import generation
from audio_vqvae.generation import generate
from audio_vqvae.wavenet import WaveNet

LATENT_DIM = 4


def make(
    kernel_size: int = 2, layers_per_cycle: int = 3, cycles: int = 2, upsample: str = "repeat", hop: int = 4,
    global_channels: int = 5,
) -> WaveNet:
    torch.manual_seed(0)
    return WaveNet(
        n_classes=256, residual_channels=8, gate_channels=16, skip_channels=12, kernel_size=kernel_size,
        layers_per_cycle=layers_per_cycle, cycles=cycles, cond_channels=6, upsample=upsample,
        latent_dim=LATENT_DIM, hop=hop, global_channels=global_channels,
    )


def inputs(model: WaveNet, batch: int, n_frames: int, seed: int = 1) -> tuple[Tensor, Tensor, Tensor | None]:
    """prev [B, T], latents [B, D, T_z], g [B, G] (None without global conditioning)."""
    gen = torch.Generator().manual_seed(seed)
    prev = torch.randint(0, model.n_classes, (batch, n_frames * model.hop), generator=gen)
    latents = torch.randn(batch, LATENT_DIM, n_frames, generator=gen)
    g = torch.randn(batch, model.global_channels, generator=gen) if model.global_channels else None
    return prev, latents, g


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


CONFIGS = [  # kernel_size, layers_per_cycle, cycles, upsample, hop, global_channels
    (2, 3, 2, "repeat", 4, 5),
    (3, 2, 3, "transposed", 4, 5),
    (2, 4, 1, "transposed", 3, 5),
    (3, 3, 1, "repeat", 4, 0),
]


@pytest.mark.parametrize("kernel", ["torch", "numba"])
@pytest.mark.parametrize("config", CONFIGS)
def test_teacher_forced_generate_equals_forward(config, kernel, monkeypatch):
    monkeypatch.setattr(generation, "CHUNK_SAMPLES", 20)  # several chunks, the last one partial
    k, layers, cycles, upsample, hop, global_channels = config
    model = make(k, layers, cycles, upsample, hop, global_channels)
    prev, latents, g = inputs(model, 3, 31)
    with torch.no_grad():
        expected = model(prev, latents, g)
    chunks = []
    got = generate(model, latents, g, teacher=prev, kernel=kernel, progress=chunks.append)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < 1e-4
    assert sum(chunks) == prev.shape[1] and len(chunks) > 1


@pytest.mark.parametrize("kernel", ["torch", "numba"])
def test_greedy_is_deterministic_and_low_temperature_is_greedy(kernel):
    model = make(upsample="transposed")
    _, latents, g = inputs(model, 2, 12)
    first = generate(model, latents, g, greedy=True, kernel=kernel)
    assert torch.equal(first, generate(model, latents, g, greedy=True, kernel=kernel))
    assert torch.equal(first, generate(model, latents, g, temperature=1e-6, kernel=kernel))


@pytest.mark.parametrize("kernel", ["torch", "numba"])
def test_sampling_shapes_lengths_and_seed(kernel):
    model = make()
    _, latents, g = inputs(model, 3, 10)
    lengths = torch.tensor([40, 17, 3])
    chunks = []
    torch.manual_seed(7)
    a = generate(model, latents, g, lengths=lengths, start_class=100, progress=chunks.append, kernel=kernel)
    assert a.shape == (3, 40) and a.dtype == torch.long
    assert 0 <= a.min() and a.max() < 256
    assert sum(chunks) == 40
    torch.manual_seed(7)
    assert torch.equal(a, generate(model, latents, g, lengths=lengths, start_class=100, kernel=kernel))
    torch.manual_seed(8)
    assert not torch.equal(a, generate(model, latents, g, lengths=lengths, start_class=100, kernel=kernel))

    torch.manual_seed(7)
    short = generate(model, latents, g, lengths=torch.tensor([9, 17, 3]), start_class=100, kernel=kernel)
    assert torch.equal(short[:, :17], a[:, :17])  # same noise, same samples up to the longest item
    assert (short[:, 17:] == 100).all()  # stopped after the longest item


def test_kernels_sample_alike():
    model = make()
    _, latents, g = inputs(model, 2, 8)
    torch.manual_seed(3)
    a = generate(model, latents, g, kernel="torch")
    torch.manual_seed(3)
    b = generate(model, latents, g, kernel="numba")
    assert (a == b).float().mean() > 0.9  # the same Gumbel noise; float rounding may flip a rare near-tie


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
    with pytest.raises(ValueError, match="temperature"):
        generate(model, latents, g, temperature=0.0)
    with pytest.raises(ValueError, match="kernel"):
        generate(model, latents, g, kernel="cuda")
    with pytest.raises(ValueError, match="start_class"):
        generate(model, latents, g, start_class=256)
    with pytest.raises(ValueError, match="teacher"):
        generate(model, latents, g, teacher=prev + 256)


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
