import numpy as np
import pytest

from audio_vqvae.stability import (
    PERTURBATIONS,
    SHIFT_SAMPLES,
    edit_distance,
    frame_agreement,
    perturb,
    unit_edit_distance,
    unit_stability,
)


def test_frame_agreement_and_edit_distance_by_hand():
    a = np.array([1, 1, 2, 2, 3])
    assert frame_agreement(a, a) == 1.0 and unit_edit_distance(a, a) == 0.0
    assert frame_agreement(a, np.array([1, 1, 2, 3])) == pytest.approx(3 / 4)  # over the shorter length
    assert edit_distance(np.array([1, 2, 3]), np.array([1, 3])) == 1
    assert edit_distance(np.array([1, 2, 3]), np.array([3, 2, 1])) == 2
    assert edit_distance(np.array([], int), np.array([4, 5])) == 2
    # deduplicated: [1, 2, 3] vs [1, 2, 4, 3] is one insertion over 3 clean units; a moved boundary costs nothing
    assert unit_edit_distance(a, np.array([1, 2, 2, 4, 3])) == pytest.approx(1 / 3)
    assert unit_edit_distance(a, np.array([1, 2, 2, 2, 3])) == 0.0


def test_perturbations():
    x = (0.1 * np.random.default_rng(0).normal(size=4000)).astype(np.float32)
    assert np.allclose(perturb(x, "gain_+6dB"), x * 10 ** 0.3)
    noisy = perturb(x, "noise_20dB", seed=3)
    assert 10 * np.log10(np.mean(x ** 2) / np.mean((noisy - x) ** 2)) == pytest.approx(20, abs=0.3)
    assert np.array_equal(noisy, perturb(x, "noise_20dB", seed=3))  # seeded
    shifted = perturb(x, f"shift_{SHIFT_SAMPLES}")
    assert shifted.size == x.size and np.array_equal(shifted[SHIFT_SAMPLES:], x[:-SHIFT_SAMPLES])
    with pytest.raises(ValueError, match="unknown perturbation"):
        perturb(x, "reverb")


def test_unit_stability_of_gain_invariant_and_sign_units():
    x = [(0.1 * np.random.default_rng(s).normal(size=640)).astype(np.float32) for s in range(2)]
    constant = unit_stability(lambda w: np.zeros(w.size // 64, np.int64), x)
    assert set(constant) == set(PERTURBATIONS)
    assert all(v == {"frame_agreement": 1.0, "unit_edit_distance": 0.0} for v in constant.values())
    sign = unit_stability(lambda w: (w[::64] > 0).astype(np.int64), x)  # invariant to gain, not to noise or shift
    assert sign["gain_+6dB"]["frame_agreement"] == 1.0 and sign["gain_-6dB"]["unit_edit_distance"] == 0.0
    assert sign[f"shift_{SHIFT_SAMPLES}"]["frame_agreement"] < 0.9
