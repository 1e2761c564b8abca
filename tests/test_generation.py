"""Incremental generation: teacher-forced == the parallel forward, greedy, sampling lengths and seeds, both kernels."""
from __future__ import annotations

import pytest
import torch
from helpers import make_wavenet as make
from helpers import wavenet_inputs as inputs

from audio_vqvae.wavenet import sampling as generation
from audio_vqvae.wavenet.sampling import generate

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


def test_bad_arguments_raise():
    model = make()
    prev, latents, g = inputs(model, 2, 5)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, latents, g, temperature=0.0)
    with pytest.raises(ValueError, match="kernel"):
        generate(model, latents, g, kernel="cuda")
    with pytest.raises(ValueError, match="start_class"):
        generate(model, latents, g, start_class=256)
    with pytest.raises(ValueError, match="teacher"):
        generate(model, latents, g, teacher=prev + 256)


def test_head_weights_are_the_head_convs_by_name():
    """The samplers' named head weights are the head's hidden and logit 1x1 convs (as the forward pass uses them)."""
    net = make()
    head = net.head_weights()
    skip = torch.randn(2, net.skip_channels, 5)
    hidden = torch.relu(torch.einsum("os,bst->bot", head.hidden_w, torch.relu(skip)) + head.hidden_b[:, None])
    logits = torch.einsum("os,bst->bot", head.logit_w, hidden) + head.logit_b[:, None]
    torch.testing.assert_close(logits, net.head(skip))
    assert head.logit_w.shape == (net.n_classes, net.skip_channels)


def test_a_changed_head_layout_fails_loudly():
    """A head the samplers cannot read (here one more layer) is an error naming the layout, not wrong samples."""
    net = make()
    net.head = torch.nn.Sequential(*net.head, torch.nn.Identity())
    with pytest.raises(TypeError, match="WaveNet.head must be"):
        generation.step_weights(net)
