"""VQVAE: straight-through gradients, ELBO bookkeeping, time-jitter, overfitting one clip, encode/decode API."""
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_model_config

from audio_vqvae.audio import mu_law_encode
from audio_vqvae.model import VQVAE, change_speed, kl_nats, time_jitter


def tiny_config(**quantizer):
    """configs/model/tiny.yaml (hop 16) with a gradient-trained 8-code codebook unless overridden."""
    cfg = tiny_model_config()
    cfg["quantizer"].update(codebook_size=8, ema=False, init="none", restart_after=0)
    cfg["quantizer"].update(quantizer)
    return cfg


def make(speakers=("a", "b"), **quantizer) -> VQVAE:
    torch.manual_seed(0)
    return VQVAE.from_config(tiny_config(**quantizer), list(speakers))


def clip(T=512, seed=1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(T) / 16000
    return (0.5 * torch.sin(2 * math.pi * 220 * t) + 0.05 * torch.randn(T, generator=g)).reshape(1, 1, T)


def test_reconstruction_gradient_reaches_encoder_through_straight_through():
    model = make()
    out = model(clip(), torch.tensor([0]))
    out.reconstruction_loss.backward()
    grad = model.encoder.blocks[0][0][1].weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_commitment_gradient_reaches_encoder_not_codebook_and_codebook_loss_the_reverse():
    model = make()
    out = model(clip(), torch.tensor([0]))
    codebook = [p for n, p in model.quantizer.named_parameters()]
    assert codebook, "codebook is a parameter when ema=False"
    g_enc, *g_cb = torch.autograd.grad(out.commitment_loss, [model.encoder.proj.weight, *codebook], allow_unused=True)
    assert g_enc.abs().sum() > 0 and all(g is None or g.abs().sum() == 0 for g in g_cb)
    out = model(clip(), torch.tensor([0]))
    g_enc, *g_cb = torch.autograd.grad(out.codebook_loss, [model.encoder.proj.weight, *codebook], allow_unused=True)
    assert (g_enc is None or g_enc.abs().sum() == 0) and any(g is not None and g.abs().sum() > 0 for g in g_cb)


def test_elbo_equals_minus_summed_cross_entropy_minus_tz_log_k():
    model = make().eval()
    wav = torch.cat([clip(seed=1), clip(seed=2)])
    with torch.no_grad():
        out = model(wav, torch.tensor([0, 1]))
    target = mu_law_encode(wav[:, 0])
    ce = F.cross_entropy(out.logits, target, reduction="sum")
    T_z = 2 * (512 // 16)
    assert out.n_latents == T_z and out.n_samples == 1024
    assert out.kl == pytest.approx(T_z * math.log(8)) == kl_nats(T_z, 8)
    elbo = -ce - T_z * math.log(8)
    assert float(out.negative_elbo) == pytest.approx(float(-elbo.detach()), rel=1e-5)
    assert float(out.bits_per_sample) == pytest.approx(float(-elbo) / (1024 * math.log(2)), rel=1e-5)
    assert float(out.reconstruction_loss) == pytest.approx(float(ce) / 1024, rel=1e-5)
    total = out.reconstruction_loss + out.codebook_loss + 0.25 * out.commitment_loss
    assert float(out.loss) == pytest.approx(float(total), rel=1e-6)


def test_forward_crops_to_a_multiple_of_hop_and_rejects_too_short_input():
    model = make()
    out = model(clip(T=515), torch.tensor([0]))
    assert out.logits.shape == (1, 256, 512) and out.codes.shape == (1, 32)
    with pytest.raises(ValueError, match="shorter than one latent frame"):
        model(clip(T=15), torch.tensor([0]))


def test_time_jitter_moves_frames_to_neighbours_only_with_probability_p():
    torch.manual_seed(0)
    B, D, T = 4, 1, 2000
    z = torch.arange(T, dtype=torch.float).expand(B, D, T).contiguous()
    out = time_jitter(z, 0.12)
    shift = out - z
    assert set(shift.unique().tolist()) <= {-1.0, 0.0, 1.0}
    inner = shift[..., 1:-1]
    assert abs(float((inner != 0).float().mean()) - 0.12) < 0.02
    assert abs(float((inner == -1).float().mean()) - float((inner == 1).float().mean())) < 0.02
    assert torch.equal(time_jitter(z, 0.0), z)


def test_jitter_only_in_training():
    model = make()
    model.jitter = 0.5
    model.eval()
    wav = clip()
    torch.testing.assert_close(model(wav, torch.tensor([0])).logits, model(wav, torch.tensor([0])).logits)


def test_speed_augment_shows_the_encoder_a_resampled_view_and_stretches_its_latents_back():
    """In training the encoder sees the clip resampled by r (here 1.25: 640 samples for 512) and its 40 frames are
    interpolated onto the clean clip's 32; in eval mode (and without the option) it sees the clip itself."""
    model, seen = make(), []
    model.speed_augment = (1.25, 1.25)
    encoder_forward = model.encoder.forward
    model.encoder.forward = lambda wav, lengths=None: seen.append(wav.shape[-1]) or encoder_forward(wav, lengths)
    wav = clip(512)
    out = model.train()(wav, torch.tensor([0]))
    assert seen == [640] and out.codes.shape == (1, 32) and torch.isfinite(out.loss)
    with torch.no_grad():
        z = F.interpolate(encoder_forward(change_speed(wav, (1.25, 1.25))), size=32, mode="linear", align_corners=False)
    assert torch.equal(out.codes, model.quantizer.nearest(z))
    model.eval()(wav, torch.tensor([0]))
    assert seen[-1] == 512


def test_overfits_one_clip():
    """A few hundred steps on one short clip: reconstruction well below log(256) and more than one code used."""
    model = make(codebook_size=16, ema=True, init="kmeans", restart_after=20)
    model.jitter = 0.0
    wav = clip(T=2048)
    spk = torch.tensor([0])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        out = model(wav, spk)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        out = model(wav, spk)
    assert float(out.reconstruction_loss) < 0.5 * math.log(256)
    assert int((out.counts > 0).sum()) > 1


def test_encode_decode_api_lengths_and_speakers():
    model = make(speakers=("p1", "p2", "p3")).eval()
    wav = clip(T=1000)[0, 0]
    codes = model.encode(wav, 16000)
    assert codes.shape == (1000 // 16,) and codes.dtype == torch.long
    # other rates and channel counts are resampled / downmixed first
    stereo_8k = torch.stack([wav[::2], wav[::2]])
    assert model.encode(stereo_8k, 8000).shape == (1000 // 16,)
    # batched items of different lengths give each item's own codes
    batch = model.encode([wav, wav[:600]], 16000)
    assert torch.equal(batch[0], codes) and torch.equal(batch[1], model.encode(wav[:600], 16000))
    out = model.decode(codes, "p2", greedy=True)
    assert out.shape == (992,) and out.abs().max() <= 1.0
    outs = model.decode([codes, codes[:10]], ["p1", "p3"])
    assert [o.shape[0] for o in outs] == [992, 160]
    for spk in model.speakers:
        assert model.convert(wav, 16000, spk).shape == (992,)
    with pytest.raises(ValueError, match="unknown speaker 'zz'; valid speakers: p1, p2, p3"):
        model.decode(codes, "zz")
    with pytest.raises(ValueError, match="codes must lie in 0..7"):
        model.decode(torch.tensor([0, 8]), "p1")


def test_encode_takes_the_same_frames_as_forward_when_t_is_not_a_multiple_of_hop():
    model = make().eval()
    wav = clip(T=1000)  # 62 frames and 8 samples past the last whole frame
    wav[..., 992:] = 1.0  # samples past the last frame still reach its receptive field (zero padding otherwise)
    with torch.no_grad():
        out = model(wav, torch.tensor([0]))
    assert torch.equal(out.codes[0], model.encode(wav[0, 0], 16000))
    assert out.n_samples == 992


@pytest.mark.parametrize("upsample,cond_layers", [("repeat", 0), ("transposed", 0), ("repeat", 2), ("transposed", 2)])
def test_batched_decode_equals_decoding_each_item_alone(upsample, cond_layers):
    torch.manual_seed(0)
    cfg = tiny_config()
    cfg["decoder"]["upsample"] = upsample
    cfg["decoder"]["cond_layers"] = cond_layers  # the stack's outputs past an item's end are masked
    model = VQVAE.from_config(cfg, ["p1", "p2"]).eval()
    codes = model.encode(clip(T=1600)[0, 0], 16000)
    long, short = codes, codes[:7].flip(0)
    together = model.decode([long, short], ["p1", "p2"], greedy=True, kernel="numba")
    assert torch.equal(together[1], model.decode(short, "p2", greedy=True, kernel="numba"))
    assert torch.equal(together[0], model.decode(long, "p1", greedy=True, kernel="numba"))


def test_decode_draws_from_the_generator_not_the_global_rng():
    model = make(speakers=("p1",)).eval()
    codes = model.encode(clip(T=800)[0, 0], 16000)
    a = model.decode(codes, "p1", generator=torch.Generator().manual_seed(5))
    torch.manual_seed(123)
    b = model.decode(codes, "p1", generator=torch.Generator().manual_seed(5))
    state = torch.random.get_rng_state()
    c = model.decode(codes, "p1", generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(state, torch.random.get_rng_state())  # the global generator is left alone


def test_encode_applies_the_checkpoints_peak_normalisation():
    model = make().eval()
    wav = clip(T=1600)[0, 0]
    wav = 0.9 * wav / wav.abs().max()
    model.peak_normalize = 0.5
    assert torch.equal(model.encode(0.1 * wav, 16000), model.encode(wav, 16000))  # any level -> the training peak
    assert torch.allclose(model.prepare(0.1 * wav, 16000).abs().max(), torch.tensor(0.5))
    model.peak_normalize = None
    assert torch.equal(model.prepare(0.1 * wav, 16000), 0.1 * wav)


def test_encode_accepts_both_stereo_layouts_and_refuses_an_ambiguous_one():
    model = make().eval()
    left = clip(T=1600)[0, 0]
    stereo = torch.stack([left, 0.5 * left])  # [C, T]
    mono = model.encode(stereo.mean(0), 16000)
    assert torch.equal(model.encode(stereo, 16000), mono)
    assert torch.equal(model.encode(stereo.T.numpy(), 16000), mono)  # soundfile's [T, C]
    assert torch.equal(model.encode(stereo.T, 16000, channels_first=False), mono)
    with pytest.raises(ValueError, match="channels_first"):
        model.encode(torch.zeros(4, 4), 16000)


def test_a_nan_sample_gives_a_non_finite_loss_and_leaves_the_ema_codebook_alone():
    model = make(ema=True).train()  # the trainer skips a step whose loss is non-finite
    wav = torch.cat([clip(seed=1), clip(seed=2)])
    wav[1, 0, 100] = float("nan")
    before = {k: v.clone() for k, v in model.quantizer.state_dict().items()}
    out = model(wav, torch.tensor([0, 1]))
    assert not torch.isfinite(out.loss)
    assert all(torch.equal(before[k], v) for k, v in model.quantizer.state_dict().items())
