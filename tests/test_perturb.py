"""Issue 20's speaker-changing perturbations keep the length and the timing, and move what they should."""
import numpy as np
import pytest
import torch

from audio_vqvae.perturb import (
    change_gender,
    perturb_on,
    perturb_view,
    random_clip,
    random_equalise,
    shift_spectrum_one,
)

SR = 16000


def peak_hz(x: torch.Tensor) -> float:
    spec = torch.fft.rfft(x * torch.hann_window(len(x)))
    return float(spec.abs().argmax()) * SR / len(x)


def envelope(x: torch.Tensor, hop: int = 320) -> np.ndarray:
    """Frame energies (dB) at 50 Hz: where the phones are."""
    n = len(x) // hop
    return 10 * np.log10(x[: n * hop].reshape(n, hop).pow(2).mean(1).numpy() + 1e-8)


def syllables(seconds: float = 1.5, seed: int = 0) -> torch.Tensor:
    """Harmonic 'vowels' (120 Hz, 20 harmonics) switched on and off at irregular times: a stand-in for speech."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR)) / SR
    voice = sum(torch.sin(2 * torch.pi * 120 * h * t) / h for h in range(1, 21))
    gate = (torch.rand(int(seconds * 10), generator=g) > 0.4).float().repeat_interleave(SR // 10)[: len(t)]
    smooth = torch.nn.functional.avg_pool1d(gate[None, None], 161, 1, 80)[0, 0]
    return 0.3 * voice * smooth / voice.abs().max()


@pytest.mark.parametrize("factor", [0.85, 1.2])
def test_spectrum_shift_moves_a_tone_by_the_factor_and_keeps_length(factor):
    t = torch.arange(SR) / SR
    tone = 0.5 * torch.sin(2 * torch.pi * 500 * t)
    out = shift_spectrum_one(tone, factor)
    assert out.shape == tone.shape
    assert peak_hz(out[2000:-2000]) == pytest.approx(500 * factor, rel=0.01)  # the factor is kept to 1/100


def test_spectrum_shift_and_equaliser_keep_the_energy_envelope():
    x = syllables()
    for y in (shift_spectrum_one(x, 1.15), shift_spectrum_one(x, 0.87), random_equalise(x[None, None], 6.0, 8)[0, 0]):
        assert y.shape == x.shape
        assert np.corrcoef(envelope(x), envelope(y))[0, 1] > 0.9


def test_random_equaliser_is_smooth_within_its_bound_and_varies_per_item():
    torch.manual_seed(0)
    x = torch.randn(3, 1, SR)
    y = random_equalise(x, 6.0, 8)
    assert y.shape == x.shape
    ratio = 20 * torch.log10(torch.fft.rfft(y[:, 0, 1000:-1000]).abs().mean(-1)
                             / torch.fft.rfft(x[:, 0, 1000:-1000]).abs().mean(-1))
    assert ratio.abs().max() < 6.5 and not torch.allclose(y[0], y[1])


def test_praat_change_gender_keeps_length_and_timing_and_moves_the_pitch():
    x = syllables(seed=1)
    torch.manual_seed(0)
    y = change_gender(x[None, None], SR, (1.1, 1.1), (1.3, 1.3))[0, 0]
    assert y.shape == x.shape
    assert np.corrcoef(envelope(x), envelope(y))[0, 1] > 0.9
    import parselmouth

    def median_f0(w):
        return parselmouth.Sound(w.double().numpy(), SR).to_pitch().selected_array["frequency"]

    f0 = median_f0(y)
    assert np.median(f0[f0 > 0]) == pytest.approx(1.3 * 120, rel=0.05)


def test_random_clip_limits_each_item_below_its_own_peak_and_keeps_the_rest():
    x = torch.cat([syllables(seed=0), 0.5 * syllables(seed=1)])[None, None].repeat(3, 1, 1)
    x[1] *= 0.2  # another peak: the limit is relative to each item's
    torch.manual_seed(0)
    y = random_clip(x, (6.0, 6.0))
    assert y.shape == x.shape
    for xi, yi in zip(x, y):
        limit = float(xi.abs().max()) * 10 ** (-6 / 20)
        assert abs(float(yi.abs().max()) - limit) < 1e-6
        kept = xi.abs() <= limit
        assert torch.equal(yi[kept], xi[kept]) and torch.all(yi[~kept].abs() == yi.abs().max())
    torch.testing.assert_close(random_clip(x, (0.0, 0.0)), x)
    limits = random_clip(x, (0.0, 12.0)).abs().amax(-1)[:, 0] / x.abs().amax(-1)[:, 0]
    assert limits.unique().numel() == 3 and torch.all((limits <= 1.0) & (limits >= 10 ** (-12 / 20) - 1e-6))


def test_perturb_view_follows_its_config_and_rejects_unknown_methods():
    x = syllables()[None, None].repeat(2, 1, 1)
    assert not perturb_on({"formant": None, "equalise_db": 0.0}) and perturb_on({"equalise_db": 3})
    assert perturb_on({"clip_db": [0, 9]}) and not perturb_on({"clip_db": None})
    assert float(perturb_view(x, {"clip_db": [6, 6]}, SR).abs().max()) < float(x.abs().max()) * 0.51
    assert perturb_view(x, {"formant": [0.9, 1.1], "equalise_db": 3.0}, SR).shape == x.shape
    with pytest.raises(ValueError, match="shift_method"):
        perturb_view(x, {"formant": [0.9, 1.1], "shift_method": "sox"}, SR)
