"""The F0 stream: tracker accuracy and bad input, the frame contract, speaker statistics, mapping, excitation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from audio_vqvae.f0 import (
    SINE_AMP,
    change_frame_rate,
    denormalise,
    excitation,
    f0_hop,
    log_f0_stats,
    map_contour,
    normalise,
    num_f0_frames,
    speaker_stats,
    stats_for,
    to_samples,
    track,
    units_to_f0_frames,
)

SR = 16000


def harmonic(f0: np.ndarray, n_harmonics: int = 20) -> np.ndarray:
    """A sawtooth-like signal [T] following the per-sample F0 [T] (Hz), band-limited below Nyquist."""
    phase = 2 * np.pi * np.cumsum(f0 / SR)
    k = np.arange(1, n_harmonics + 1)
    return (np.sin(phase[:, None] * k) / k * (k * f0.max() < SR / 2)).sum(1).astype(np.float32)


def test_frame_contract() -> None:
    assert f0_hop(SR) == 80 and f0_hop(SR, 100.0) == 160
    with pytest.raises(ValueError, match="frame_rate"):
        f0_hop(SR, 300.0)
    assert num_f0_frames(16079, 80) == 200
    f0, voiced = track(np.zeros(16079, np.float32), SR)
    assert f0.shape == voiced.shape == (200,) and f0.dtype == np.float32 and voiced.dtype == bool


def test_track_follows_vibrato_in_noise() -> None:
    t = np.arange(SR) / SR
    truth = 150 * (1 + 0.03 * np.sin(2 * np.pi * 5 * t))
    wav = 0.3 * harmonic(truth) + 0.01 * np.random.default_rng(0).standard_normal(SR).astype(np.float32)
    f0, voiced = track(wav, SR)
    inner = slice(10, -10)  # the first and last 50 ms lack a full analysis window
    assert voiced[inner].all()
    centres = np.arange(len(f0)) * 80 + 40
    cents = 1200 * np.abs(np.log2(f0[inner] / truth[centres][inner]))
    assert np.median(cents) < 10 and cents.max() < 50


@pytest.mark.parametrize("name", ["zeros", "dither", "white_noise", "clipped_noise", "full_scale_dc", "too_short"])
def test_bad_input_is_unvoiced_and_finite(name: str) -> None:
    noise = np.random.default_rng(1).standard_normal(SR).astype(np.float32)
    wav = {
        "zeros": np.zeros(SR, np.float32),
        "dither": 1e-4 * noise,
        "white_noise": 0.3 * noise,
        "clipped_noise": np.clip(5 * noise, -1, 1),
        "full_scale_dc": np.ones(SR, np.float32),
        "too_short": 0.3 * harmonic(np.full(400, 150.0)),
    }[name]
    f0, voiced = track(wav, SR)
    assert len(f0) == len(wav) // 80 and np.isfinite(f0).all()
    assert not voiced.any() and not f0.any()


def test_clipped_voice_keeps_its_pitch() -> None:
    wav = np.clip(3 * harmonic(np.full(SR, 200.0)), -1, 1)
    f0, voiced = track(wav, SR)
    assert voiced[10:-10].all() and np.allclose(f0[10:-10], 200, rtol=0.01)


def test_track_rejects_nan() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        track(np.full(SR, np.nan, np.float32), SR)


def test_change_frame_rate_interpolates_log_f0_and_keeps_voicing() -> None:
    n = 100  # 100 Hz frames (hop 160) of a glide from 100 to 200 Hz, geometric, unvoiced in frames 40..59
    f0 = 100 * 2 ** (np.arange(n) / (n - 1))
    voiced = np.ones(n, bool)
    voiced[40:60] = False
    f0_out, v_out = change_frame_rate(np.where(voiced, f0, 0), voiced, 160, 80, 2 * n)
    assert np.array_equal(v_out, np.repeat(voiced, 2))
    centres = (np.arange(2 * n) + 0.5) * 80 / 160 - 0.5  # output centres in input frame units
    inner = v_out & (centres > 0) & (centres < n - 1) & ~((centres > 39) & (centres < 60))
    assert np.allclose(f0_out[inner], 100 * 2 ** (centres[inner] / (n - 1)), rtol=1e-4)
    assert not f0_out[~v_out].any()


def test_to_samples_repeats_each_frame() -> None:
    assert torch.equal(to_samples(torch.tensor([[1.0, 2.0]]), 3), torch.tensor([[1.0, 1, 1, 2, 2, 2]]))


def test_speaker_stats_and_a_speaker_without_voice() -> None:
    a = (np.array([100.0, 0.0, 400.0], np.float32), np.array([True, False, True]))
    stats = speaker_stats({"a": [a, a], "mute": [(np.zeros(5, np.float32), np.zeros(5, bool))]})
    assert stats["a"].mean == pytest.approx(math.log(200)) and stats["a"].std == pytest.approx(math.log(2))
    assert stats_for(stats, "a") == stats["a"]
    with pytest.raises(ValueError, match="'mute' has no voiced training frames"):
        stats_for(stats, "mute")
    with pytest.raises(ValueError, match="'nobody'"):
        stats_for(stats, "nobody")
    assert log_f0_stats([(np.array([150.0]), np.array([True]))]).std > 0  # floored: a monotone speaker normalises


def test_normalise_round_trip_and_unvoiced_zero() -> None:
    f0 = torch.tensor([[100.0, 0.0, 250.0]])
    voiced = torch.tensor([[True, False, True]])
    z = normalise(f0, voiced, 5.0, 0.2)
    assert z[0, 1] == 0 and torch.allclose(z[0, 0], torch.tensor((math.log(100) - 5) / 0.2))
    assert torch.allclose(denormalise(z, voiced, 5.0, 0.2), f0)


def test_mapped_contour_has_the_target_statistics() -> None:
    gen = torch.Generator().manual_seed(0)
    f0 = torch.exp(math.log(120) + 0.15 * torch.randn(500, generator=gen))
    voiced = torch.rand(500, generator=gen) > 0.3
    f0 = torch.where(voiced, f0, 0.0)
    (source,) = speaker_stats({"s": [(f0.numpy(), voiced.numpy())]}).values()
    target = log_f0_stats([(np.array([180.0, 260.0, 220.0]), np.ones(3, bool))])
    mapped = map_contour(f0, voiced, source, target)
    log_mapped = torch.log(mapped[voiced]).double()
    assert log_mapped.mean().item() == pytest.approx(target.mean, abs=1e-4)
    assert log_mapped.std(unbiased=False).item() == pytest.approx(target.std, abs=1e-4)
    assert not mapped[~voiced].any()


def spectrum_peaks(x: torch.Tensor, n: int) -> list[float]:
    """Frequencies (Hz) of the n largest bins of x's magnitude spectrum, ascending."""
    mag = torch.fft.rfft(x.double() * torch.hann_window(len(x), dtype=torch.float64)).abs()
    return sorted((torch.topk(mag, n).indices.double() * SR / len(x)).tolist())


