import math

import numpy as np
import pytest

from audio_vqvae.metrics import (
    _sample_triplets,
    abx_error,
    cluster_purity,
    cooccurrence,
    dtw_distance,
    elbo_terms,
    entropy_bitrate,
    latent_bitrate,
    log_mel_distance,
    mcd_from_cepstra,
    mel_cepstral_distortion,
    mel_cepstrum,
    phone_purity,
    pnmi,
)

N_PHONES = 6


def _corpus(n_speakers: int = 3, n_utts: int = 2, seed: int = 0):
    """Phone label sequences (runs of 2-6 frames, some -1) and speakers for a tiny multi-speaker corpus."""
    rng = np.random.default_rng(seed)
    labels, speakers = {}, {}
    for s in range(n_speakers):
        for k in range(n_utts):
            lab = np.repeat(rng.integers(0, N_PHONES, size=25), rng.integers(2, 7, size=25))
            lab[:4] = -1
            labels[f"s{s}u{k}"], speakers[f"s{s}u{k}"] = lab, f"spk{s}"
    return labels, speakers


# --- purity and PNMI -------------------------------------------------------------------------------------------------

def test_cooccurrence_counts_and_ignores_unlabelled_frames():
    units = np.array([0, 0, 1, 2, 2, 1])
    phones = np.array([1, 1, 0, -1, 1, 0])
    np.testing.assert_array_equal(cooccurrence(units, phones, n_units=3, n_phones=2), [[0, 2], [2, 0], [0, 1]])
    with pytest.raises(ValueError, match="unit ids must lie in"):
        cooccurrence(units, phones, n_units=2, n_phones=2)
    with pytest.raises(ValueError, match="5 units but 6"):
        cooccurrence(units[:5], phones, n_units=3, n_phones=2)


def test_purity_and_pnmi_hand_example():
    counts = np.array([[2, 0], [1, 1]])  # p(z, y) = [[.5, 0], [.25, .25]]
    assert phone_purity(counts) == pytest.approx(0.5 + 0.25)
    assert cluster_purity(counts) == pytest.approx(0.5 + 0.25)
    h_y = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    mutual = 0.5 * math.log(0.5 / (0.5 * 0.75)) + 0.25 * math.log(0.25 / (0.5 * 0.75)) + 0.25 * math.log(2)
    assert pnmi(counts) == pytest.approx(mutual / h_y)


def test_perfect_units_give_purity_and_pnmi_one():
    phones = np.random.default_rng(0).integers(0, N_PHONES, size=2000)
    counts = cooccurrence((phones + 3) % N_PHONES, phones, N_PHONES, N_PHONES)  # a relabelling of the phones
    assert phone_purity(counts) == pytest.approx(1.0)
    assert cluster_purity(counts) == pytest.approx(1.0)
    assert pnmi(counts) == pytest.approx(1.0)


def test_split_phones_keep_phone_purity_and_pnmi_but_halve_cluster_purity():
    phones = np.repeat(np.arange(N_PHONES), 100)
    units = 2 * phones + np.tile([0, 1], N_PHONES * 50)  # every phone split evenly over two units
    counts = cooccurrence(units, phones, 2 * N_PHONES, N_PHONES)
    assert phone_purity(counts) == pytest.approx(1.0)
    assert cluster_purity(counts) == pytest.approx(0.5)
    assert pnmi(counts) == pytest.approx(1.0)


def test_random_units_are_near_chance_and_pnmi_ignores_unit_names():
    rng = np.random.default_rng(1)
    phones, units = rng.integers(0, N_PHONES, size=50_000), rng.integers(0, 20, size=50_000)
    counts = cooccurrence(units, phones, 20, N_PHONES)
    assert pnmi(counts) < 0.005
    assert phone_purity(counts) == pytest.approx(1 / N_PHONES, abs=0.03)
    assert cluster_purity(counts) == pytest.approx(1 / 20, abs=0.01)
    permuted = cooccurrence(rng.permutation(20)[units], phones, 20, N_PHONES)
    assert pnmi(permuted) == pytest.approx(pnmi(counts))


