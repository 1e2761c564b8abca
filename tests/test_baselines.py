import numpy as np
import pytest

from audio_vqvae.evaluation.baselines import FRAME_RATE, K, baseline_features, cmvn, fit_baseline, mfcc


def test_mfcc_frames_are_at_100_hz_and_cmvn_normalises():
    x = (0.1 * np.random.default_rng(0).normal(size=16000)).astype(np.float32)
    f = mfcc(x, 16000)
    assert FRAME_RATE == 100 and f.shape == (100, 39)
    assert mfcc(x[:1000], 16000).shape == (6, 39)  # too short for the default delta width
    g = baseline_features(x, 16000)
    assert np.allclose(g.mean(0), 0, atol=1e-5) and np.allclose(g.std(0), 1, atol=1e-3)
    assert np.allclose(cmvn(np.array([[1.0, 5.0], [3.0, 5.0]])), [[-1, 0], [1, 0]])


def test_baseline_separates_clustered_sounds():
    """Two tones and noise in alternation: each kind of segment gets its own clusters (k=3 on clear clusters)."""
    sr = 16000
    t = np.arange(sr // 5) / sr
    rng = np.random.default_rng(0)
    kinds = [0.3 * np.sin(2 * np.pi * 300 * t), 0.3 * np.sin(2 * np.pi * 2500 * t), 0.1 * rng.normal(size=t.size)]
    wav = np.concatenate([kinds[i % 3] for i in range(9)]).astype(np.float32)
    base = fit_baseline([wav], sr, "test audio", k=3)
    assert base.n_units == 3 and base.fitted_on == "test audio" and K == 64
    units = base.units(wav)
    assert units.shape == (wav.size // 160,)
    middles = [units[20 * i + 5: 20 * i + 15] for i in range(9)]  # frames well inside each 200 ms segment
    assert all(len(set(m)) == 1 for m in middles)
    assert len({int(m[0]) for m in middles[:3]}) == 3 and all(middles[i][0] == middles[i % 3][0] for i in range(9))
    with pytest.raises(ValueError, match="cannot make"):
        fit_baseline([wav[:800]], sr, "x", k=64)


def test_baseline_at_the_models_frame_rate_gives_one_frame_per_model_hop():
    """mfcc_kmeans_model_rate: hop 320 at 16 kHz (the units' 50 Hz), same features otherwise; a 40 ms hop widens
    the window to one hop."""
    x = (0.1 * np.random.default_rng(0).normal(size=16000)).astype(np.float32)
    assert mfcc(x, 16000, hop_s=0.02).shape == (50, 39) and mfcc(x, 16000, hop_s=0.04).shape == (25, 39)
    b = fit_baseline([x, x[::-1].copy()], 16000, "two clips", k=4, hop_s=0.02)
    assert b.frame_rate == 50 and b.units(x).shape == (50,)
    assert fit_baseline([x], 16000, "one clip", k=4).frame_rate == FRAME_RATE
