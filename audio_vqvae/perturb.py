"""Speaker-changing perturbations of the encoder's view that keep length and alignment (issue 20).

The encoder sees the perturbed wav while the decoder predicts the original, so the codes must carry what the
perturbation leaves alone (the phones) and can drop what it changes (the vocal tract, the pitch, the channel):

- `shift_spectrum`: every frequency (pitch and formants together) scaled by a factor, the length kept: resampled
  (the `change_speed` step, to 1/100) and stretched back by a phase vocoder (torchaudio), per item.
- `change_gender`: Praat's "Change gender" (praat-parselmouth, as ContentVec does): formants scaled by one factor and
  the pitch median by another, duration unchanged; per item on the CPU.
- `random_equalise`: a random smooth gain curve over frequency in the STFT domain (the channel / voice-quality
  tilt), per item.
- `random_clip`: hard clipping below the item's peak (a recording made too hot), per item: not speaker-changing, but
  a log-spectral front end sees the distortion in its weak bands, which this teaches the encoder to ignore.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio

N_FFT = 512
"""STFT size of the phase vocoder and the equaliser (32 ms at 16 kHz)."""
HOP = 128
"""Their STFT hop."""
SHIFT_METHODS = ("torch", "parselmouth")


def _uniform(bounds: Sequence[float], n: int) -> list[float]:
    lo, hi = bounds
    return (lo + (hi - lo) * torch.rand(n)).tolist()


def _fit_length(x: torch.Tensor, n: int) -> torch.Tensor:
    """x [..., T'] cropped or zero-padded at the end to [..., n]."""
    return x[..., :n] if x.shape[-1] >= n else F.pad(x, (0, n - x.shape[-1]))


def shift_spectrum_one(wav: torch.Tensor, factor: float) -> torch.Tensor:
    """wav [T] -> [T] with every frequency times `factor` (to 1/100), same length and timing: resampled from 100 to
    round(100 / factor) (all frequencies times factor, length / factor), then phase-vocoded back to T samples."""
    T, new = wav.shape[-1], round(100 / factor)
    if new == 100:
        return wav
    short = torchaudio.functional.resample(wav, 100, new)  # length ~ T / factor
    window = torch.hann_window(N_FFT, device=wav.device)
    spec = torch.stft(short, N_FFT, HOP, window=window, return_complex=True)  # [F, frames]
    advance = torch.linspace(0, torch.pi * HOP, spec.shape[-2], device=wav.device)[..., None]
    stretched = torchaudio.functional.phase_vocoder(spec, short.shape[-1] / T, advance)
    return _fit_length(torch.istft(stretched, N_FFT, HOP, window=window, length=T), T)


def shift_spectrum(wav: torch.Tensor, bounds: Sequence[float]) -> torch.Tensor:
    """wav [B, 1, T] -> [B, 1, T], item b's frequencies times a factor drawn uniformly in bounds = (lo, hi)."""
    factors = _uniform(bounds, wav.shape[0])
    return torch.stack([shift_spectrum_one(w[0], f)[None] for w, f in zip(wav, factors)])


def change_gender_one(wav: np.ndarray, sample_rate: int, formant: float, pitch: float) -> np.ndarray:
    """wav [T] -> [T]: Praat's "Change gender" with formant ratio `formant`, the pitch median times `pitch` (75-600 Hz
    pitch range, range ratio 1, duration factor 1); unvoiced input keeps its pitch (median 0 = no change)."""
    import parselmouth
    from parselmouth.praat import call

    sound = parselmouth.Sound(np.asarray(wav, dtype=np.float64), sampling_frequency=sample_rate)
    with warnings.catch_warnings():  # a pause-only crop: "no voiced segments", the formant shift still applies
        warnings.simplefilter("ignore", parselmouth.PraatWarning)
        median = call(sound.to_pitch(), "Get quantile", 0, 0, 0.5, "Hertz")
        target = 0.0 if not np.isfinite(median) else float(median) * pitch
        out = call(sound, "Change gender", 75, 600, formant, target, 1.0, 1.0).values[0]
    out = out[: len(wav)] if len(out) >= len(wav) else np.pad(out, (0, len(wav) - len(out)))
    return out.astype(np.float32)


def change_gender(wav: torch.Tensor, sample_rate: int, formant: Sequence[float], pitch: Sequence[float]) -> torch.Tensor:
    """wav [B, 1, T] -> [B, 1, T] through `change_gender_one`, formant and pitch ratios drawn per item in the bounds."""
    out = [change_gender_one(w[0].detach().float().cpu().numpy(), sample_rate, f, p)
           for w, f, p in zip(wav, _uniform(formant, len(wav)), _uniform(pitch, len(wav)))]
    return torch.from_numpy(np.stack(out))[:, None].to(wav)


def random_equalise(wav: torch.Tensor, max_db: float, knots: int) -> torch.Tensor:
    """wav [B, 1, T] -> [B, 1, T] through a random smooth gain curve per item: gains uniform in +-max_db dB at
    `knots` points evenly spaced over the STFT bins, linearly interpolated between them (phase untouched)."""
    B, _, T = wav.shape
    window = torch.hann_window(N_FFT, device=wav.device)
    spec = torch.stft(wav[:, 0], N_FFT, HOP, window=window, return_complex=True)  # [B, F, frames]
    db = (2 * torch.rand(B, 1, knots, device=wav.device) - 1) * max_db
    gain = 10 ** (F.interpolate(db, size=spec.shape[1], mode="linear", align_corners=True) / 20)  # [B, 1, F]
    return torch.istft(spec * gain.transpose(1, 2), N_FFT, HOP, window=window, length=T)[:, None]


def random_clip(wav: torch.Tensor, bounds: Sequence[float]) -> torch.Tensor:
    """wav [B, 1, T] -> [B, 1, T] hard-clipped at each item's peak times 10^(-d / 20), d drawn per item uniformly in
    bounds = (lo, hi) dB (what a +d dB gain into a full-scale converter does to a peak-normalised file, up to level)."""
    lo, hi = bounds
    d = lo + (hi - lo) * torch.rand(wav.shape[0], 1, 1, device=wav.device)
    limit = wav.abs().amax(-1, keepdim=True) * 10 ** (-d / 20)
    return wav.clamp(-limit, limit)


def perturb_on(cfg: Mapping[str, Any] | None) -> bool:
    """Whether a `model.perturb` node changes anything (a formant range, equalise_db > 0 or a clip_db range)."""
    return cfg is not None and (cfg.get("formant") is not None or float(cfg.get("equalise_db") or 0.0) > 0
                                or cfg.get("clip_db") is not None)


def perturb_view(wav: torch.Tensor, cfg: Mapping[str, Any], sample_rate: int) -> torch.Tensor:
    """The encoder's training view per a `model.perturb` node: the spectrum shift (`formant` bounds, null = off, by
    `shift_method`; `pitch` bounds for parselmouth), the random equaliser (`equalise_db` > 0), then the clipping
    (`clip_db` bounds, null = off). wav [B, 1, T]."""
    if cfg.get("formant") is not None:
        method = cfg.get("shift_method", "torch")
        if method not in SHIFT_METHODS:
            raise ValueError(f"model.perturb.shift_method: {method!r} is not one of {', '.join(SHIFT_METHODS)}")
        if method == "torch":
            wav = shift_spectrum(wav, cfg["formant"])
        else:
            wav = change_gender(wav, sample_rate, cfg["formant"], cfg.get("pitch") or (1.0, 1.0))
    if float(cfg.get("equalise_db") or 0.0) > 0:
        wav = random_equalise(wav, float(cfg["equalise_db"]), int(cfg.get("equalise_knots", 8)))
    if cfg.get("clip_db") is not None:
        wav = random_clip(wav, cfg["clip_db"])
    return wav
