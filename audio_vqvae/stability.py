"""Unit stability: how many units survive perturbations that do not change what is said.

Perturbations (fixed; the noise is seeded): gain of +6 dB and -6 dB (clipped to [-1, 1]), white Gaussian noise at
30 dB and 20 dB SNR (relative to the utterance's mean power), and a delay of SHIFT_SAMPLES samples (zeros in front,
the end cropped so the length is kept). The delay is a fraction of a frame (16 of the model's 64-sample hop, of the
baseline's 160), so frame i of the delayed audio still covers mostly the audio of frame i: it is compared with frame
i, no re-alignment, and the score says how sensitive the units are to where frame boundaries fall.

Two scores per perturbation: frame agreement (share of frames with the same unit, over the shorter sequence) and the
unit edit distance (Levenshtein distance between the run-length deduplicated sequences, divided by the clean
sequence's deduplicated length), which forgives a boundary moving by a frame.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numba
import numpy as np

from .unitfile import run_length_encode

GAINS_DB = {"gain_+6dB": 6.0, "gain_-6dB": -6.0}
NOISE_SNR_DB = {"noise_30dB": 30.0, "noise_20dB": 20.0}
SHIFT_SAMPLES = 16
"""Delay of the shift perturbation: a quarter of the default hop."""
PERTURBATIONS = (*GAINS_DB, *NOISE_SNR_DB, f"shift_{SHIFT_SAMPLES}")


def perturb(wav: np.ndarray, name: str, seed: int = 0) -> np.ndarray:
    """The perturbation `name` (one of PERTURBATIONS) of mono wav [T]; the noise is drawn with `seed`."""
    wav = np.asarray(wav, dtype=np.float32)
    if name in GAINS_DB:
        return np.clip(wav * 10 ** (GAINS_DB[name] / 20), -1.0, 1.0)
    if name in NOISE_SNR_DB:
        power = float(np.mean(wav.astype(np.float64) ** 2))
        noise = np.random.default_rng(seed).standard_normal(wav.size) * np.sqrt(power / 10 ** (NOISE_SNR_DB[name] / 10))
        return (wav + noise).astype(np.float32)
    if name == f"shift_{SHIFT_SAMPLES}":
        return np.concatenate([np.zeros(SHIFT_SAMPLES, np.float32), wav[: wav.size - SHIFT_SAMPLES]])
    raise ValueError(f"perturb: unknown perturbation {name!r} (known: {PERTURBATIONS})")


def frame_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of frames where two unit sequences agree, over the shorter length (1.0 for two empty sequences)."""
    n = min(len(a), len(b))
    return float(np.mean(np.asarray(a[:n]) == np.asarray(b[:n]))) if n else 1.0


@numba.njit(cache=True)
def _levenshtein(a: np.ndarray, b: np.ndarray) -> int:
    row = np.arange(b.size + 1)
    for i in range(1, a.size + 1):
        prev, row[0] = row[0], i
        for j in range(1, b.size + 1):
            cur = min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] != b[j - 1]))
            prev, row[j] = row[j], cur
    return int(row[b.size])


def edit_distance(a: np.ndarray, b: np.ndarray) -> int:
    """Levenshtein distance (insertions, deletions, substitutions, each cost 1) between two int sequences."""
    return _levenshtein(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))


def unit_edit_distance(clean: np.ndarray, perturbed: np.ndarray) -> float:
    """Edit distance of the deduplicated sequences over the deduplicated clean length (0 = same unit string)."""
    a, b = run_length_encode(np.asarray(clean))[0], run_length_encode(np.asarray(perturbed))[0]
    return edit_distance(a, b) / max(a.size, 1)


def unit_stability(units: Callable[[np.ndarray], np.ndarray], wavs: Sequence[np.ndarray],
                   perturbations: Sequence[str] = PERTURBATIONS, seed: int = 0) -> dict[str, dict[str, float]]:
    """Frame agreement and unit edit distance per perturbation, frame-weighted / utterance-averaged over `wavs`.

    `units` maps a mono wav [T] to its unit sequence (the model's encoder, or the baseline). Agreement pools frames
    over utterances; the edit distance is the mean over utterances.
    """
    clean = [units(w) for w in wavs]
    result = {}
    for p, name in enumerate(perturbations):
        noisy = [units(perturb(w, name, seed + 1000 * p + i)) for i, w in enumerate(wavs)]
        frames = np.array([min(len(a), len(b)) for a, b in zip(clean, noisy)], dtype=np.float64)
        agree = np.array([frame_agreement(a, b) for a, b in zip(clean, noisy)])
        result[name] = {
            "frame_agreement": float((agree * frames).sum() / max(frames.sum(), 1.0)),
            "unit_edit_distance": float(np.mean([unit_edit_distance(a, b) for a, b in zip(clean, noisy)])),
        }
    return result
