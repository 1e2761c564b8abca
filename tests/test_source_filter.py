"""The source-filter decoder (batched == alone, a trained toy follows F0), its STFT loss and the F0 predictor."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from audio_vqvae.f0 import excitation, track, units_to_f0_frames
from audio_vqvae.source_filter import (
    F0Predictor,
    HarmonicNoiseDecoder,
    SourceFilterDecoder,
    f0_predictor_loss,
    filtered_noise,
    harmonic_sum,
    stft_loss,
    upsample_frames,
)

SR, UNIT_HOP, F0_HOP = 16000, 320, 80
TINY = {"latent_dim": 4, "speaker_dim": 2, "unit_hop": UNIT_HOP, "f0_hop": F0_HOP, "sample_rate": SR, "channels": 8, "skip_channels": 8,
        "layers_per_cycle": 4, "cycles": 1, "cond_channels": 8, "cond_layers": 1}


def test_default_size_and_config() -> None:
    net = SourceFilterDecoder.from_config({"latent_dim": 64, "speaker_dim": 32, "unit_hop": 320, "f0_hop": 80,
                                           "sample_rate": SR})
    assert 0.5e6 < sum(p.numel() for p in net.parameters()) < 1e6
    assert net.receptive_field == 1021
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        SourceFilterDecoder(4, 2, UNIT_HOP, F0_HOP, SR, kernel_size=2)


def inputs(n_f0: int, seed: int) -> tuple[torch.Tensor, ...]:
    """One item: z_q [1, 4, T_z], f0_norm, voiced [1, n_f0], excitation [1, 9, n_f0 * 80], speaker [1, 2]."""
    gen = torch.Generator().manual_seed(seed)
    f0 = 100 + 100 * torch.rand(1, n_f0, generator=gen)
    voiced = torch.rand(1, n_f0, generator=gen) > 0.3
    z = torch.randn(1, 4, n_f0 * F0_HOP // UNIT_HOP, generator=gen)  # the encoder: whole units only
    e = excitation(f0, voiced, SR, F0_HOP, generator=gen)
    return z, torch.randn(1, n_f0, generator=gen) * voiced, voiced, e, torch.randn(1, 2, generator=gen)


def pad_to(x: torch.Tensor, size: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, size - x.shape[-1]))


def test_batched_equals_alone() -> None:
    torch.manual_seed(0)
    net = SourceFilterDecoder.from_config({**TINY, "cond_layers": 2}).eval()
    items = [inputs(n, seed) for seed, n in enumerate([30, 17, 24])]  # 17 F0 frames: not a whole number of units
    lengths = torch.tensor([i[3].shape[-1] for i in items])
    padded = [torch.cat([pad_to(i[k], max(j[k].shape[-1] for j in items)) for i in items]) for k in range(4)]
    with torch.no_grad():
        batched = net(*padded, torch.cat([i[4] for i in items]), lengths)
        for b, item in enumerate(items):
            alone = net(*item)
            assert torch.allclose(batched[b, :, : lengths[b]], alone[0], atol=1e-5)
            assert not batched[b, :, lengths[b] :].any()


def test_shape_errors() -> None:
    net = SourceFilterDecoder.from_config(TINY)
    z, f0_norm, voiced, e, g = inputs(8, 0)
    with pytest.raises(ValueError, match="T_f\\*80"):
        net(z, f0_norm, voiced, e[..., :-1], g)


def test_stft_loss_is_zero_for_equal_signals_and_logs_components() -> None:
    x = torch.randn(2, 1, 8000, generator=torch.Generator().manual_seed(0))
    same, parts = stft_loss(x, x)
    assert same.item() == pytest.approx(0, abs=1e-6)
    worse, parts = stft_loss(0.5 * x, x)
    assert worse.item() > 0.1 and set(parts) == {"stft", "spectral_convergence", "log_magnitude"}


def harmonic_batch(f0s: list[float], gen: torch.Generator, n_f0: int = 50) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Decoder inputs for constant F0s (all voiced, no unit information) and targets: three harmonics with a fixed
    amplitude pattern (a "voice") at a random phase, [B, 1, n_f0 * 80]."""
    b = len(f0s)
    f0 = torch.tensor(f0s)[:, None].expand(b, n_f0)
    voiced = torch.ones(b, n_f0, dtype=torch.bool)
    e = excitation(f0, voiced, SR, F0_HOP, generator=gen)
    phase = 2 * math.pi * f0[:, :1] * torch.arange(n_f0 * F0_HOP) / SR + 6.3 * torch.rand(b, 1, generator=gen)
    target = 0.3 * (torch.sin(phase) + 0.5 * torch.sin(2 * phase + 1) + 0.25 * torch.sin(3 * phase + 2))
    z = torch.zeros(b, 4, n_f0 * F0_HOP // UNIT_HOP)
    return (z, torch.zeros(b, n_f0), voiced, e, torch.zeros(b, 2)), target[:, None]


@pytest.fixture
def one_thread():
    """120 training steps amplify the last-bit differences of multi-threaded kernels: pin one thread so the toy run is
    the same on every machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_trained_toy_decoder_follows_the_commanded_f0(one_thread) -> None:
    torch.manual_seed(0)
    net = SourceFilterDecoder.from_config(TINY)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(120):
        x, y = harmonic_batch((100 + 200 * torch.rand(4, generator=gen)).tolist(), gen)
        loss, _ = stft_loss(net(*x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
    with torch.no_grad():
        for f in (120.0, 220.0):
            x, _ = harmonic_batch([f], gen)
            f0, voiced = track(net(*x)[0, 0].numpy(), SR)
            assert voiced[10:-10].all()
            assert np.median(f0[voiced]) == pytest.approx(f, rel=0.03)


def code_task(gen: torch.Generator, b: int, n_units: int) -> tuple[torch.Tensor, ...]:
    """Codes that determine F0: code 0 unvoiced, codes 1-3 voiced at normalised log-F0 -1, 0, 1.
    -> z_q [b, 4, n_units] (one-hot), voiced and f0_norm [b, 4 * n_units]."""
    codes = torch.randint(0, 4, (b, n_units), generator=gen)
    z = torch.nn.functional.one_hot(codes, 4).transpose(1, 2).float()
    per_unit = units_to_f0_frames(codes[:, None].float(), 4 * n_units, F0_HOP, UNIT_HOP)[:, 0]
    return z, per_unit > 0, torch.where(per_unit > 0, per_unit - 2, 0.0)


def test_f0_predictor_learns_codes_that_determine_f0() -> None:
    torch.manual_seed(0)
    net = F0Predictor(4, 2, UNIT_HOP, F0_HOP, channels=16, layers=2)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    gen = torch.Generator().manual_seed(0)
    g = torch.zeros(8, 2)
    for _ in range(150):
        z, voiced, f0_norm = code_task(gen, 8, 12)
        loss, parts = f0_predictor_loss(*net(z, g, voiced.shape[-1]), voiced, f0_norm)
        opt.zero_grad()
        loss.backward()
        opt.step()
    z, voiced, f0_norm = code_task(gen, 8, 12)
    with torch.no_grad():
        logit, pred = net(z, g, voiced.shape[-1])
    assert ((logit > 0) == voiced).float().mean() > 0.95
    assert (pred - f0_norm)[voiced].abs().median() < 0.1
    assert set(parts) == {"f0_total", "voicing_bce", "log_f0_l1"}


def test_f0_predictor_batched_equals_alone() -> None:
    torch.manual_seed(0)
    net = F0Predictor(4, 2, UNIT_HOP, F0_HOP, channels=8, layers=2).eval()
    gen = torch.Generator().manual_seed(1)
    long, short = torch.randn(1, 4, 10, generator=gen), torch.randn(1, 4, 6, generator=gen)
    g = torch.randn(2, 2, generator=gen)
    with torch.no_grad():
        logit, f0_norm = net(torch.cat([long, pad_to(short, 10)]), g, 40, torch.tensor([3200, 1920]))
        logit_alone, f0_alone = net(short, g[1:], 24)
    assert torch.allclose(logit[1, :24], logit_alone[0], atol=1e-5)
    assert torch.allclose(f0_norm[1, :24], f0_alone[0], atol=1e-5)


HN_TINY = {"latent_dim": 4, "speaker_dim": 2, "unit_hop": UNIT_HOP, "f0_hop": F0_HOP, "sample_rate": SR,
           "n_harmonics": 12, "noise_bands": 9, "channels": 8, "layers_per_cycle": 2, "cycles": 1}


def test_upsample_frames_is_linear_between_centres_and_holds_each_items_last_frame() -> None:
    x = torch.tensor([[[0.0, 4.0, 8.0]]])
    up = upsample_frames(x, 4)[0, 0]
    assert up[:2].tolist() == [0.0, 0.0] and up[-2:].tolist() == [8.0, 8.0]  # held before the first / after the last
    assert up[2:10].tolist() == pytest.approx([0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5])
    held = upsample_frames(x, 4, torch.tensor([2]))[0, 0]
    assert held[:8].tolist() == pytest.approx(upsample_frames(x[..., :2], 4)[0, 0].tolist())


def test_filtered_noise_has_the_asked_magnitude_response() -> None:
    gen = torch.Generator().manual_seed(0)
    bands = 33
    low_pass = (torch.arange(bands) < bands // 4).float()[None, :, None].expand(1, bands, 400)  # below Nyquist / 4
    y = filtered_noise(torch.randn(1, 400 * F0_HOP, generator=gen), low_pass, F0_HOP)[0]
    power = torch.fft.rfft(y).abs().pow(2)
    cut = power.shape[0] // 4
    assert power[: cut - cut // 4].mean() > 100 * power[cut + cut // 4:].mean()


def hn_inputs(n_f0: int, seed: int) -> tuple[torch.Tensor, ...]:
    """z_q [1, 4, T_z], F0 (Hz), voicing, normalised log-F0 [1, T_f], speaker [1, 2], noise [1, T]."""
    gen = torch.Generator().manual_seed(seed)
    f0 = 100 + 100 * torch.rand(1, n_f0, generator=gen)
    voiced = torch.rand(1, n_f0, generator=gen) > 0.3
    return (torch.randn(1, 4, n_f0 * F0_HOP // UNIT_HOP, generator=gen), f0 * voiced, voiced,
            torch.randn(1, n_f0, generator=gen) * voiced, torch.randn(1, 2, generator=gen),
            torch.randn(1, n_f0 * F0_HOP, generator=gen))


def test_harmonic_noise_batched_equals_alone() -> None:
    torch.manual_seed(0)
    net = HarmonicNoiseDecoder.from_config(HN_TINY).eval()
    items = [hn_inputs(n, seed) for seed, n in enumerate([30, 17, 24])]
    lengths = torch.tensor([i[5].shape[-1] for i in items])
    cat = lambda k: torch.cat([pad_to(i[k], max(j[k].shape[-1] for j in items)) for i in items])
    with torch.no_grad():
        batched = net.synthesise(cat(0), cat(1), cat(2), cat(3), cat(4), lengths, noise=cat(5))
        for b, (z, f0, voiced, f0_norm, g, noise) in enumerate(items):
            alone = net.synthesise(z, f0, voiced, f0_norm, g, noise=noise)
            assert torch.allclose(batched[b, :, : lengths[b]], alone[0], atol=1e-5)
            assert not batched[b, :, lengths[b]:].any()


def test_harmonic_noise_output_is_periodic_at_the_given_f0() -> None:
    torch.manual_seed(0)
    net = HarmonicNoiseDecoder.from_config(HN_TINY).eval()
    n_f0 = 100
    with torch.no_grad():
        for hz in (110.0, 230.0):
            f0 = torch.full((1, n_f0), hz)
            wav = net.synthesise(torch.zeros(1, 4, n_f0 // 4), f0, torch.ones(1, n_f0, dtype=torch.bool),
                                 torch.zeros(1, n_f0), torch.zeros(1, 2), noise=torch.zeros(1, n_f0 * F0_HOP))
            f0_out, voiced = track(wav[0, 0].numpy(), SR)
            assert voiced[5:-5].all()
            assert np.median(f0_out[voiced]) == pytest.approx(hz, rel=0.01)


def test_harmonic_sum_equals_upsampled_amplitudes_times_sines() -> None:
    gen = torch.Generator().manual_seed(0)
    amplitudes, phase = torch.rand(2, 5, 7, generator=gen), 6 * torch.rand(2, 7 * 8, generator=gen)
    n_frames = torch.tensor([7, 4])
    k = torch.arange(1, 6.0)[None, :, None]
    expected = (upsample_frames(amplitudes, 8, n_frames) * torch.sin(k * phase[:, None])).sum(1)
    torch.testing.assert_close(harmonic_sum(amplitudes, phase, 8, n_frames), expected, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="hop must be even"):
        harmonic_sum(amplitudes, phase[:, :49], 7)