def test_excitation_spectrum_peaks_at_f0_and_its_harmonics() -> None:
    e = excitation(torch.full((1, 200), 200.0), torch.ones(1, 200, dtype=torch.bool), SR, hop=80)
    assert e.shape == (1, 9, 16000)
    assert spectrum_peaks(e[0, 0], 1) == [200.0]
    assert spectrum_peaks(e[0, 2], 1) == [600.0]  # channel k-1 is harmonic k
    assert spectrum_peaks(e[0, :8].sum(0), 8) == [200.0 * k for k in range(1, 9)]


def test_excitation_zeroes_harmonics_above_nyquist() -> None:
    e = excitation(torch.full((1, 10), 1500.0), torch.ones(1, 10, dtype=torch.bool), SR, hop=80)
    assert e[0, :5].abs().amax(1).min() > 0.09 and not e[0, 5:8].any()  # 6 x 1500 Hz > 8 kHz


def test_unvoiced_excitation_is_only_noise_and_seeded() -> None:
    f0 = torch.tensor([[0.0] * 50 + [200.0] * 50])
    voiced = torch.tensor([[True] * 50 + [False] * 50])  # F0 0 where "voiced", voiced False where F0 200
    e = excitation(f0, voiced, SR, hop=80, generator=torch.Generator().manual_seed(3))
    assert not e[:, :8].any()
    assert e[0, 8].std().item() == pytest.approx(SINE_AMP / 3, rel=0.05)
    again = excitation(f0, voiced, SR, hop=80, generator=torch.Generator().manual_seed(3))
    assert torch.equal(e, again)


def test_units_to_f0_frames_batched_equals_alone() -> None:
    z = torch.arange(12.0).reshape(1, 1, 12)
    frames = units_to_f0_frames(z, 10, 80, 320)  # 4 F0 frames per unit
    assert frames[0, 0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    short = z[..., :2]
    padded = torch.cat([z, torch.nn.functional.pad(short, (0, 10))])
    batched = units_to_f0_frames(padded, 10, 80, 320, torch.tensor([12, 2]))
    assert torch.equal(batched[1, :, :9], units_to_f0_frames(short, 9, 80, 320)[0])
