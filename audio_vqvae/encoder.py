"""Strided 1-D convolutional encoder: waveform [B, 1, T] -> latents z_e [B, D, T // hop].

Frame alignment: every strided layer pads its input by (kernel - stride) samples, split between left and right,
so a layer maps length n to exactly floor(n / stride). An optional log-mel front end is such a layer too (a fixed
windowed-DFT convolution with kernel n_fft and stride its hop), ahead of the learned ones. Stacking gives
T_z = floor(T / hop) with hop = product of the strides, for every T (T not divisible by hop included): latent frame i
summarises samples [i * hop, (i + 1) * hop) plus a symmetric context, and the T mod hop trailing samples never start
a frame.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torchaudio
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from .layers import ACTIVATIONS, Residual

INPLACE = ("relu", "leaky_relu", "elu")  # those that take inplace=True


def num_frames(n_samples: int, hop: int) -> int:
    """Latent frames the encoder gives for a waveform of n_samples samples."""
    return n_samples // hop


def _valid_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """[B] lengths -> [B, size] bool mask of positions < length."""
    return torch.arange(size, device=lengths.device) < lengths.unsqueeze(1)


def frame_rms_norm(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """x [B, C, T] -> each frame's channel vector divided by its root mean square: a bias-free ReLU encoder is
    positively homogeneous (f(a x) = a f(x) for a > 0), so after this the latents do not depend on the input gain."""
    return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + eps)


def window_mean(x: torch.Tensor, valid: torch.Tensor, half: int) -> torch.Tensor:
    """x [B, C, T], valid [B, 1, T] (1 = a frame of the item) -> each frame's mean of x over the valid frames within
    `half` frames on either side: the same for an item alone and in a zero-padded batch."""
    def total(v: torch.Tensor) -> torch.Tensor:
        return nn.functional.avg_pool1d(v, 2 * half + 1, stride=1, padding=half, count_include_pad=True)
    return total(x * valid) / total(valid).clamp_min(1.0 / (2 * half + 1))


class LogMel(nn.Module):
    """waveform [B, 1, T] -> log-mel frames [B, n_mels, T // hop] that do not depend on the input level.

    A fixed strided convolution computes the Hann-windowed DFT (kernel n_fft, stride hop, padded as the learned
    layers are), then power and a mel filterbank (torchaudio's). Without `cmn_seconds`, the log's floor is relative to
    the frame's mean band energy and each frame is minus its mean over the bands. With `cmn_seconds` (cepstral mean
    normalisation, as MFCC pipelines do per utterance), the floor is relative to the mean band energy within
    cmn_seconds around the frame and each band is minus its own mean over those frames: a fixed channel or vocal-tract
    tilt (a gain per band) cancels, silence stays below the speech around it, and the means are local, so the frames
    of a long file do not depend on how it is chunked. Scaling the input by g adds 2 ln g to every log energy, which
    either mean removes.
    """

    def __init__(self, sample_rate: int, n_fft: int, hop: int, n_mels: int, floor: float = 1e-5,
                 cmn_seconds: float | None = None) -> None:
        super().__init__()
        if n_fft < hop or (n_fft - hop) % 2:
            raise ValueError(f"model.encoder.frontend: n_fft ({n_fft}) must be >= hop ({hop}), by an even number")
        if cmn_seconds is not None and cmn_seconds <= 0:
            raise ValueError(f"model.encoder.frontend.cmn_seconds: {cmn_seconds} is not > 0 (null = off)")
        n_freq = n_fft // 2 + 1
        angle = 2 * math.pi * torch.arange(n_freq)[:, None] * torch.arange(n_fft)[None, :] / n_fft
        window = torch.hann_window(n_fft, periodic=True)
        dft = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window  # [2F, n_fft]: real and imaginary parts
        self.register_buffer("dft", dft[:, None, :], persistent=False)
        fbank = torchaudio.functional.melscale_fbanks(n_freq, 0.0, sample_rate / 2, n_mels, sample_rate)  # [F, M]
        self.register_buffer("fbank", fbank, persistent=False)
        self.hop, self.n_fft, self.n_mels, self.floor = hop, n_fft, n_mels, floor
        self.cmn_half = None if cmn_seconds is None else max(1, round(cmn_seconds * sample_rate / hop / 2))

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """wav [B, 1, T] (lengths [B]: valid samples of a zero-padded batch) -> [B, n_mels, T // hop]."""
        spec = nn.functional.conv1d(wav, self.dft, stride=self.hop, padding=(self.n_fft - self.hop) // 2)
        real, imag = spec.chunk(2, dim=1)
        mel = torch.einsum("bft,fm->bmt", real.square() + imag.square(), self.fbank)
        tiny = torch.finfo(mel.dtype).tiny
        if self.cmn_half is None:
            logmel = (mel + self.floor * mel.mean(1, keepdim=True) + tiny).log()
            return logmel - logmel.mean(1, keepdim=True)
        n = mel.shape[-1]
        valid = mel.new_ones(mel.shape[0], 1, n) if lengths is None else \
            _valid_mask(lengths // self.hop, n).unsqueeze(1).to(mel.dtype)
        level = window_mean(mel.mean(1, keepdim=True), valid, self.cmn_half)
        logmel = (mel + self.floor * level + tiny).log()
        return logmel - window_mean(logmel, valid, self.cmn_half)

    @property
    def reach(self) -> int:
        """Frames on each side that a frame's normalisation reads: the level's window, then the mean's."""
        return 0 if self.cmn_half is None else 2 * self.cmn_half

    @property
    def macs_per_frame(self) -> int:
        """Multiply-adds per output frame: the DFT and the filterbank."""
        return self.dft.shape[0] * self.n_fft + self.fbank.numel()


def _conv(c_in: int, c_out: int, kernel: int, stride: int, norm: str, bias: bool = True) -> nn.Module:
    """[padding, strided conv (+ norm)]. An even padding is the conv's own (no padded copy of the input); the first
    slot is then an Identity, which keeps the parameter names (and so the checkpoints) of the odd case."""
    if (kernel - stride) < 0:
        raise ValueError(f"encoder: kernel size {kernel} must be >= stride {stride}")
    pad = kernel - stride
    symmetric = pad % 2 == 0
    conv = nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=pad // 2 if symmetric else 0, bias=bias)
    layers: list[nn.Module] = [nn.Identity() if symmetric else nn.ConstantPad1d((pad // 2, pad - pad // 2), 0.0)]
    if norm == "weight":
        layers.append(weight_norm(conv))
    elif norm == "batch":
        layers += [conv, nn.BatchNorm1d(c_out)]
    elif norm == "none":
        layers.append(conv)
    else:
        raise ValueError(f"model.encoder.norm: unknown normalisation {norm!r} (use none, batch or weight)")
    return nn.Sequential(*layers)


def _activation(name: str) -> nn.Module:
    """The activation after each conv; in place where it can be (its input, a conv output, is not needed again)."""
    return ACTIVATIONS[name](inplace=True) if name in INPLACE else ACTIVATIONS[name]()


class Encoder(nn.Module):
    """An optional log-mel front end (`frontend`: n_fft, hop, n_mels, optionally floor and cmn_seconds; needs
    sample_rate), a stack of strided convolutions (each followed by the activation), optional residual dilated
    convolutions at the frame rate, and a 1x1 projection to the latent dim D."""

    def __init__(
        self,
        channels: Sequence[int],
        kernel_sizes: Sequence[int],
        strides: Sequence[int],
        latent_dim: int,
        activation: str,
        norm: str,
        residual_dilations: Sequence[int] = (),
        residual_kernel: int = 3,
        gain_invariant: bool = False,
        frontend: dict[str, float] | None = None,
        sample_rate: int | None = None,
    ) -> None:
        super().__init__()
        if not (len(channels) == len(kernel_sizes) == len(strides)):
            raise ValueError(
                "model.encoder: channels, kernel_sizes and strides must have the same length "
                f"(got {len(channels)}, {len(kernel_sizes)}, {len(strides)})"
            )
        if activation not in ACTIVATIONS:
            raise ValueError(f"model.encoder.activation: unknown {activation!r} (use {', '.join(ACTIVATIONS)})")
        if gain_invariant and (activation not in ("relu", "leaky_relu") or norm == "batch"):
            raise ValueError("model.encoder.gain_invariant needs a positively homogeneous encoder: activation relu or "
                             f"leaky_relu and norm none or weight (got {activation}, {norm})")
        blocks: list[nn.Module] = []
        c_in = 1
        if frontend is not None:
            mel = LogMel(sample_rate, **frontend)
            blocks.append(mel)
            c_in, channels = mel.n_mels, [mel.n_mels, *channels]
            kernel_sizes, strides = [mel.n_fft, *kernel_sizes], [mel.hop, *strides]
        for c_out, k, s in zip(channels[len(blocks):], kernel_sizes[len(blocks):], strides[len(blocks):]):
            blocks.append(nn.Sequential(_conv(c_in, c_out, k, s, norm, not gain_invariant), _activation(activation)))
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.residual = nn.ModuleList(
            Residual(c_in, residual_kernel, d, activation, not gain_invariant) for d in residual_dilations
        )
        self.gain_invariant = gain_invariant
        self.residual_reach = sum(d * (residual_kernel - 1) // 2 for d in residual_dilations)  # frames on each side
        self.proj = nn.Conv1d(c_in, latent_dim, 1)
        self.strides = list(strides)
        self.kernel_sizes = list(kernel_sizes)
        self.channels = list(channels)
        self.latent_dim = latent_dim
        self.hop = math.prod(strides)

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """wav [B, 1, T] -> z_e [B, D, T // hop].

        With `lengths` [B] (valid samples per item of a zero-padded batch), activations past each item's valid
        length are zeroed after every layer, which is exactly the zero padding a lone item would get: batched
        encoding then equals encoding each item on its own.
        """
        if wav.shape[-1] < self.hop:  # not one whole frame: the convolutions would need more input than there is
            return wav.new_zeros(wav.shape[0], self.latent_dim, 0)
        x = wav
        for block, stride in zip(self.blocks, self.strides):
            x = block(x, lengths) if isinstance(block, LogMel) else block(x)
            if lengths is not None:
                lengths = lengths // stride
                x = x * _valid_mask(lengths, x.shape[-1]).unsqueeze(1).to(x.dtype)
        for block in self.residual:
            x = block(x)
            if lengths is not None:
                x = x * _valid_mask(lengths, x.shape[-1]).unsqueeze(1).to(x.dtype)
        return self.proj(frame_rms_norm(x) if self.gain_invariant else x)

    @property
    def frontend(self) -> LogMel | None:
        """The log-mel front end (the first block), if any."""
        return self.blocks[0] if isinstance(self.blocks[0], LogMel) else None

    @property
    def receptive_field(self) -> int:
        """Input samples that one latent frame depends on."""
        rf, jump = 1, 1
        for k, s in zip(self.kernel_sizes, self.strides):
            rf += (k - 1) * jump
            jump *= s
        mel = 2 * self.frontend.reach * self.frontend.hop if self.frontend is not None else 0
        return rf + mel + 2 * self.residual_reach * jump

    def macs_per_second(self, sample_rate: int) -> float:
        """Multiply-adds per second of audio (convolutions and projection; biases and activations ignored)."""
        macs, rate, c_in = 0.0, float(sample_rate), 1
        for block, c_out, k, s in zip(self.blocks, self.channels, self.kernel_sizes, self.strides):
            rate /= s
            macs += (block.macs_per_frame if block is self.frontend else c_in * c_out * k) * rate
            c_in = c_out
        residual = sum(c_in * c_in * (b.conv.kernel_size[0] + 1) for b in self.residual) * rate
        return macs + residual + c_in * self.latent_dim * rate
