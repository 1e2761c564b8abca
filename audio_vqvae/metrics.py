"""Evaluation metrics as pure functions: unit/phone agreement, bitrates, ELBO bookkeeping, ABX, spectral distances,
mel-cepstral distortion (pitch agreement and the recogniser: evaluation/speech.py).

Unit and label sequences are int arrays at the latent frame rate; a phone label of -1 means "ignore this frame".
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Literal

import librosa
import numba
import numpy as np
import torch
import torchaudio

from .quantizer import perplexity
from .unitfile import run_length_encode


def _entropy(counts: np.ndarray) -> float:
    """Shannon entropy in nats of the distribution proportional to `counts` (zeros allowed)."""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


# ---------------------------------------------------------------------------------------------------------------------
# Units vs. phones (Hsu et al. 2021, HuBERT, sec. IV-B)


def cooccurrence(units: np.ndarray, phones: np.ndarray, n_units: int, n_phones: int) -> np.ndarray:
    """Joint frame counts [n_units, n_phones] of aligned unit and phone sequences; frames with phone -1 are skipped."""
    units, phones = np.asarray(units).ravel(), np.asarray(phones).ravel()
    if units.shape != phones.shape:
        raise ValueError(f"cooccurrence: {units.size} units but {phones.size} phone labels")
    keep = phones >= 0
    units, phones = units[keep], phones[keep]
    if units.size and (units.min() < 0 or units.max() >= n_units):
        raise ValueError(f"cooccurrence: unit ids must lie in [0, {n_units}), got [{units.min()}, {units.max()}]")
    if phones.size and phones.max() >= n_phones:
        raise ValueError(f"cooccurrence: phone ids must lie in [-1, {n_phones}), got max {phones.max()}")
    flat = np.bincount(units.astype(np.int64) * n_phones + phones, minlength=n_units * n_phones)
    return flat.reshape(n_units, n_phones)


def _joint(counts: np.ndarray) -> np.ndarray:
    """Joint probability p(z, y) [n_units, n_phones] from counts; error if there are none."""
    total = counts.sum()
    if total <= 0:
        raise ValueError("no labelled frames: the co-occurrence matrix is all zeros")
    return counts / total


def phone_purity(counts: np.ndarray) -> float:
    """E_z[max_y p(y|z)] = sum_z max_y p(z, y): how well each unit predicts one phone. `counts` is [units, phones]."""
    return float(_joint(counts).max(axis=1).sum())


def cluster_purity(counts: np.ndarray) -> float:
    """E_y[max_z p(z|y)] = sum_y max_z p(z, y): how much each phone is caught by one unit. `counts` is [units, phones]."""
    return float(_joint(counts).max(axis=0).sum())


def pnmi(counts: np.ndarray) -> float:
    """Phone-normalised mutual information I(y; z) / H(y), in [0, 1]. `counts` is [units, phones]."""
    p = _joint(counts)
    h_y = _entropy(p.sum(axis=0))
    if h_y == 0.0:
        raise ValueError("pnmi: only one phone occurs, H(y) = 0")
    mutual = h_y + _entropy(p.sum(axis=1)) - _entropy(p.ravel())  # I = H(y) + H(z) - H(y, z)
    return mutual / h_y


# ---------------------------------------------------------------------------------------------------------------------
# Bitrates and the ELBO


def entropy_bitrate(sequences: Sequence[np.ndarray], total_duration_s: float, dedup: bool = False) -> float:
    """ZeroSpeech 2019 bitrate N / D * H(p) in bits/s (Dunbar et al. 2019).

    N counts the symbols of all sequences, D is their total audio duration, p the empirical symbol distribution
    pooled over all sequences. As in the official ZS2019 scorer, every frame is a symbol (`dedup=False`);
    `dedup=True` first collapses runs of repeated units, the lossy run-length variant of Hsu et al.'s RLE scorer.
    """
    if total_duration_s <= 0:
        raise ValueError(f"entropy_bitrate: total duration must be > 0 s, got {total_duration_s}")
    seqs = [np.asarray(s).ravel() for s in sequences]
    symbols = np.concatenate([run_length_encode(s)[0] for s in seqs] if dedup else seqs) if seqs else np.empty(0, np.int64)
    if symbols.size == 0:
        return 0.0
    _, counts = np.unique(symbols, return_counts=True)
    return symbols.size * _entropy(counts) / math.log(2) / total_duration_s


def latent_bitrate(frame_rate: float, codebook_size: int) -> float:
    """Upper bound on the code bitrate, frame_rate * log2 K bits/s (every code equally likely, no dedup)."""
    return frame_rate * math.log2(codebook_size)


def elbo_terms(total_nll_nats: float, n_samples: int, n_latents: int, codebook_size: int,
               sample_rate: int) -> dict[str, float]:
    """ELBO bookkeeping of a VQ-VAE with a uniform prior over K codes.

    -ELBO = NLL + KL with KL = T_z log K (the posterior is one-hot). Returns nats for the totals, plus
    bits per audio sample -ELBO / (T ln 2) (and the NLL alone in the same unit) and nats per second of audio.
    """
    kl = n_latents * math.log(codebook_size)
    neg_elbo = total_nll_nats + kl
    return {
        "nll_nats": float(total_nll_nats),
        "kl_nats": kl,
        "neg_elbo_nats": neg_elbo,
        "bits_per_sample": neg_elbo / (n_samples * math.log(2)),
        "nll_bits_per_sample": total_nll_nats / (n_samples * math.log(2)),
        "nats_per_second": neg_elbo * sample_rate / n_samples,
    }



def elbo_with_prior(total_nll_nats: float, log_prior_nats: float, n_samples: int, n_latents: int, codebook_size: int,
                    sample_rate: int) -> dict[str, float]:
    """-ELBO under the uniform prior and under a learned prior p(z), side by side.

    q is one-hot at z_q(x), so KL(q || p) = -log p(z_q(x)): T_z log K for the uniform prior, -log_prior_nats (the
    learned prior's log p of the encoded units, summed over the set) for a learned one. Bits per audio sample for
    -ELBO and KL in bits per second of audio, for each prior.
    """
    uniform = elbo_terms(total_nll_nats, n_samples, n_latents, codebook_size, sample_rate)
    kl_prior = -float(log_prior_nats)
    per_second = sample_rate / (n_samples * math.log(2))
    return {
        "bits_per_sample_uniform": uniform["bits_per_sample"],
        "bits_per_sample_prior": (total_nll_nats + kl_prior) / (n_samples * math.log(2)),
        "kl_bits_per_second_uniform": uniform["kl_nats"] * per_second,
        "kl_bits_per_second_prior": kl_prior * per_second,
        "kl_nats_uniform": uniform["kl_nats"],
        "kl_nats_prior": kl_prior,
    }

# ---------------------------------------------------------------------------------------------------------------------
# DTW and ABX (ZeroSpeech style)


@numba.njit(cache=True)
def _dtw(dist: np.ndarray) -> float:
    """Cost of the cheapest monotone path through `dist` [N, M], divided by the number of cells on that path."""
    n, m = dist.shape
    cost = np.empty((n, m))
    length = np.empty((n, m), dtype=np.int64)
    for i in range(n):
        for j in range(m):
            if i == 0 and j == 0:
                c, steps = 0.0, 0
            elif i == 0:
                c, steps = cost[0, j - 1], length[0, j - 1]
            elif j == 0:
                c, steps = cost[i - 1, 0], length[i - 1, 0]
            else:  # ties go to the diagonal, the shorter path
                c, steps = cost[i - 1, j - 1], length[i - 1, j - 1]
                if cost[i - 1, j] < c:
                    c, steps = cost[i - 1, j], length[i - 1, j]
                if cost[i, j - 1] < c:
                    c, steps = cost[i, j - 1], length[i, j - 1]
            cost[i, j] = dist[i, j] + c
            length[i, j] = steps + 1
    return cost[n - 1, m - 1] / length[n - 1, m - 1]


def dtw_distance(dist: np.ndarray) -> float:
    """DTW distance averaged along the alignment path, given the frame distance matrix [N, M] (N, M >= 1)."""
    dist = np.ascontiguousarray(dist, dtype=np.float64)
    if dist.ndim != 2 or 0 in dist.shape:
        raise ValueError(f"dtw_distance: need a non-empty [N, M] matrix, got shape {dist.shape}")
    return float(_dtw(dist))


@numba.njit(cache=True)
def _frame_distance(a: np.ndarray, b: np.ndarray, hamming: bool) -> float:
    """Fraction of differing components (`hamming`), else angle / pi between two unit vectors."""
    s = 0.0
    if hamming:
        for f in range(a.size):
            if a[f] != b[f]:
                s += 1.0
        return s / a.size
    for f in range(a.size):
        s += a[f] * b[f]
    return math.acos(min(1.0, max(-1.0, s))) / math.pi


@numba.njit(cache=True)
def _pair_distances(frames: np.ndarray, starts: np.ndarray, ends: np.ndarray, first: np.ndarray,
                    second: np.ndarray, hamming: bool) -> np.ndarray:
    """DTW distance between segments first[k] and second[k] for every k; frames are unit-norm unless `hamming`."""
    out = np.empty(first.size)
    for k in range(first.size):
        a = frames[starts[first[k]]:ends[first[k]]]
        b = frames[starts[second[k]]:ends[second[k]]]
        dist = np.empty((a.shape[0], b.shape[0]))
        for i in range(a.shape[0]):
            for j in range(b.shape[0]):
                dist[i, j] = _frame_distance(a[i], b[j], hamming)
        out[k] = _dtw(dist)
    return out


def _phone_segments(labels: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Runs of equal labels >= 0 in each utterance -> (start, end) frame indices into the concatenated utterances,
    the label and the utterance index of every segment."""
    starts, ends, labs, utts = [], [], [], []
    offset = 0
    for u, lab in enumerate(labels):
        bounds = np.r_[0, np.flatnonzero(lab[1:] != lab[:-1]) + 1, lab.size] if lab.size else np.zeros(1, np.int64)
        first, lab_of = bounds[:-1], lab[bounds[:-1]]
        keep = lab_of >= 0
        starts.append(offset + first[keep])
        ends.append(offset + bounds[1:][keep])
        labs.append(lab_of[keep])
        utts.append(np.full(keep.sum(), u))
        offset += lab.size
    return tuple(np.concatenate(x).astype(np.int64) for x in (starts, ends, labs, utts))


def _runs(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi) positions of the run of equal keys around each position of a sorted array."""
    return np.searchsorted(sorted_keys, sorted_keys, "left"), np.searchsorted(sorted_keys, sorted_keys, "right")


def _nested_runs(outer: np.ndarray, inner: np.ndarray) -> tuple[np.ndarray, ...]:
    """Sort items by (outer, inner). Returns the order and, per item (original index), its position in that order
    and the [lo, hi) positions of its `outer` run and of its (outer, inner) run."""
    order = np.lexsort((inner, outer))
    pos = np.empty_like(order)
    pos[order] = np.arange(order.size)
    o_lo, o_hi = _runs(outer[order])
    i_lo, i_hi = _runs(outer[order] * (inner.max() + 1) + inner[order])
    return order, pos, o_lo[pos], o_hi[pos], i_lo[pos], i_hi[pos]


def _pick_outside(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, sub_lo: np.ndarray,
                  sub_hi: np.ndarray) -> np.ndarray:
    """One position drawn uniformly from [lo, hi) minus [sub_lo, sub_hi), elementwise (the difference is non-empty)."""
    r = lo + rng.integers(0, (hi - lo) - (sub_hi - sub_lo))
    return np.where(r < sub_lo, r, r + (sub_hi - sub_lo))


def _sample_triplets(speaker: np.ndarray, phone: np.ndarray, mode: str, n: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Up to n distinct (A, B, X) segment index triplets: A and X the same phone, B another phone spoken by A's speaker;
    X is another token by A's speaker ("within") or a token by another speaker ("across").

    A is drawn uniformly among segments that admit both a B and an X, then B and X uniformly given A.
    """
    if phone.size == 0:
        return np.empty((0, 3), dtype=np.int64)
    by_spk, pos, spk_lo, spk_hi, sp_lo, sp_hi = _nested_runs(speaker, phone)
    if mode == "within":  # X: same (speaker, phone) run, not A itself
        by_x, x_lo, x_hi, not_lo, not_hi = by_spk, sp_lo, sp_hi, pos, pos + 1
    else:  # X: same phone run, not A's speaker
        by_x, _, x_lo, x_hi, not_lo, not_hi = _nested_runs(phone, speaker)
    ok = np.flatnonzero((spk_hi - spk_lo > sp_hi - sp_lo) & (x_hi - x_lo > not_hi - not_lo))
    if ok.size == 0:
        return np.empty((0, 3), dtype=np.int64)
    a = rng.choice(ok, size=n)
    b = by_spk[_pick_outside(rng, spk_lo[a], spk_hi[a], sp_lo[a], sp_hi[a])]
    x = by_x[_pick_outside(rng, x_lo[a], x_hi[a], not_lo[a], not_hi[a])]
    return np.unique(np.stack([a, b, x], axis=1), axis=0)


def abx_error(features: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray], speakers: Mapping[str, str],
              mode: Literal["within", "across"] = "within", max_triplets: int = 10_000, seed: int = 0,
              distance: Literal["cosine", "hamming"] = "cosine") -> tuple[float, int]:
    """ABX phone discrimination error (ZeroSpeech style) on phone segments; returns (error in [0, 1], n_triplets).

    Segments are runs of equal phone labels >= 0 (label -1 frames are skipped). For a triplet, A and X are tokens
    of one phone and B a token of another phone; A and B share a speaker, and X has that speaker ("within") or
    another one ("across"). d is the DTW distance averaged along the path, with the angular frame distance
    arccos(cos) / pi for continuous features ("cosine") or the fraction of differing components for unit ids
    ("hamming"; [T] arrays of ids are allowed). Error = mean of [d(A,X) > d(B,X)] + 0.5 [d(A,X) = d(B,X)] over at
    most `max_triplets` distinct triplets drawn with `seed` (a sample mean, not ZeroSpeech's per-context average).
    """
    if mode not in ("within", "across"):
        raise ValueError(f"abx_error: mode must be 'within' or 'across', got {mode!r}")
    if distance not in ("cosine", "hamming"):
        raise ValueError(f"abx_error: distance must be 'cosine' or 'hamming', got {distance!r}")
    utts = sorted(labels)
    missing = [u for u in utts if u not in features or u not in speakers]
    if missing:
        raise ValueError(f"abx_error: no features or speaker for utterance(s) {missing[:5]}")
    feats = [np.asarray(features[u], dtype=np.float64).reshape(len(features[u]), -1) for u in utts]
    labs = [np.asarray(labels[u], dtype=np.int64).ravel() for u in utts]
    for u, f, lab in zip(utts, feats, labs):
        if len(f) != len(lab):
            raise ValueError(f"abx_error: utterance {u!r} has {len(f)} feature frames but {len(lab)} labels")
    frames = np.concatenate(feats)
    if distance == "cosine":
        frames /= np.maximum(np.linalg.norm(frames, axis=1, keepdims=True), 1e-12)
    starts, ends, phone, utt = _phone_segments(labs)
    speaker = np.unique([speakers[u] for u in utts], return_inverse=True)[1].astype(np.int64)[utt]
    triplets = _sample_triplets(speaker, phone, mode, max_triplets, np.random.default_rng(seed))
    if len(triplets) == 0:
        raise ValueError(f"abx_error: no valid {mode}-speaker triplet (need two tokens of a phone and another phone)")
    a, b, x = triplets.T
    d = _pair_distances(frames, starts, ends, np.r_[a, b], np.r_[x, x], distance == "hamming")
    d_ax, d_bx = d[: len(a)], d[len(a):]
    return float(np.mean((d_ax > d_bx) + 0.5 * (d_ax == d_bx))), len(triplets)