# --- bitrates and ELBO -----------------------------------------------------------------------------------------------

def test_entropy_bitrate_hand_example():
    sequences = [np.array([0, 0, 1, 1]), np.array([2, 2, 2, 2])]
    # all frames: p = (1/4, 1/4, 1/2) -> H = 1.5 bits, N = 8 symbols over 2 s
    assert entropy_bitrate(sequences, total_duration_s=2.0) == pytest.approx(8 * 1.5 / 2)
    # run-length collapsed: [0, 1], [2] -> uniform over 3 symbols, N = 3
    assert entropy_bitrate(sequences, 2.0, dedup=True) == pytest.approx(3 * math.log2(3) / 2)
    assert entropy_bitrate([np.array([5, 5, 5])], 1.0) == 0.0
    with pytest.raises(ValueError, match="duration"):
        entropy_bitrate(sequences, 0.0)


def test_latent_bitrate():
    assert latent_bitrate(250.0, 512) == pytest.approx(250 * 9)


def test_elbo_terms_hand_example():
    terms = elbo_terms(total_nll_nats=100.0, n_samples=1024, n_latents=16, codebook_size=512, sample_rate=16000)
    kl = 16 * 9 * math.log(2)  # T_z log K with K = 2^9
    assert terms["nll_nats"] == 100.0
    assert terms["kl_nats"] == pytest.approx(kl)
    assert terms["neg_elbo_nats"] == pytest.approx(100 + kl)
    assert terms["bits_per_sample"] == pytest.approx((100 / math.log(2) + 144) / 1024)
    assert terms["nats_per_second"] == pytest.approx((100 + kl) / (1024 / 16000))


# --- DTW and ABX -----------------------------------------------------------------------------------------------------

def test_dtw_hand_examples():
    assert dtw_distance(np.array([[1.0, 2.0], [3.0, 1.0]])) == pytest.approx(1.0)  # diagonal: (1 + 1) / 2
    assert dtw_distance(np.array([[0.0, 5.0, 5.0], [5.0, 1.0, 1.0]])) == pytest.approx(2 / 3)  # (0 + 1 + 1) / 3
    assert dtw_distance(np.array([[4.0, 2.0]])) == pytest.approx(3.0)
    # a repeated frame aligns at zero cost: |a_i - b_j| with a = [0, 1, 2], b = [0, 0, 1, 2]
    a, b = np.array([0.0, 1.0, 2.0]), np.array([0.0, 0.0, 1.0, 2.0])
    assert dtw_distance(np.abs(a[:, None] - b[None, :])) == 0.0


@pytest.mark.parametrize("mode", ["within", "across"])
def test_sampled_triplets_obey_the_abx_design(mode):
    rng = np.random.default_rng(0)
    speaker, phone = rng.integers(0, 3, size=200), rng.integers(0, 5, size=200)
    a, b, x = _sample_triplets(speaker, phone, mode, 500, rng).T
    assert 0 < len(a) <= 500
    assert np.all(phone[a] == phone[x]) and np.all(phone[b] != phone[a]) and np.all(a != x)
    assert np.all(speaker[a] == speaker[b])
    assert np.all(speaker[x] == speaker[a]) if mode == "within" else np.all(speaker[x] != speaker[a])


@pytest.mark.parametrize("mode", ["within", "across"])
def test_abx_perfect_features_give_zero_error(mode):
    labels, speakers = _corpus()
    one_hot = {u: np.eye(N_PHONES)[np.maximum(lab, 0)] for u, lab in labels.items()}
    error, n = abx_error(one_hot, labels, speakers, mode=mode, max_triplets=2000)
    assert error == 0.0 and 0 < n <= 2000
    assert abx_error(labels, labels, speakers, mode=mode, distance="hamming")[0] == 0.0  # units = phone ids


