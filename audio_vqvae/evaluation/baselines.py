"""The MFCC k-means baseline the learned units must beat: standard MFCC frames clustered by k-means.

Every setting is fixed here, beforehand, and not tuned on any result: 13 MFCCs (librosa, 40 mel bands, natural-log
power via dB) with deltas and delta-deltas, a 25 ms window and a 10 ms hop (100 frames/s), mean and variance
normalised per utterance (CMVN), and scikit-learn k-means with K = 64 clusters. These are the textbook ASR front
end (e.g. Kaldi's/HTK's MFCC + Δ + ΔΔ) and the usual small-K k-means baseline of unit-discovery papers.

The same baseline also runs at the model's frame rate (`hop_s` = the model's hop; the window stays 25 ms, or one hop
when that is longer), so that the bitrate and ABX compare at equal frame rates (issue 20).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import librosa
import numpy as np
from sklearn.cluster import KMeans

N_MFCC = 13
"""Cepstral coefficients per frame (c0 included: CMVN removes its level dependence)."""
N_MELS = 40
"""Mel bands under the cepstrum, the usual 16 kHz ASR setting."""
WINDOW_S = 0.025
"""Analysis window: 25 ms."""
HOP_S = 0.010
"""Frame step: 10 ms, so the baseline's frame rate is 100 Hz."""
FRAME_RATE = 1.0 / HOP_S
"""Baseline frames per second."""
K = 64
"""k-means clusters: a bitrate bound of 100 * log2(64) = 600 bits/s, of the order of the model's units."""
KMEANS_INIT = 3
"""k-means++ restarts (scikit-learn `n_init`); the best inertia is kept."""
MAX_FIT_FRAMES = 30_000
"""Training frames k-means sees at most (an evenly spaced subset beyond that), to bound the fit time."""


def mfcc(wav: np.ndarray, sample_rate: int, hop_s: float = HOP_S) -> np.ndarray:
    """Mono wav [T] -> MFCC + Δ + ΔΔ [T // hop, 3 * N_MFCC], un-normalised, one frame per hop_s seconds (window:
    WINDOW_S or one hop, the longer).

    Frame i is centred on sample (i + 0.5) * hop, the latent-frame convention of `alignments.frame_labels`: the
    signal is zero-padded by (window - hop) / 2 on the left and framed without librosa's centring.
    """
    hop = round(hop_s * sample_rate)
    win = max(round(WINDOW_S * sample_rate), hop)
    n = wav.shape[-1] // hop
    left = (win - hop) // 2
    padded = np.pad(np.asarray(wav, dtype=np.float32), (left, win))
    c = librosa.feature.mfcc(y=padded, sr=sample_rate, n_mfcc=N_MFCC, n_fft=win, hop_length=hop, n_mels=N_MELS,
                             center=False)[:, :n]
    width = min(9, n - (1 - n % 2)) if n >= 3 else 0  # librosa's default delta width, shrunk for very short inputs
    deltas = [librosa.feature.delta(c, width=width, order=o) if width >= 3 else np.zeros_like(c) for o in (1, 2)]
    return np.concatenate([c, *deltas]).T


def cmvn(features: np.ndarray) -> np.ndarray:
    """Per-utterance mean and variance normalisation of [T, F] features (each dimension to mean 0, std 1)."""
    return (features - features.mean(0)) / np.maximum(features.std(0), 1e-8)


def baseline_features(wav: np.ndarray, sample_rate: int, hop_s: float = HOP_S) -> np.ndarray:
    """The frames the baseline clusters: CMVN'd MFCC + Δ + ΔΔ [T // hop, 39], one per hop_s (FRAME_RATE by default)."""
    return cmvn(mfcc(wav, sample_rate, hop_s))


@dataclass
class MFCCKMeans:
    """A fitted baseline: waveform -> cluster ids, one per hop_s seconds, comparable to the model's units."""

    kmeans: KMeans
    sample_rate: int
    fitted_on: str  # which audio the clusters were fitted on, for the report
    hop_s: float = HOP_S

    @property
    def frame_rate(self) -> float:
        """Cluster ids per second."""
        return self.sample_rate / round(self.hop_s * self.sample_rate)

    @property
    def n_units(self) -> int:
        return int(self.kmeans.n_clusters)

    def units(self, wav: np.ndarray) -> np.ndarray:
        """Mono wav [T] -> cluster ids [T // hop] (int64)."""
        feats = baseline_features(wav, self.sample_rate, self.hop_s)
        return self.kmeans.predict(feats).astype(np.int64) if len(feats) else np.zeros(0, np.int64)


def fit_baseline(wavs: Sequence[np.ndarray], sample_rate: int, fitted_on: str, k: int = K,
                 seed: int = 0, hop_s: float = HOP_S) -> MFCCKMeans:
    """k-means on the baseline features of `wavs` (the training split's audio, ideally), one frame per hop_s seconds;
    `fitted_on` says which audio."""
    frames = np.concatenate([baseline_features(w, sample_rate, hop_s) for w in wavs])
    if len(frames) < k:
        raise ValueError(f"fit_baseline: {len(frames)} frames cannot make {k} clusters")
    if len(frames) > MAX_FIT_FRAMES:
        frames = frames[np.linspace(0, len(frames) - 1, MAX_FIT_FRAMES).astype(np.int64)]
    kmeans = KMeans(n_clusters=k, n_init=KMEANS_INIT, random_state=seed).fit(frames)
    return MFCCKMeans(kmeans, sample_rate, fitted_on, hop_s)