# ---------------------------------------------------------------------------------------------------------------------
# Spectral distances between a reference and an estimated waveform


@lru_cache(maxsize=8)
def _mel(sample_rate: int, n_mels: int, n_fft: int, hop_length: int) -> torchaudio.transforms.MelSpectrogram:
    """Power mel spectrogram transform, cached per configuration."""
    return torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels)


def _mono(wav: np.ndarray) -> torch.Tensor:
    """A mono waveform [T] as a float32 tensor; error for any other shape."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"need a mono waveform [T], got shape {wav.shape}")
    return torch.from_numpy(wav)


def log_mel(wav: torch.Tensor, sample_rate: int, n_mels: int = 80, n_fft: int = 1024, hop_length: int = 256,
            eps: float = 1e-5) -> torch.Tensor:
    """wav [T] -> natural log of the power mel spectrogram, clamped at eps: [n_mels, frames]."""
    with torch.no_grad():
        return _mel(sample_rate, n_mels, n_fft, hop_length)(wav.detach().float().cpu()).clamp_min(eps).log()


def log_mel_distance(ref: np.ndarray, est: np.ndarray, sample_rate: int, n_mels: int = 80, n_fft: int = 1024,
                     hop_length: int = 256, eps: float = 1e-5) -> float:
    """Mean |log mel(ref) - log mel(est)| over bins and frames, natural log of power mel clamped at `eps`;
    both waveforms are cropped to the shorter one first."""
    ref_t, est_t = _mono(ref), _mono(est)
    n = min(ref_t.numel(), est_t.numel())
    diff = log_mel(ref_t[:n], sample_rate, n_mels, n_fft, hop_length, eps) - log_mel(est_t[:n], sample_rate, n_mels, n_fft, hop_length, eps)
    return float(diff.abs().mean())


MCEP_ORDER = 24
"""Mel-cepstrum order (c1..c24 are compared): the usual setting of MCD in voice conversion (e.g. ESPnet, VCC)."""
FRAME_PERIOD_MS = 5.0
"""WORLD analysis frame period."""
MCD_CONSTANT = 10.0 * math.sqrt(2.0) / math.log(10.0)
"""dB per unit of Euclidean mel-cepstral distance: MCD = 10 / ln 10 * sqrt(2 * sum_d (c_d - c'_d)^2)."""


def mel_cepstrum(wav: np.ndarray, sample_rate: int, order: int = MCEP_ORDER) -> np.ndarray:
    """Mono wav [T] -> mel-cepstra [frames, order + 1] the way MCD is usually computed: WORLD's spectral envelope
    (pyworld: DIO F0 + StoneMask + CheapTrick) warped with SPTK's all-pass constant for the rate (pysptk.sp2mc)."""
    x = np.asarray(wav, dtype=np.float64)
    import pysptk  # imported here: it loads pkg_resources (a deprecation warning) and only MCD needs it
    import pyworld

    f0, t = pyworld.dio(x, sample_rate, frame_period=FRAME_PERIOD_MS)
    f0 = pyworld.stonemask(x, f0, t, sample_rate)
    envelope = pyworld.cheaptrick(x, f0, t, sample_rate)
    return pysptk.sp2mc(envelope, order=order, alpha=pysptk.util.mcepalpha(sample_rate))


def mcd_from_cepstra(ref: np.ndarray, est: np.ndarray) -> float:
    """Mel-cepstral distortion in dB between mel-cepstra [N, D] and [M, D], c0 (energy) excluded: the frames are
    aligned by DTW on the Euclidean distance of c1.. (librosa.sequence.dtw) and the per-frame MCD is averaged
    along the path."""
    if len(ref) == 0 or len(est) == 0:
        raise ValueError("mcd_from_cepstra: need at least one frame on each side")
    a, b = np.asarray(ref, np.float64)[:, 1:], np.asarray(est, np.float64)[:, 1:]
    dist = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    _, path = librosa.sequence.dtw(C=dist)
    return float(MCD_CONSTANT * dist[path[:, 0], path[:, 1]].mean())


def mel_cepstral_distortion(ref: np.ndarray, est: np.ndarray, sample_rate: int) -> float:
    """MCD in dB of an estimated waveform against its reference (mel_cepstrum + mcd_from_cepstra), comparable to
    the dB figures of the voice-conversion literature (typically 4-10 dB)."""
    return mcd_from_cepstra(mel_cepstrum(ref, sample_rate), mel_cepstrum(est, sample_rate))


class ELBOAccumulator:
    """Sums a VQ-VAE's forward outputs over a set (NLL nats, samples, latents, code counts [K]) and turns them into
    the set's reconstruction nats/sample, -ELBO bits/sample, perplexity and used codes: one definition for
    validation and evaluation."""

    def __init__(self) -> None:
        self.nll = 0.0
        self.n_samples = 0
        self.n_latents = 0
        self.counts: torch.Tensor | None = None

    def add(self, output) -> None:
        """Add one forward's sums (a model.VQVAEOutput: nll, n_samples, n_latents, counts [K])."""
        counts = output.counts.detach().double().cpu()
        self.counts = counts if self.counts is None else self.counts + counts
        self.nll += float(output.nll)
        self.n_samples += int(output.n_samples)
        self.n_latents += int(output.n_latents)

    def result(self, codebook_size: int, sample_rate: int) -> dict[str, float]:
        """reconstruction_loss (nats/sample), bits_per_sample (-ELBO), perplexity, used_codes; empty set -> error."""
        if self.counts is None or self.n_samples == 0:
            raise ValueError("ELBOAccumulator: no samples were added")
        terms = elbo_terms(self.nll, self.n_samples, self.n_latents, codebook_size, sample_rate)
        return {
            "reconstruction_loss": self.nll / self.n_samples,
            "bits_per_sample": terms["bits_per_sample"],
            "perplexity": float(perplexity(self.counts)),
            "used_codes": int((self.counts > 0).sum()),
        }
