"""F0 as a second stream beside the units: the pitch tracker, the frame contract, per-speaker log-F0 statistics,
the speaker normalisation and conversion mapping, and the sine-harmonic + noise excitation a source-filter decoder
filters.

Frame contract: a contour at `frame_rate` (200 Hz by default) has hop = sample_rate / frame_rate samples per frame
(80 at 16 kHz; it must be a whole number) and `num_f0_frames(n, hop) = n // hop` frames, as the encoder's units;
frame i describes samples [i * hop, (i + 1) * hop) and is measured at their centre, (i + 0.5) * hop. F0 is in Hz
and 0 wherever `voiced` is False; log-F0 is the natural log.

Tracker: Praat's autocorrelation method (Boersma 1993) through praat-parselmouth, `Sound.to_pitch_ac` with Praat's
default voicing settings. Chosen by benchmarks/f0_trackers.py (benchmarks/results/f0-trackers-*.json) over pyworld
DIO+StoneMask, pyworld Harvest and Praat's cross-correlation, on synthetic glottal-pulse speech of known F0
(vibrato, formants, unvoiced noise and silences; clean, 20 dB and 10 dB SNR): voicing error (VDE) 1.1 / 0.8 / 0.0 %
(DIO 1.6 / 0.2 / 0.1 %, Harvest 2.4 / 8.0 / 5.8 %), gross pitch error <= 0.1 % (all alike), 2-4 cents median fine
error (DIO 1-3, Praat cc 8); with Praat cc, the only trackers that call white, clipped and dithered noise unvoiced
(DIO voices 6-8 % of such frames, Harvest 6 %), which the bad-input rule needs; about 100x real time per CPU second on a
loaded core and 200x on a quiet one (DIO 144x, Harvest 6x). It is conservative: on the demo corpus it voices 77 % of
frames where Harvest voices 93 % (GPE between them 3 %).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import numpy as np
import parselmouth
import torch
from torch import Tensor

FRAME_RATE = 200.0
"""F0 frames per second: 4 per unit frame of a 50 Hz unit model, 80 samples at 16 kHz."""

F0_MIN, F0_MAX = 60.0, 600.0
"""Default search range (Hz) of the tracker: below the lowest male voices, above high female and child speech."""

TRACKER = "praat-ac"
"""The tracker's name in a units sidecar (`track`: Praat's autocorrelation method)."""

F0_DECIMALS = 1
"""F0 contours given to the decoder and stored in units files are rounded to 0.1 Hz (under 3 cents above 60 Hz), so
units + F0 read from a file decode exactly as from the audio (`quantise`)."""

MIN_LOG_F0_STD = 0.01
"""Floor of a speaker's log-F0 standard deviation (about 17 cents), so a monotone speaker still normalises."""


class F0Stats(NamedTuple):
    """A speaker's log-F0 mean and standard deviation over voiced frames (natural log of Hz)."""

    mean: float
    std: float


# ---- frame contract -------------------------------------------------------------------------------------------------


def f0_hop(sample_rate: int, frame_rate: float = FRAME_RATE) -> int:
    """Samples per F0 frame; ValueError unless sample_rate / frame_rate is a whole number (frames tile the samples)."""
    hop = sample_rate / frame_rate
    if hop != int(hop) or hop < 1:
        raise ValueError(f"f0 frame_rate {frame_rate} must divide the sample rate {sample_rate} into whole samples")
    return int(hop)


def num_f0_frames(n_samples: int, hop: int) -> int:
    """F0 frames of a waveform of n_samples samples: whole frames only, as `encoder.num_frames` counts units."""
    return n_samples // hop


def check_contour_length(n_f0: int, n: int, per_unit: int) -> None:
    """ValueError unless a contour of n_f0 frames fits units that cover n F0 frames, per_unit to a unit:
    n <= n_f0 <= n + per_unit (a whole-file track also covers the samples after the last whole unit); the rule of
    `model.fit_contour` and of F0 lines in units files."""
    if not n <= n_f0 <= n + per_unit:
        raise ValueError(f"F0 contour of {n_f0} frames does not fit its units: expected {n} to {n + per_unit} frames")


