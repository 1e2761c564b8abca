"""The WaveNet's F0 levers (issue 19, item 3): an excitation input (sine harmonics where voiced) and corrupted teacher
forcing (past samples dropped in training), in the parallel forward, both generation kernels and VQVAE.decode."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import TINY_MODEL, make_checkpoint
from helpers import make_wavenet as make
from helpers import wavenet_inputs as inputs

from audio_vqvae.f0 import harmonics
from audio_vqvae.model import VQVAE
from audio_vqvae.synthesis import Request, check_f0_request
from audio_vqvae.wavenet import sampling as generation
from audio_vqvae.wavenet.sampling import generate

SR = 16000


def sines(model, batch: int, n_frames: int, seed: int = 2) -> torch.Tensor:
    """An excitation [B, H, T] of random voiced stretches at random F0 (per sample: hop 1)."""
    gen = torch.Generator().manual_seed(seed)
    T = n_frames * model.hop
    f0 = torch.rand(batch, T, generator=gen) * 300 + 80
    voiced = torch.rand(batch, -(-T // 8), generator=gen).repeat_interleave(8, 1)[:, :T] > 0.3
    return harmonics(f0, voiced, SR, 1, model.excitation_harmonics)


@pytest.mark.parametrize("kernel", ["torch", "numba"])
def test_teacher_forced_generate_with_an_excitation_equals_forward(kernel, monkeypatch):
    monkeypatch.setattr(generation, "CHUNK_SAMPLES", 20)  # several chunks, the last one partial
    model = make(3, 3, 2, "repeat", 4, 5, excitation_harmonics=3)
    prev, latents, g = inputs(model, 3, 31)
    e = sines(model, 3, 31)
    with torch.no_grad():
        expected = model(prev, latents, g, e)
        assert (expected - model(prev, latents, g, torch.zeros_like(e))).abs().max() > 1e-3  # it is used
    got = generate(model, latents, g, teacher=prev, kernel=kernel, excitation=e)
    assert (got - expected).abs().max().item() < 1e-4


def test_the_excitation_of_sample_t_reaches_logit_t_and_later_only():
    model = make(2, 3, 2, "repeat", 4, 5, excitation_harmonics=2).double()
    prev, latents, g = inputs(model, 1, 16)
    e = sines(model, 1, 16).double()
    other = e.clone()
    other[..., 30] += 1.0
    with torch.no_grad():
        diff = (model(prev, latents.double(), g.double(), e) - model(prev, latents.double(), g.double(), other))
    changed = diff.abs().amax(dim=(0, 1)).nonzero()[:, 0]
    assert changed.min() == 30 and changed.max() == 30 + model.receptive_field - 1


def test_input_dropout_corrupts_training_only_and_a_lever_off_adds_no_parameters():
    plain, dropped = make(input_dropout=0.0), make(input_dropout=0.5)
    assert plain.state_dict().keys() == dropped.state_dict().keys()
    assert "excitation_proj.weight" in make(excitation_harmonics=4).state_dict()
    assert not any(k.startswith("excitation") for k in plain.state_dict())
    prev, latents, g = inputs(plain, 2, 20)
    dropped.load_state_dict(plain.state_dict())
    plain.eval(), dropped.eval()
    with torch.no_grad():
        torch.testing.assert_close(dropped(prev, latents, g), plain(prev, latents, g), rtol=0, atol=0)
        dropped.train()
        torch.manual_seed(0)
        a = dropped(prev, latents, g)
        torch.manual_seed(0)
        assert torch.equal(a, dropped(prev, latents, g))  # reproducible under a seed
        assert (a - plain(prev, latents, g)).abs().max() > 1e-3


def test_bad_excitations_and_settings_raise():
    model = make(excitation_harmonics=2)
    prev, latents, g = inputs(model, 2, 5)
    with pytest.raises(ValueError, match="excitation must be given iff"):
        model(prev, latents, g)
    with pytest.raises(ValueError, match=r"excitation must be \[B, H, T_z\*hop\]"):
        model(prev, latents, g, torch.zeros(2, 2, 7))
    with pytest.raises(ValueError, match="excitation must be given iff"):
        make()(prev, latents, g, torch.zeros(2, 2, 20))
    with pytest.raises(ValueError, match="decoder.input_dropout"):
        make(input_dropout=1.0)


def excited_checkpoint(path) -> VQVAE:
    """The tiny VQ-VAE at 100 units/s (hop 160: two 200 Hz F0 frames per unit) with a 4-harmonic excitation."""
    encoder = {**TINY_MODEL["encoder"], "strides": [2, 4, 4, 5], "kernel_sizes": [4, 8, 8, 10]}
    decoder = {**TINY_MODEL["decoder"], "excitation_harmonics": 4}
    return VQVAE.from_checkpoint(str(make_checkpoint(path, encoder=encoder, decoder=decoder)))


def test_a_vqvae_with_an_excitation_trains_on_its_own_contour_and_decodes_given_one(tmp_path):
    model = excited_checkpoint(tmp_path / "vq.pt")
    t = np.arange(SR // 2) / SR
    wav = (0.5 * np.sin(2 * np.pi * 150 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    out = model.train()(torch.from_numpy(wav)[None, None], torch.tensor([1]))
    out.loss.backward()
    assert model.decoder.excitation_proj.weight.grad.abs().sum() > 0  # the tracked contour reached the decoder
    model.eval()
    contour = model.f0_contour(model.prepare(wav, SR).numpy())
    assert contour[1].mean() > 0.9 and abs(np.median(contour[0][contour[1]]) - 150) < 2
    e = model.wavenet_excitation(*(torch.from_numpy(a)[None] for a in contour), len(wav))
    assert e.shape == (1, 4, len(wav)) and 0.99 < float(e.abs().max()) <= 1.0  # unit-amplitude sines
    codes = model.encode(wav, SR)
    alone = model.decode(codes, "p226", greedy=True, decoder="wavenet", f0=contour)
    short = (contour[0][: 2 * 10], contour[1][: 2 * 10])
    both = model.decode([codes, codes[:10]], ["p226", "p225"], greedy=True, f0=[contour, short])
    assert torch.equal(both[0], alone) and both[1].shape == (10 * model.hop,)
    assert torch.equal(model.convert(wav, SR, "p226", greedy=True, f0="source"), alone)
    with pytest.raises(ValueError, match="no contour given and this checkpoint has no speech path"):
        model.decode(codes, "p226", decoder="wavenet")
    with pytest.raises(ValueError, match="f0=mapped needs the speakers' log-F0 statistics"):
        model.convert(wav, SR, "p226")


def test_generate_gives_an_excited_wavenet_the_source_contour_and_refuses_what_needs_a_speech_path(tmp_path):
    excited = excited_checkpoint(tmp_path / "vq.pt")
    plain = VQVAE.from_checkpoint(str(make_checkpoint(tmp_path / "plain.pt")))
    assert check_f0_request(excited, Request(paths=["a.wav"])) == (True, "source")
    assert check_f0_request(excited, Request(paths=["a.wav"], f0="source")) == (True, "source")
    assert check_f0_request(plain, Request(paths=["a.wav"])) == (False, "mapped")
    with pytest.raises(ValueError, match="--f0 mapped: this checkpoint has no speech path"):
        check_f0_request(excited, Request(paths=["a.wav"], f0="mapped"))
    with pytest.raises(ValueError, match="--f0 source: this checkpoint has no speech path"):
        check_f0_request(plain, Request(paths=["a.wav"], f0="source"))
