"""The one-pass speech decoder of a neural source-filter model (Wang et al. 2019): a sine-harmonic + noise
excitation built from F0 (`f0.excitation`) passes through non-causal dilated gated convolutions (the WaveNet's layer
design, not autoregressive) conditioned on the units, the speaker-normalised log-F0 and a speaker embedding, and
comes out as a waveform. It is trained with a multi-resolution STFT loss, not a likelihood; the F0 predictor gives
it a contour when there is no source audio (units files, prior samples).

Rates: units at unit_hop samples per frame (T_z), F0 frames at f0_hop (T_f), samples (T = T_f * f0_hop). The
conditioning is computed at the F0 frame rate and broadcast over each frame's samples.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import auraloss
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .f0 import F0Stats, denormalise, excitation, f0_hop, normalise, track, units_to_f0_frames
from .layers import Residual

STFT_RESOLUTIONS: dict[str, list[int]] = {
    "fft_sizes": [512, 128, 2048],
    "hop_sizes": [80, 40, 640],
    "win_lengths": [320, 80, 1920],
}
"""The three STFT resolutions of hn-NSF at 16 kHz (Wang et al. 2019, sec. 3: frame lengths 320/80/1920 samples,
shifts 80/40/640, FFT 512/128/2048): 20 ms, 5 ms (fine timing of pulses) and 120 ms (harmonic resolution) frames."""


def _valid(lengths: Tensor | None, rows: int, size: int, device: torch.device) -> Tensor | None:
    """[B] valid counts -> [B, 1, size] float mask (None when lengths is None)."""
    if lengths is None:
        return None
    return (torch.arange(size, device=device)[None] < lengths.to(device)[:, None]).to(torch.float32)[:, None]


def _masked(x: Tensor, mask: Tensor | None) -> Tensor:
    """x zeroed past each item's end, as an item alone sees the convolutions' zero padding there."""
    return x if mask is None else x * mask


class SourceFilterDecoder(nn.Module):
    """(units z_q [B, D, T_z], normalised log-F0 and voicing [B, T_f], excitation [B, H+1, T_f*f0_hop], speaker
    embedding [B, G]) -> waveform [B, 1, T_f*f0_hop], in one pass.

    Defaults: 16 gated blocks of 64 channels, dilations 1..128 twice (receptive field 1,021 samples, 64 ms at
    16 kHz), about 0.6 M parameters (most in the per-layer conditioning projections, which run at the frame rate).
    """

    def __init__(
        self,
        latent_dim: int,
        speaker_dim: int,
        unit_hop: int,
        f0_hop: int,
        sample_rate: int,
        n_harmonics: int = 8,
        channels: int = 64,
        skip_channels: int = 64,
        kernel_size: int = 3,
        layers_per_cycle: int = 8,
        cycles: int = 2,
        cond_channels: int = 64,
        cond_layers: int = 2,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"source_filter.kernel_size must be odd (centred context), got {kernel_size}")
        self.unit_hop, self.f0_hop, self.channels, self.skip = unit_hop, f0_hop, channels, skip_channels
        self.sample_rate, self.n_harmonics, self.n_excitation = sample_rate, n_harmonics, n_harmonics + 1
        self.dilations = [2**i for i in range(layers_per_cycle)] * cycles
        n, r, s = len(self.dilations), channels, skip_channels
        self.cond_in = nn.Conv1d(latent_dim + 2, cond_channels, 3, padding=1)
        self.cond_stack = nn.ModuleList(Residual(cond_channels, 3, 2**i, "relu") for i in range(cond_layers))
        self.cond_proj = nn.Conv1d(cond_channels, n * 2 * r, 1)  # every layer's gate conditioning (+ its bias)
        self.speaker_proj = nn.Linear(speaker_dim, n * 2 * r, bias=False)
        self.source = nn.Conv1d(self.n_excitation, r, 1)
        self.dilated = nn.ModuleList(
            nn.Conv1d(r, 2 * r, kernel_size, dilation=d, padding=d * (kernel_size - 1) // 2, bias=False)
            for d in self.dilations
        )
        self.out = nn.ModuleList(nn.Conv1d(r, r + s, 1) for _ in self.dilations)  # residual | skip
        self.head = nn.Sequential(nn.ReLU(), nn.Conv1d(s, s, 1), nn.ReLU(), nn.Conv1d(s, 1, 1))

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> SourceFilterDecoder:
        """Build from a config mapping whose keys are the constructor's arguments."""
        return cls(**dict(cfg))

    @property
    def receptive_field(self) -> int:
        """Samples each output sample sees of the excitation (centred)."""
        return (self.dilated[0].kernel_size[0] - 1) * sum(self.dilations) + 1

    def conditioning(self, z_q: Tensor, f0_norm: Tensor, voiced: Tensor, g: Tensor, lengths: Tensor | None = None
                     ) -> Tensor:
        """Every layer's gate conditioning at the F0 frame rate: [B, L, 2C, T_f] (units + normalised log-F0 +
        voicing through a few non-causal convs, plus the speaker's projection)."""
        n_f0 = f0_norm.shape[-1]
        n_units = None if lengths is None else (lengths // self.unit_hop).clamp_min(1)
        frames = torch.cat([units_to_f0_frames(z_q, n_f0, self.f0_hop, self.unit_hop, n_units),
                            f0_norm[:, None], voiced[:, None].to(f0_norm.dtype)], dim=1)  # [B, D+2, T_f]
        mask = _valid(None if lengths is None else lengths // self.f0_hop, z_q.shape[0], n_f0, z_q.device)
        x = _masked(self.cond_in(_masked(frames, mask)), mask)
        for block in self.cond_stack:
            x = _masked(block(x), mask)
        c = self.cond_proj(x) + self.speaker_proj(g)[:, :, None]  # [B, L*2C, T_f]
        return c.unflatten(1, (len(self.dilations), 2 * self.channels))

    def forward(self, z_q: Tensor, f0_norm: Tensor, voiced: Tensor, e: Tensor, g: Tensor,
                lengths: Tensor | None = None) -> Tensor:
        """z_q [B, D, T_z], f0_norm and voiced [B, T_f], excitation e [B, H+1, T_f * f0_hop], speaker embedding
        g [B, G] -> waveform [B, 1, T_f * f0_hop]. lengths [B]: each item's valid samples in a padded batch (None:
        all), so lengths // unit_hop units and lengths // f0_hop F0 frames (the encoder's whole frames); every item
        then decodes exactly as it would alone, and its output is 0 past its end."""
        n_f0, hop = f0_norm.shape[-1], self.f0_hop
        if voiced.shape != f0_norm.shape or e.shape != (f0_norm.shape[0], self.n_excitation, n_f0 * hop):
            raise ValueError(f"source-filter decoder: need f0_norm, voiced [B, T_f] and e [B, {self.n_excitation}, "
                             f"T_f*{hop}]; got {tuple(f0_norm.shape)}, {tuple(voiced.shape)}, {tuple(e.shape)}")
        cond = self.conditioning(z_q, f0_norm, voiced, g, lengths)  # [B, L, 2C, T_f]
        mask = _valid(lengths, e.shape[0], e.shape[-1], e.device)
        x = _masked(self.source(e), mask)  # [B, C, T]
        skip = 0.0
        for i, (conv, out) in enumerate(zip(self.dilated, self.out)):
            p = (conv(x).unflatten(2, (n_f0, hop)) + cond[:, i, :, :, None]).flatten(2)  # [B, 2C, T]
            p_tanh, p_sigmoid = p.chunk(2, 1)
            res, y_skip = out(torch.tanh(p_tanh) * torch.sigmoid(p_sigmoid)).split([self.channels, self.skip], 1)
            x = _masked(x + res, mask)
            skip = skip + y_skip
        return _masked(self.head(skip), mask)

    def synthesise(self, z_q: Tensor, f0_hz: Tensor, voiced: Tensor, f0_norm: Tensor, g: Tensor,
                   lengths: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """The decoder interface `SpeechDecoder` calls: F0 in Hz and voicing [B, T_f] -> the excitation
        (`f0.excitation`) -> `forward`'s waveform [B, 1, T_f * f0_hop]."""
        e = excitation(f0_hz, voiced, self.sample_rate, self.f0_hop, self.n_harmonics, generator)
        return self(z_q, f0_norm, voiced, e, g, lengths)


def exp_sigmoid(x: Tensor) -> Tensor:
    """2 sigmoid(x)^ln 10 + 1e-7: DDSP's positive amplitude non-linearity (Engel et al. 2020), 0 .. 2 with a
    gradient that does not vanish for small amplitudes the way exp's would explode for large ones."""
    return 2 * torch.sigmoid(x) ** math.log(10) + 1e-7


def upsample_frames(x: Tensor, hop: int, n_frames: Tensor | None = None) -> Tensor:
    """Frames [B, C, T_f] (frame i measured at sample (i + 0.5) hop) -> samples [B, C, T_f * hop], linear between
    frame centres and held at the ends. n_frames [B]: each item's valid frames in a padded batch; an item's last
    valid frame is held past it (at the frame rate, before interpolating), so every item upsamples as it would
    alone."""
    if n_frames is not None:
        idx = torch.minimum(torch.arange(x.shape[-1], device=x.device)[None],
                            (n_frames.to(x.device) - 1).clamp_min(0)[:, None])  # [B, T_f]
        x = x.gather(2, idx[:, None].expand(-1, x.shape[1], -1))
    return F.interpolate(x, size=x.shape[-1] * hop, mode="linear", align_corners=False)


def harmonic_sum(amplitudes: Tensor, phase: Tensor, hop: int, n_frames: Tensor | None = None) -> Tensor:
    """sum_k A_k(t) sin(k phase(t)) for harmonic amplitudes [B, H, T_f] at frame centres, linearly interpolated
    between them as `upsample_frames` does (held at the ends and past each item's n_frames), and phase [B, T_f * hop]
    -> [B, T_f * hop].

    Why not `upsample_frames` then a sum: between two frame centres A_k(t) = lo_k + w(t) (hi_k - lo_k), so the sum is
    one matrix product per half-frame-shifted segment of hop samples with the segment's (lo, hi - lo) pair, which
    never writes the [B, H, T] amplitude tensor (3x faster on a CPU)."""
    _, H, n = amplitudes.shape
    if hop % 2:
        raise ValueError(f"harmonic_sum: the F0 frame hop must be even (frame centres on whole samples), got {hop}")
    if n_frames is not None:
        last = (n_frames.to(phase.device) - 1).clamp_min(0)[:, None]
        amplitudes = amplitudes.gather(2, torch.minimum(torch.arange(n, device=phase.device)[None], last)[:, None]
                                       .expand(-1, H, -1))
    held = torch.cat([amplitudes[..., :1], amplitudes, amplitudes[..., -1:]], -1)  # frames -1 .. n: [B, H, n + 2]
    lo, hi = held[..., :-1], held[..., 1:]  # segment j spans samples [(j - 1/2) hop, (j + 1/2) hop): [B, H, n + 1]
    half = hop // 2
    shifted = F.pad(phase, (half, hop - half))  # [B, (n + 1) hop]: segment j = samples j hop .. j hop + hop - 1
    k = torch.arange(1, H + 1, device=phase.device, dtype=phase.dtype)
    sines = torch.sin(shifted.unflatten(-1, (n + 1, hop))[..., None] * k)  # [B, n + 1, hop, H]
    pairs = torch.stack([lo, hi - lo], -1).transpose(1, 2)  # [B, n + 1, H, 2]
    both = sines @ pairs  # [B, n + 1, hop, 2]: sum_k sin * lo_k and sum_k sin * (hi_k - lo_k)
    w = (torch.arange(hop, device=phase.device, dtype=phase.dtype) + 0.5) / hop  # position past lo's centre
    out = both[..., 0] + w * both[..., 1]
    return out.flatten(1)[:, half: half + n * hop]


def filtered_noise(noise: Tensor, magnitudes: Tensor, hop: int) -> Tensor:
    """White noise [B, T_f * hop] shaped frame by frame by a zero-phase FIR whose magnitude response is
    magnitudes [B, N, T_f] (N bands from 0 to Nyquist; DDSP's frequency-sampling filter): each hop-long frame is
    convolved with its Hann-windowed impulse response (2 (N - 1) taps) and the frames are overlap-added. An output
    sample depends only on noise within N - 1 samples of it, so zero noise past an item's end keeps it exact."""
    _, N, n = magnitudes.shape
    taps = 2 * (N - 1)
    ir = torch.fft.irfft(magnitudes.transpose(1, 2).to(torch.complex64), n=taps)  # [B, T_f, taps], zero phase
    ir = torch.roll(ir, taps // 2, -1) * torch.hann_window(taps, device=ir.device)  # centred (linear phase)
    size = hop + taps - 1
    frames = noise.unflatten(-1, (n, hop))  # [B, T_f, hop]
    y = torch.fft.irfft(torch.fft.rfft(frames, size) * torch.fft.rfft(ir, size), size)  # [B, T_f, size]
    out = F.fold(y.transpose(1, 2), output_size=(1, n * hop + taps - 1), kernel_size=(1, size), stride=(1, hop))
    return out[:, 0, 0, taps // 2: taps // 2 + n * hop]  # undo the centring delay


class HarmonicNoiseDecoder(nn.Module):
    """DDSP harmonic-plus-noise source-filter decoder (Engel et al. 2020): gated non-causal dilated convs at the F0
    frame rate turn (units, normalised log-F0, voicing, speaker) into a loudness, a distribution over harmonics
    of F0 and a noise spectrum; an additive synthesiser at the given F0 and filtered white noise make the waveform.

    Why beside `SourceFilterDecoder`: the network runs at the frame rate (200 Hz), not the sample rate, so it costs
    about 1/80 as much per second of audio; periodicity and pitch come from the oscillators exactly.
    """

    def __init__(self, latent_dim: int, speaker_dim: int, unit_hop: int, f0_hop: int, sample_rate: int,
                 n_harmonics: int = 80, noise_bands: int = 65, channels: int = 128, kernel_size: int = 3,
                 layers_per_cycle: int = 4, cycles: int = 2) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"harmonic_noise.kernel_size must be odd (centred context), got {kernel_size}")
        self.unit_hop, self.f0_hop, self.sample_rate = unit_hop, f0_hop, sample_rate
        self.n_harmonics, self.noise_bands = n_harmonics, noise_bands
        self.inp = nn.Conv1d(latent_dim + 2, channels, kernel_size, padding=kernel_size // 2)
        self.speaker_proj = nn.Linear(speaker_dim, channels, bias=False)
        self.dilations = [2**i for i in range(layers_per_cycle)] * cycles
        self.blocks = nn.ModuleList(nn.Conv1d(channels, 2 * channels, kernel_size, dilation=d,
                                              padding=d * (kernel_size - 1) // 2) for d in self.dilations)
        self.mix = nn.ModuleList(nn.Conv1d(channels, channels, 1) for _ in self.dilations)
        self.head = nn.Conv1d(channels, 1 + n_harmonics + noise_bands, 1)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> HarmonicNoiseDecoder:
        """Build from a config mapping whose keys are the constructor's arguments."""
        return cls(**dict(cfg))

    def controls(self, z_q: Tensor, f0_norm: Tensor, voiced: Tensor, g: Tensor, lengths: Tensor | None = None
                 ) -> tuple[Tensor, Tensor, Tensor]:
        """Per F0 frame: (loudness logits [B, T_f], harmonic logits [B, H, T_f], noise band logits [B, N, T_f])."""
        n_f0 = f0_norm.shape[-1]
        n_units = None if lengths is None else (lengths // self.unit_hop).clamp_min(1)
        mask = _valid(None if lengths is None else lengths // self.f0_hop, z_q.shape[0], n_f0, z_q.device)
        frames = torch.cat([units_to_f0_frames(z_q, n_f0, self.f0_hop, self.unit_hop, n_units),
                            f0_norm[:, None], voiced[:, None].to(f0_norm.dtype)], dim=1)  # [B, D+2, T_f]
        h = _masked(self.inp(_masked(frames, mask)) + self.speaker_proj(g)[:, :, None], mask)
        for conv, mix in zip(self.blocks, self.mix):
            a, b = conv(F.leaky_relu(h, 0.1)).chunk(2, 1)
            h = _masked(h + mix(torch.tanh(a) * torch.sigmoid(b)), mask)
        out = self.head(h)
        return out[:, 0], out[:, 1: 1 + self.n_harmonics], out[:, 1 + self.n_harmonics:]

    def synthesise(self, z_q: Tensor, f0_hz: Tensor, voiced: Tensor, f0_norm: Tensor, g: Tensor,
                   lengths: Tensor | None = None, generator: torch.Generator | None = None,
                   noise: Tensor | None = None) -> Tensor:
        """z_q [B, D, T_z], F0 in Hz, voicing and normalised log-F0 [B, T_f], speaker embedding g [B, G] -> waveform
        [B, 1, T_f * f0_hop]. lengths [B]: valid samples per item of a padded batch (each item then decodes as it
        would alone; 0 past its end). noise [B, T]: the white noise source (default: drawn with `generator`)."""
        B, n_f0 = f0_hz.shape
        hop, T = self.f0_hop, n_f0 * self.f0_hop
        loudness, harmonic, noise_bands = self.controls(z_q, f0_norm, voiced, g, lengths)
        n_frames = None if lengths is None else lengths // hop
        k = torch.arange(1, self.n_harmonics + 1, device=f0_hz.device, dtype=f0_hz.dtype)[None, :, None]
        v = voiced.to(f0_hz.dtype)
        harmonic = harmonic.masked_fill(k * f0_hz[:, None] >= self.sample_rate / 2, -1e4)  # nothing above Nyquist
        amplitudes = torch.softmax(harmonic, 1) * (exp_sigmoid(loudness) * v)[:, None]  # [B, H, T_f]
        cycles = torch.cumsum(upsample_frames(f0_hz[:, None], hop, n_frames)[:, 0].double() / self.sample_rate, -1)
        phase = (2 * math.pi * (cycles - cycles.floor())).to(f0_hz.dtype)  # [B, T], kept small: exact over hours
        harmonics = harmonic_sum(amplitudes, phase, hop, n_frames)
        mask = _valid(lengths, B, T, f0_hz.device)
        if noise is None:
            noise = torch.rand(B, T, generator=generator, device=f0_hz.device, dtype=f0_hz.dtype) * 2 - 1
        noise = filtered_noise(_masked(noise[:, None], mask)[:, 0], exp_sigmoid(noise_bands - 5.0), hop)
        return _masked((harmonics + noise)[:, None], mask)


@functools.cache
def _mrstft() -> auraloss.freq.MultiResolutionSTFTLoss:
    return auraloss.freq.MultiResolutionSTFTLoss(**STFT_RESOLUTIONS, output="full")


def stft_loss(pred: Tensor, target: Tensor) -> tuple[Tensor, dict[str, float]]:
    """Multi-resolution STFT loss (auraloss: spectral convergence + log-magnitude L1, averaged over the
    STFT_RESOLUTIONS) of waveforms [B, 1, T] -> (total, its components for logging)."""
    total, sc, log_mag, _, _ = _mrstft()(pred, target)
    return total, {"stft": total.item(), "spectral_convergence": torch.stack(sc).mean().item(),
                   "log_magnitude": torch.stack(log_mag).mean().item()}


class F0Predictor(nn.Module):
    """(units z_q [B, D, T_z], speaker embedding [B, G]) -> (voicing logit, normalised log-F0), each [B, T_f]: a
    contour for decoding without source audio. Non-causal convs at the unit rate (the speaker added after the
    first), then the units brought to the F0 frame rate and smoothed by one conv there (so a unit's F0 frames
    need not be equal)."""

    def __init__(self, latent_dim: int, speaker_dim: int, unit_hop: int, f0_hop: int, channels: int = 64,
                 layers: int = 3) -> None:
        super().__init__()
        self.unit_hop, self.f0_hop = unit_hop, f0_hop
        self.inp = nn.Conv1d(latent_dim, channels, 3, padding=1)
        self.speaker_proj = nn.Linear(speaker_dim, channels, bias=False)
        self.stack = nn.ModuleList(Residual(channels, 3, 2**i, "relu") for i in range(layers))
        self.smooth = nn.Conv1d(channels, channels, 5, padding=2)
        self.head = nn.Conv1d(channels, 2, 1)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> F0Predictor:
        """Build from a config mapping whose keys are the constructor's arguments."""
        return cls(**dict(cfg))

    def forward(self, z_q: Tensor, g: Tensor, n_f0_frames: int, lengths: Tensor | None = None
                ) -> tuple[Tensor, Tensor]:
        """z_q [B, D, T_z], g [B, G] -> (voicing logits [B, n_f0_frames], normalised log-F0 [B, n_f0_frames]).
        lengths [B]: valid samples per item of a padded batch (each item then predicts as it would alone)."""
        n_units = None if lengths is None else (lengths // self.unit_hop).clamp_min(1)
        unit_mask = _valid(n_units, z_q.shape[0], z_q.shape[-1], z_q.device)
        x = _masked(F.relu(self.inp(_masked(z_q, unit_mask)) + self.speaker_proj(g)[:, :, None]), unit_mask)
        for block in self.stack:
            x = _masked(block(x), unit_mask)
        frame_mask = _valid(None if lengths is None else lengths // self.f0_hop, z_q.shape[0], n_f0_frames,
                            z_q.device)
        x = _masked(units_to_f0_frames(x, n_f0_frames, self.f0_hop, self.unit_hop, n_units), frame_mask)
        logit, f0_norm = self.head(F.relu(self.smooth(x))).unbind(1)
        return logit, f0_norm


def f0_predictor_loss(logit: Tensor, f0_norm_pred: Tensor, voiced: Tensor, f0_norm: Tensor,
                      valid: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """BCE of the voicing logits [B, T_f] plus the L1 error of the normalised log-F0 over the voiced frames;
    valid [B, T_f] bool: frames inside each item (None: all) -> (total, components for logging)."""
    valid = torch.ones_like(voiced, dtype=torch.bool) if valid is None else valid.bool()
    bce = F.binary_cross_entropy_with_logits(logit[valid], voiced[valid].to(logit.dtype))
    on = valid & voiced.bool()
    l1 = (f0_norm_pred[on] - f0_norm[on]).abs().mean() if on.any() else logit.new_zeros(())
    total = bce + l1
    return total, {"f0_total": total.item(), "voicing_bce": bce.item(), "log_f0_l1": l1.item()}


DECODERS: dict[str, type[nn.Module]] = {"harmonic_noise": HarmonicNoiseDecoder, "nsf": SourceFilterDecoder}
"""`model.speech.decoder.kind` -> the one-pass decoder class; each has `from_config` and `synthesise`."""


@dataclass
class SpeechOutput:
    """`SpeechDecoder.forward`'s result: waveform [B, 1, T]; the F0 predictor's voicing logits and normalised log-F0
    [B, T_f]; the target normalised log-F0 [B, T_f] (from the true contour)."""

    wav: Tensor
    voicing_logit: Tensor
    f0_norm_pred: Tensor
    f0_norm: Tensor


class SpeechDecoder(nn.Module):
    """The speech path beside the VQ-VAE's WaveNet: per-speaker log-F0 statistics (a buffer, saved with the model),
    an F0 predictor and a one-pass source-filter decoder with its own speaker table. Built from a `model.speech`
    config node (configs/speech/); trained on the VQ-VAE's frozen units by `training.speech`."""

    def __init__(self, cfg: Mapping[str, Any], latent_dim: int, unit_hop: int, sample_rate: int,
                 speakers: Sequence[str]) -> None:
        super().__init__()
        self.speakers, self.sample_rate, self.unit_hop = list(speakers), sample_rate, unit_hop
        self.frame_rate, self.f0_range = float(cfg["frame_rate"]), (float(cfg["f0_min"]), float(cfg["f0_max"]))
        self.f0_hop = f0_hop(sample_rate, self.frame_rate)
        if unit_hop % self.f0_hop:
            raise ValueError(f"model.speech.frame_rate: {self.frame_rate} Hz frames ({self.f0_hop} samples) must tile "
                             f"a unit frame ({unit_hop} samples)")
        decoder = dict(cfg["decoder"])
        kind = decoder.pop("kind")
        if kind not in DECODERS:
            raise ValueError(f"model.speech.decoder.kind: {kind!r} is not one of {', '.join(DECODERS)}")
        self.kind, dim = kind, int(cfg["speaker_dim"])
        self.speaker_embedding = nn.Embedding(len(self.speakers), dim)
        self.decoder = DECODERS[kind].from_config({"latent_dim": latent_dim, "speaker_dim": dim, "unit_hop": unit_hop,
                                                   "f0_hop": self.f0_hop, "sample_rate": sample_rate, **decoder})
        self.f0_predictor = F0Predictor(latent_dim, dim, unit_hop, self.f0_hop, **dict(cfg["f0_predictor"]))
        self.register_buffer("log_f0_stats", torch.zeros(len(self.speakers), 2))  # mean, std; std 0: no voiced frames

    def set_stats(self, stats: Mapping[str, F0Stats | None]) -> None:
        """Store each speaker's log-F0 mean and std (`f0.speaker_stats`); speakers without voiced frames keep 0."""
        for i, name in enumerate(self.speakers):
            s = stats.get(name)
            self.log_f0_stats[i] = torch.tensor([0.0, 0.0] if s is None else [s.mean, s.std])

    def speaker_stats(self, speaker: int) -> F0Stats:
        """The stored statistics of speaker index `speaker`; ValueError naming it when it had no voiced frames."""
        mean, std = self.log_f0_stats[speaker].tolist()
        if std <= 0:
            raise ValueError(f"speaker {self.speakers[speaker]!r} has no voiced training frames: no F0 statistics to "
                             "normalise or map its contour")
        return F0Stats(mean, std)

    def _stats(self, speaker: Tensor) -> tuple[Tensor, Tensor]:
        """speaker [B] -> (log-F0 mean [B, 1], std [B, 1]), checked (`speaker_stats`)."""
        for s in set(speaker.tolist()):
            self.speaker_stats(s)
        stats = self.log_f0_stats[speaker]
        return stats[:, :1], stats[:, 1:]

    def track(self, wav: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A model-rate mono waveform [T] -> (F0 Hz, voiced) [T // f0_hop] with this model's frame rate and range."""
        return track(wav, self.sample_rate, self.frame_rate, *self.f0_range)

    def normalised(self, f0_hz: Tensor, voiced: Tensor, speaker: Tensor) -> Tensor:
        """F0 [B, T_f] in Hz -> speaker-normalised log-F0 (0 where unvoiced)."""
        return normalise(f0_hz, voiced, *self._stats(speaker))

    def predict_f0(self, z_q: Tensor, speaker: Tensor, n_f0: int, lengths: Tensor | None = None
                   ) -> tuple[Tensor, Tensor]:
        """Units z_q [B, D, T_z] and speakers [B] -> (F0 Hz, voiced) [B, n_f0] from the F0 predictor, in the
        speaker's own register (its stored statistics)."""
        logit, f0_norm = self.f0_predictor(z_q, self.speaker_embedding(speaker), n_f0, lengths)
        voiced = logit > 0
        return denormalise(f0_norm, voiced, *self._stats(speaker)), voiced

    def _decode(self, z_q: Tensor, speaker: Tensor, f0_hz: Tensor, voiced: Tensor, lengths: Tensor | None,
                generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """(waveform [B, 1, T_f * f0_hop], the normalised log-F0 [B, T_f] it was given): F0 is 0 and unvoiced
        wherever either says so."""
        voiced = voiced.bool() & (f0_hz > 0)
        f0_hz = torch.where(voiced, f0_hz, torch.zeros_like(f0_hz))
        f0_norm = self.normalised(f0_hz, voiced, speaker)
        wav = self.decoder.synthesise(z_q, f0_hz, voiced, f0_norm, self.speaker_embedding(speaker), lengths, generator)
        return wav, f0_norm

    def synthesise(self, z_q: Tensor, speaker: Tensor, f0_hz: Tensor, voiced: Tensor, lengths: Tensor | None = None,
                   generator: torch.Generator | None = None) -> Tensor:
        """Units z_q [B, D, T_z], speakers [B], F0 (Hz) and voicing [B, T_f] -> waveform [B, 1, T_f * f0_hop]."""
        return self._decode(z_q, speaker, f0_hz, voiced, lengths, generator)[0]

    def forward(self, z_q: Tensor, speaker: Tensor, f0_hz: Tensor, voiced: Tensor, lengths: Tensor | None = None,
                generator: torch.Generator | None = None) -> SpeechOutput:
        """The training pass: the decoded waveform given the true contour, and the F0 predictor's guess of it."""
        logit, f0_norm_pred = self.f0_predictor(z_q, self.speaker_embedding(speaker), f0_hz.shape[-1], lengths)
        wav, f0_norm = self._decode(z_q, speaker, f0_hz, voiced, lengths, generator)
        return SpeechOutput(wav, logit, f0_norm_pred, f0_norm)