def quantise(f0: np.ndarray) -> np.ndarray:
    """F0 in Hz rounded to F0_DECIMALS decimals, float32: what a units file stores and reads back bit for bit."""
    return np.round(np.asarray(f0, np.float64), F0_DECIMALS).astype(np.float32)


def frame_times(n_frames: int, hop: int, sample_rate: int) -> np.ndarray:
    """Centre times (s) of frames 0 .. n_frames - 1: (i + 0.5) * hop / sample_rate, float64 [n_frames]."""
    return (np.arange(n_frames) + 0.5) * hop / sample_rate


def resample_contour(
    f0: np.ndarray, voiced: np.ndarray, times_in: np.ndarray, times_out: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A contour at times_in -> the same contour at times_out: voicing from the nearest input frame, F0 linear in
    log-F0 between the voiced input frames (so it never mixes in the 0 of unvoiced frames); float32 and bool."""
    v_in = voiced.astype(bool) & (f0 > 0)
    if len(times_out) == 0 or not v_in.any():
        return np.zeros(len(times_out), np.float32), np.zeros(len(times_out), bool)
    nearest = np.clip(np.searchsorted(times_in, times_out), 1, max(len(times_in) - 1, 1))
    left_closer = (times_out - times_in[nearest - 1]) <= (times_in[np.minimum(nearest, len(times_in) - 1)] - times_out)
    idx = np.where(left_closer, nearest - 1, nearest) if len(times_in) > 1 else np.zeros_like(nearest)
    v_out = v_in[idx]
    log_f0 = np.interp(times_out, times_in[v_in], np.log(f0[v_in]))
    return np.where(v_out, np.exp(log_f0), 0.0).astype(np.float32), v_out


def change_frame_rate(
    f0: np.ndarray, voiced: np.ndarray, hop_in: int, hop_out: int, n_out: int
) -> tuple[np.ndarray, np.ndarray]:
    """A contour of frames of hop_in samples -> n_out frames of hop_out samples (both under the frame contract)."""
    return resample_contour(f0, voiced, frame_times(len(f0), hop_in, 1), frame_times(n_out, hop_out, 1))


def to_samples(frames: Tensor, hop: int) -> Tensor:
    """[..., T_f] frame values -> [..., T_f * hop]: each frame's value repeated over its hop samples (the
    duplication NSF models use to bring F0 to the sample rate; each sample depends only on its own frame)."""
    return frames.repeat_interleave(hop, dim=-1)


# ---- tracker ----------------------------------------------------------------------------------------------------------


def track(
    wav: np.ndarray, sr: int, frame_rate: float = FRAME_RATE, fmin: float = F0_MIN, fmax: float = F0_MAX
) -> tuple[np.ndarray, np.ndarray]:
    """Mono waveform [T] at rate sr -> (F0 in Hz [T_f] float32, 0 where unvoiced; voiced [T_f] bool) under the
    frame contract. Silence, digital zeros and noise come out unvoiced; the result is always finite."""
    wav = np.asarray(wav, dtype=np.float64)
    if wav.ndim != 1:
        raise ValueError(f"track: wav must be mono [T], got shape {wav.shape}")
    if not np.isfinite(wav).all():
        raise ValueError("track: wav has non-finite samples (NaN/inf)")
    if not 0 < fmin < fmax:
        raise ValueError(f"track: need 0 < fmin < fmax, got fmin={fmin}, fmax={fmax}")
    hop = f0_hop(sr, frame_rate)
    n = num_f0_frames(len(wav), hop)
    times_out = frame_times(n, hop, sr)
    if n == 0 or not wav.any() or len(wav) / sr < 3.0 / fmin:  # Praat needs 3 periods of fmin per window
        return np.zeros(n, np.float32), np.zeros(n, bool)
    pitch = parselmouth.Sound(wav, sr).to_pitch_ac(time_step=1.0 / frame_rate, pitch_floor=fmin, pitch_ceiling=fmax)
    f0 = pitch.selected_array["frequency"]
    f0 = np.where(np.isfinite(f0) & (f0 >= fmin) & (f0 <= fmax), f0, 0.0)
    return resample_contour(f0, f0 > 0, pitch.xs(), times_out)


# ---- per-speaker statistics and normalisation --------------------------------------------------------------------------


def log_f0_stats(contours: Iterable[tuple[np.ndarray, np.ndarray]]) -> F0Stats | None:
    """Mean and std of log-F0 over the voiced frames of (f0, voiced) contours; None if no frame is voiced."""
    n, total, total_sq = 0, 0.0, 0.0
    for f0, voiced in contours:
        log_f0 = np.log(np.asarray(f0, np.float64)[np.asarray(voiced, bool)])
        n, total, total_sq = n + len(log_f0), total + log_f0.sum(), total_sq + (log_f0**2).sum()
    if n == 0:
        return None
    mean = total / n
    return F0Stats(mean, max(math.sqrt(max(total_sq / n - mean**2, 0.0)), MIN_LOG_F0_STD))


def speaker_stats(contours: Mapping[str, Iterable[tuple[np.ndarray, np.ndarray]]]) -> dict[str, F0Stats | None]:
    """speaker -> its (f0, voiced) contours  =>  speaker -> log-F0 statistics (None: no voiced frames; `stats_for`
    turns that into an error when the speaker is asked for)."""
    return {speaker: log_f0_stats(c) for speaker, c in contours.items()}


def stats_for(stats: Mapping[str, F0Stats | None], speaker: str) -> F0Stats:
    """One speaker's statistics; ValueError naming the speaker if it is unknown or had no voiced training frames."""
    if speaker not in stats:
        raise ValueError(f"speaker {speaker!r} has no log-F0 statistics (known: {', '.join(sorted(stats))})")
    s = stats[speaker]
    if s is None:
        raise ValueError(f"speaker {speaker!r} has no voiced training frames: its log-F0 statistics are undefined")
    return s