@pytest.mark.parametrize("mode", ["within", "across"])
def test_abx_random_features_are_near_chance(mode):
    labels, speakers = _corpus()
    rng = np.random.default_rng(2)
    noise = {u: rng.normal(size=(len(lab), 8)) for u, lab in labels.items()}
    error, n = abx_error(noise, labels, speakers, mode=mode, max_triplets=3000, seed=1)
    assert error == pytest.approx(0.5, abs=0.05) and n > 1000
    units = {u: rng.integers(0, 50, size=len(lab)) for u, lab in labels.items()}
    assert abx_error(units, labels, speakers, mode=mode, max_triplets=3000, distance="hamming")[0] == \
        pytest.approx(0.5, abs=0.05)


def test_abx_speaker_specific_features_separate_within_from_across():
    labels, speakers = _corpus()
    # each (speaker, phone) pair gets its own orthogonal code: perfect within a speaker, uninformative across
    feats = {u: np.eye(3 * N_PHONES)[int(speakers[u][-1]) * N_PHONES + np.maximum(lab, 0)] for u, lab in labels.items()}
    assert abx_error(feats, labels, speakers, mode="within")[0] == 0.0
    assert abx_error(feats, labels, speakers, mode="across")[0] == 0.5  # d(A,X) = d(B,X) = 1/2: all ties


def test_abx_is_seeded_and_checks_inputs():
    labels, speakers = _corpus()
    rng = np.random.default_rng(3)
    noise = {u: rng.normal(size=(len(lab), 4)) for u, lab in labels.items()}
    assert abx_error(noise, labels, speakers, max_triplets=300, seed=7) == \
        abx_error(noise, labels, speakers, max_triplets=300, seed=7)
    with pytest.raises(ValueError, match="feature frames but"):
        abx_error({u: f[1:] for u, f in noise.items()}, labels, speakers)
    with pytest.raises(ValueError, match="no valid within-speaker triplet"):
        abx_error({"u": noise["s0u0"][:4]}, {"u": np.array([0, 0, 1, 1])}, {"u": "spk"})


# --- spectral distances ----------------------------------------------------------------------------------------------

def test_log_mel_distance():
    x = 0.1 * np.random.default_rng(0).normal(size=8000).astype(np.float32)
    assert log_mel_distance(x, x, 16000) == 0.0
    assert log_mel_distance(x, x[:-300], 16000) == 0.0  # cropped to the shorter signal
    assert log_mel_distance(x, 0.5 * x, 16000) == pytest.approx(math.log(4), rel=1e-4)  # power mel scales by 1/4


def _vowel(seconds: float, f0: float, seed: int = 0, sr: int = 16000) -> np.ndarray:
    """A harmonic tone at f0 with a little noise: spectrally shaped for WORLD."""
    t = np.arange(round(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6))
    return (0.2 * x + 0.001 * np.random.default_rng(seed).normal(size=t.size)).astype(np.float32)


def test_mcd_of_identical_cepstra_is_zero_and_of_a_hand_built_pair_the_formula():
    a = np.random.default_rng(0).normal(size=(7, 25))
    assert mcd_from_cepstra(a, a) == 0.0
    b = a.copy()
    b[:, 0] += 5.0  # c0 is excluded
    b[:, 1] += 0.3
    b[:, 2] -= 0.4  # every frame is 0.5 away: with DTW the diagonal stays the cheapest path
    assert mcd_from_cepstra(a, b) == pytest.approx(10 / math.log(10) * math.sqrt(2) * 0.5)
    assert mcd_from_cepstra(a, np.repeat(a, 2, axis=0)) == 0.0  # DTW absorbs a time stretch


def test_mel_cepstral_distortion_of_waveforms():
    x = _vowel(0.5, 150.0)
    assert mel_cepstrum(x, 16000).shape[1] == 25
    assert mel_cepstral_distortion(x, x, 16000) == 0.0
    assert mel_cepstral_distortion(x, 0.5 * x, 16000) == pytest.approx(0.0, abs=0.05)  # gain lives in c0 only
    noise = 0.1 * np.random.default_rng(1).normal(size=8000).astype(np.float32)
    assert mel_cepstral_distortion(x, noise, 16000) > 3.0
