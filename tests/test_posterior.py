"""Posterior probe: windowed candidate scoring equals brute-force enumeration over the whole sequence."""
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import noise_signal, tiny_model_config

from audio_vqvae.evaluation.posterior import (
    conditional_posterior,
    probe_window,
    summarize,
)
from audio_vqvae.model import VQVAE


def tiny_model(upsample: str, codebook_size: int = 6, cond_layers: int = 0) -> VQVAE:
    torch.manual_seed(0)
    cfg = tiny_model_config()
    cfg["decoder"]["upsample"] = upsample
    cfg["decoder"]["cond_layers"] = cond_layers
    cfg["quantizer"]["codebook_size"] = codebook_size
    model = VQVAE.from_config(cfg, ["a", "b"]).eval()
    with torch.no_grad():  # spread the codes over the encoder's outputs so that they condition differently
        z = model.encoder(torch.randn(1, 1, 64 * model.hop) * 0.3)[0].t()
        model.quantizer.embed.copy_(z[torch.randperm(z.shape[0])[:codebook_size]] * 4)
    return model


def clip(n_frames: int, hop: int) -> torch.Tensor:
    return torch.from_numpy(noise_signal(n_frames * hop / 16000, seed=3))


@torch.no_grad()
def brute_force(model: VQVAE, wav: torch.Tensor, speaker: int, frame: int) -> torch.Tensor:
    """log p(z_t = k | x, z_-t) from the full-sequence log p(x | z) of every candidate: [K]."""
    target, prev = model.decoder_inputs(wav[: wav.shape[-1] // model.hop * model.hop])
    codes = model.quantizer.nearest(model.encode_latents(wav[None, None]))[0]
    g = model.speaker_embedding(torch.tensor([speaker]))
    log_lik = []
    for k in range(model.codebook_size):
        c = codes.clone()
        c[frame] = k
        logits = model.decoder(prev[None], model.quantizer.lookup(c[None]), g)
        log_lik.append(-F.cross_entropy(logits, target[None], reduction="sum"))
    return torch.stack(log_lik).log_softmax(0)


DECODERS = [("repeat", 0), ("transposed", 0), ("repeat", 2), ("transposed", 1)]  # (upsampling, conditioning stack)


@pytest.mark.parametrize("upsample,cond_layers", DECODERS)
def test_window_equals_brute_force_enumeration(upsample, cond_layers):
    model = tiny_model(upsample, cond_layers=cond_layers)
    wav = clip(12, model.hop)  # 192 samples, receptive field 15
    frames = [0, 1, 5, 10, 11]
    probe = conditional_posterior(model, wav, "b", frames, chunk=4)  # chunks of 4 over K = 6: a partial last chunk
    for row, t in enumerate(frames):
        expected = brute_force(model, wav, 1, t)
        atol = 1e-4 if cond_layers == 0 else 3e-4  # a stack widens the window: more float32 terms in its sums
        assert torch.allclose(probe.log_probs[row], expected, atol=atol), (t, probe.log_probs[row], expected)
    assert torch.allclose(probe.log_probs.exp().sum(1), torch.ones(len(frames)), atol=1e-5)
    assert probe.log_probs.exp().max(1).values.min() < 0.999  # the test is not trivially one-hot everywhere


@pytest.mark.parametrize("upsample,cond_layers", DECODERS)
def test_window_covers_every_logit_a_frame_moves(upsample, cond_layers):
    """Perturbing one frame's latent changes logits only inside [s0, s1), and the window is tight at its start."""
    model = tiny_model(upsample, cond_layers=cond_layers)
    wav = clip(12, model.hop)
    _, prev = model.decoder_inputs(wav[: wav.shape[-1] // model.hop * model.hop])
    codes = model.quantizer.nearest(model.encode_latents(wav[None, None]))[0]
    g = model.speaker_embedding(torch.tensor([0]))
    with torch.no_grad():
        base = model.decoder(prev[None], model.quantizer.lookup(codes[None]), g)
        for t in (0, 6, 11):
            lat = model.quantizer.lookup(codes[None]).clone()
            lat[..., t] += 1.0
            moved = (model.decoder(prev[None], lat, g) - base).abs().amax(1)[0] > 0  # [T]
            w = probe_window(model.decoder, t, 12)
            changed = moved.nonzero()[:, 0]
            assert changed.min() >= w.s0 and changed.max() < w.s1
            assert changed.min() == w.s0
            assert w.f0 * model.hop <= max(0, w.s0 - model.decoder.receptive_field + 1) and w.f1 * model.hop >= w.s1


def test_decoder_stores_its_upsample_span():
    assert tiny_model("repeat").decoder.upsample_span == (16, 16, 0)
    up = tiny_model("transposed").decoder.upsample
    assert tiny_model("transposed").decoder.upsample_span == (up.kernel_size[0], up.stride[0], up.padding[0])
    assert tiny_model("transposed").decoder.upsample_span == (32, 16, 8)


def test_summary_statistics():
    model = tiny_model("repeat")
    probe = conditional_posterior(model, clip(8, model.hop), 0, [2, 3, 4])
    s = summarize([probe], model.codebook_size)
    p = probe.log_probs.exp()
    assert s["n_positions"] == 3
    assert s["argmax_agreement"] == pytest.approx(float((p.argmax(1) == probe.codes).double().mean()))
    assert 0.0 <= s["entropy_nats"] <= math.log(model.codebook_size) + 1e-6
    assert s["entropy_bits"] == pytest.approx(s["entropy_nats"] / math.log(2))
    kl = -p[torch.arange(3), probe.codes].log().mean()
    assert s["kl_nats"] == pytest.approx(float(kl), rel=1e-4)
    assert s["kl_nats"] >= 0.0