def normalise(f0: Tensor, voiced: Tensor, mean: float | Tensor, std: float | Tensor) -> Tensor:
    """F0 in Hz [..., T_f] -> speaker-normalised log-F0 (log f0 - mean) / std, 0 where unvoiced. mean, std: floats
    or tensors broadcasting against f0 (e.g. [B, 1] for a batch of speakers)."""
    voiced = voiced.bool() & (f0 > 0)
    return torch.where(voiced, (torch.log(f0.clamp_min(1e-3)) - mean) / std, torch.zeros_like(f0))


def denormalise(f0_norm: Tensor, voiced: Tensor, mean: float | Tensor, std: float | Tensor) -> Tensor:
    """`normalise`'s inverse: normalised log-F0 [..., T_f] -> F0 in Hz, 0 where unvoiced."""
    return torch.where(voiced.bool(), torch.exp(f0_norm * std + mean), torch.zeros_like(f0_norm))


def map_contour(f0: Tensor, voiced: Tensor, source: F0Stats, target: F0Stats) -> Tensor:
    """Voice-conversion F0: the source contour [..., T_f] (Hz) with its log-F0 mean and std moved to the target's
    (the field's standard linear log-F0 transform); 0 where unvoiced."""
    return denormalise(normalise(f0, voiced, source.mean, source.std), voiced & (f0 > 0), target.mean, target.std)


# ---- units <-> F0 frames -----------------------------------------------------------------------------------------------


def unit_index(n_f0_frames: int, f0_hop_: int, unit_hop: int, n_units: Tensor, device: torch.device | None = None
               ) -> Tensor:
    """For each item [B] with n_units units, the unit frame that holds each F0 frame's centre: [B, n_f0_frames] long,
    clamped to the item's last unit (so a padded batch reads each item as it would alone)."""
    centre = (torch.arange(n_f0_frames, device=device) * f0_hop_ + f0_hop_ // 2) // unit_hop
    return torch.minimum(centre[None], (n_units.to(device)[:, None] - 1).clamp_min(0))


def units_to_f0_frames(z: Tensor, n_f0_frames: int, f0_hop_: int, unit_hop: int, n_units: Tensor | None = None
                       ) -> Tensor:
    """Unit-rate features [B, D, T_z] -> the same at the F0 frame rate [B, D, n_f0_frames] (each F0 frame takes the
    unit it falls in). n_units [B]: units per item in a padded batch (None: all T_z)."""
    if n_units is None:
        n_units = torch.full((z.shape[0],), z.shape[-1], device=z.device)
    idx = unit_index(n_f0_frames, f0_hop_, unit_hop, n_units, z.device)
    return z.gather(2, idx[:, None].expand(-1, z.shape[1], -1))


# ---- excitation --------------------------------------------------------------------------------------------------------

SINE_AMP = 0.1
"""Amplitude of each harmonic of the excitation (hn-NSF's alpha)."""

VOICED_NOISE_STD = 0.003
"""Noise std of the excitation's noise channel where voiced (hn-NSF's sigma); where unvoiced it is SINE_AMP / 3."""


def harmonics(f0: Tensor, voiced: Tensor, sample_rate: int, hop: int = 1, n_harmonics: int = 8) -> Tensor:
    """The sine part of the excitation: F0 [B, T_f] in Hz and voicing [B, T_f] at hop samples per frame (hop=1: per
    sample) -> [B, n_harmonics, T_f * hop], channel k-1 = SINE_AMP * sin(k * phase) with phase the running sum of
    2 pi F0 / sample_rate, where voiced and k * F0 below Nyquist, else 0 (zero wherever unvoiced)."""
    if f0.dim() != 2 or voiced.shape != f0.shape:
        raise ValueError(f"excitation: f0 and voiced must both be [B, T_f], got {tuple(f0.shape)}, "
                         f"{tuple(voiced.shape)}")
    f = to_samples(f0.double(), hop)  # [B, T]
    v = to_samples(voiced.bool(), hop) & (f > 0)
    f = torch.where(v, f, torch.zeros_like(f))
    cycles = torch.cumsum(f / sample_rate, dim=-1)
    cycles = cycles - torch.floor(cycles)  # phase in cycles, kept in [0, 1) so it stays exact over long signals
    k = torch.arange(1, n_harmonics + 1, dtype=f.dtype, device=f.device)[None, :, None]  # [1, H, 1]
    audible = v[:, None] & (k * f[:, None] < sample_rate / 2)  # [B, H, T]
    return torch.where(audible, SINE_AMP * torch.sin(2 * math.pi * k * cycles[:, None]), 0.0).to(f0.dtype)


def excitation(
    f0: Tensor,
    voiced: Tensor,
    sample_rate: int,
    hop: int = 1,
    n_harmonics: int = 8,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Sine-harmonic + noise source of a neural source-filter model (Wang et al. 2019, hn-NSF): F0 [B, T_f] in Hz
    and voicing [B, T_f] at hop samples per frame (hop=1: per sample) -> e [B, n_harmonics + 1, T_f * hop]: the
    `harmonics`, then a Gaussian noise channel, std SINE_AMP / 3 where unvoiced and VOICED_NOISE_STD where voiced.
    Why: the filter need not learn periodicity, only shape it.
    """
    sines = harmonics(f0, voiced, sample_rate, hop, n_harmonics)
    v = to_samples(voiced.bool() & (f0 > 0), hop)
    noise = torch.randn(v.shape, generator=generator, device=f0.device, dtype=f0.dtype)
    noise = noise * torch.where(v, VOICED_NOISE_STD, SINE_AMP / 3).to(f0.dtype)
    return torch.cat([sines, noise[:, None]], dim=1)
