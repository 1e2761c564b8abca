"""Audio I/O and sample-level transforms: the one place that knows about files, sample rates and mu-law.

Files are read with `soundfile` (libsndfile: WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF, ...) as float32, downmixed to
mono by averaging channels and resampled with `soxr` at its HQ setting: band-limited and alias-free to well below
16-bit noise, fast (C, SIMD), works on any rational ratio (44.1 -> 16 kHz) without building huge polyphase kernels,
and is what librosa uses by default, so features computed elsewhere with librosa match ours.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr
import torch
import torchaudio.functional as AF

from .io import atomic_write

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64"})
"""File extensions (lower case) that corpus indexing treats as audio."""

SOXR_QUALITY = "HQ"
"""soxr's quality setting for every resampling (one-shot and streaming), so both give the same samples."""

SILENT_PEAK = 1e-4
"""A file whose peak |sample| is below this (-80 dBFS, about 3 LSB of 16-bit audio) counts as silent."""

SCAN_BLOCK_FRAMES = 1 << 20
"""Frames decoded at a time by `scan_audio`, so checking a file (and finding its peak) takes bounded memory."""

MAX_CHANNELS = 8
"""The most channels an in-memory array may have when its layout is guessed (see `to_mono`)."""

_RESAMPLE_CONTEXT_S = 0.01
"""Extra input read on each side of an excerpt before resampling it, so the filter's edge effects are cropped."""

_WAV_DATA_LOG = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_WAV_UNKNOWN_SIZE = (0xFFFFFFFF, 0x7FFFFFFF)  # streaming writers' "length unknown" placeholders, not truncation


class AudioError(Exception):
    """A file that cannot be used as audio; the message is the reason (e.g. "silent", "truncated: ...")."""


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header (or, after a full decode, its content) says about it."""

    frames: int
    sample_rate: int
    channels: int
    peak: float | None = None  # max |sample| of the whole file; known only after `scan_audio`

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def _reason(err: Exception) -> str:
    """Short reason for a libsndfile/OS error, without the path soundfile prepends."""
    return getattr(err, "error_string", None) or str(err)


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Header-only check: frames/rate/channels, or AudioError for empty, non-audio, unreadable, truncated-WAV files."""
    if os.path.getsize(path) == 0:
        raise AudioError("empty file (0 bytes)")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise AudioError(f"unreadable or not audio: {_reason(err)}") from None
    if info.frames <= 0:
        raise AudioError("empty: the file holds no audio frames")
    m = _WAV_DATA_LOG.search(info.extra_info)
    if m and int(m[1]) > int(m[2]) and int(m[1]) not in _WAV_UNKNOWN_SIZE:
        raise AudioError(f"truncated: header promises {m[1]} data bytes, the file has {m[2]}")
    return AudioInfo(info.frames, info.samplerate, info.channels)


def _read(path: str | os.PathLike, start: int, stop: int) -> np.ndarray:
    """Frames [start, stop) of a file as float32 [T, C]; AudioError if decoding fails or the file ends early."""
    try:
        x, _ = sf.read(str(path), start=start, stop=stop, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise AudioError(f"undecodable: {_reason(err)}") from None
    if len(x) < stop - start:
        raise AudioError(f"truncated: decoded {start + len(x)} frames, the header promises at least {stop}")
    if not np.isfinite(x).all():
        raise AudioError("non-finite samples (NaN/inf)")
    return x


def downmix(wav: np.ndarray) -> np.ndarray:
    """[T, C] -> [T]: average of the channels."""
    return wav.mean(axis=1, dtype=np.float32) if wav.shape[1] > 1 else np.ascontiguousarray(wav[:, 0])


def resample(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """[T] or [T, C] float32 at orig_sr -> same at target_sr (soxr HQ; the output starts at the same instant)."""
    return wav if orig_sr == target_sr else soxr.resample(wav, orig_sr, target_sr, quality=SOXR_QUALITY)


def resample_stream(orig_sr: int, target_sr: int) -> soxr.ResampleStream:
    """A streaming mono resampler with `resample`'s settings: its chunks concatenate to the one-shot result."""
    return soxr.ResampleStream(orig_sr, target_sr, 1, dtype="float32", quality=SOXR_QUALITY)


def scan_audio(path: str | os.PathLike) -> AudioInfo:
    """Full check: decode the whole file once, in blocks of SCAN_BLOCK_FRAMES (memory does not grow with the file's
    length), and record its peak; AudioError if it is unreadable, truncated, non-finite or silent."""
    info = audio_info(path)
    peak = 0.0
    for start in range(0, info.frames, SCAN_BLOCK_FRAMES):
        peak = max(peak, float(np.abs(_read(path, start, min(info.frames, start + SCAN_BLOCK_FRAMES))).max()))
    if peak < SILENT_PEAK:
        raise AudioError(f"silent: peak {peak:.2e} < {SILENT_PEAK:.0e}")
    return AudioInfo(info.frames, info.sample_rate, info.channels, peak)


def load_audio(
    path: str | os.PathLike,
    sample_rate: int,
    start: int = 0,
    frames: int | None = None,
    peak: float | None = None,
) -> torch.Tensor:
    """A file (or the excerpt [start, start + frames) of it, counted at `sample_rate`) -> mono float32 [T].

    Only the needed frames are decoded; when the file's rate differs, just that excerpt (plus a little context,
    aligned to the resampling period so the result equals the slice of a whole-file resampling) is resampled.
    The excerpt is cut at the end of the file. `peak`: scale the result so max |x| = peak (silent input is left as
    is); None = keep the file's level. AudioError when the file is unusable.
    """
    info = audio_info(path)
    src_sr = info.sample_rate
    total = math.floor(info.frames * sample_rate / src_sr)
    stop = total if frames is None else min(start + frames, total)
    if not 0 <= start < stop:
        raise AudioError(f"excerpt from sample {start} is outside the file ({total} samples at {sample_rate} Hz)")
    if src_sr == sample_rate:
        wav = downmix(_read(path, start, stop))
    else:
        period = src_sr // math.gcd(src_sr, sample_rate)  # input frames per whole number of output samples
        context = math.ceil(_RESAMPLE_CONTEXT_S * src_sr)
        a = max(0, math.floor(start * src_sr / sample_rate) - context) // period * period
        b = min(info.frames, math.ceil(stop * src_sr / sample_rate) + context)
        offset = a * sample_rate // src_sr  # exact: a is a multiple of period
        wav = resample(downmix(_read(path, a, b)), src_sr, sample_rate)[start - offset : stop - offset]
        if len(wav) < stop - start:  # the resampler's last output sample can fall short by one; pad it
            wav = np.pad(wav, (0, stop - start - len(wav)))
    wav = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
    return wav if peak is None else normalize_peak(wav, peak)


def normalize_peak(wav: torch.Tensor, peak: float) -> torch.Tensor:
    """Scale wav so max |wav| = peak; silent input (peak < SILENT_PEAK) is returned unchanged."""
    current = float(wav.abs().max()) if wav.numel() else 0.0
    return wav if current < SILENT_PEAK else wav * (peak / current)


def to_mono(wav: torch.Tensor | np.ndarray, channels_first: bool | None = None) -> torch.Tensor:
    """In-memory audio [T], [C, T] or [T, C] -> mono float32 [T] on the CPU (channels averaged, as for files).

    channels_first: True for [C, T] (torchaudio's layout), False for [T, C] (soundfile's); None guesses from the
    shape: the channel axis is the one of at most MAX_CHANNELS while the other is longer. A 2-D shape that does not
    tell (both axes short, or both long) is a ValueError asking for channels_first.
    """
    x = torch.as_tensor(wav).detach().to("cpu", torch.float32)
    if x.dim() == 1:
        return x
    if x.dim() != 2:
        raise ValueError(f"expected a waveform [T], [C, T] or [T, C], got shape {tuple(x.shape)}")
    if channels_first is None:
        rows_are_channels, cols_are_channels = x.shape[0] <= MAX_CHANNELS, x.shape[1] <= MAX_CHANNELS
        if rows_are_channels == cols_are_channels:
            raise ValueError(f"audio of shape {tuple(x.shape)}: cannot tell channels from time; pass "
                             "channels_first=True for [C, T] or False for [T, C]")
        channels_first = rows_are_channels
    return x.mean(0 if channels_first else 1)


def scale(wav: torch.Tensor, gain: float) -> torch.Tensor:
    """wav * gain in wav's dtype (the gain rounded to it first), so every caller gets the same samples."""
    return wav if gain == 1.0 else wav * torch.tensor(gain, dtype=wav.dtype)


def input_gain(peak: float, peak_normalize: float | None) -> float:
    """The scale applied to audio whose peak |sample| (before downmix and resampling) is `peak`: it brings the peak
    to the training data's `peak_normalize` (1 when that is off or the audio is silent)."""
    return 1.0 if peak_normalize is None or peak < SILENT_PEAK else peak_normalize / peak


def file_gain(path: str | os.PathLike, peak_normalize: float | None, peak: float | None = None) -> float:
    """`input_gain` of a file's whole-file peak: `peak` when the corpus index knows it, else a streaming scan."""
    if peak_normalize is None:
        return 1.0
    return input_gain(peak if peak is not None else scan_audio(path).peak, peak_normalize)


def load_model_input(path: str | os.PathLike, sample_rate: int, peak_normalize: float | None,
                     peak: float | None = None, start: int = 0, frames: int | None = None) -> torch.Tensor:
    """A file (or its excerpt [start, start + frames) at sample_rate) -> the model's input [T]: mono, at the model
    rate, scaled by `file_gain`. The one path from a file to model input (training, validation, evaluation, and
    block by block `extract`); in-memory arrays take the same steps in `VQVAE.prepare`. AudioError if unusable."""
    return scale(load_audio(path, sample_rate, start, frames), file_gain(path, peak_normalize, peak))


def prepare_waveform(
    wav: torch.Tensor | np.ndarray, sr: int, sample_rate: int, channels_first: bool | None = None
) -> torch.Tensor:
    """In-memory audio ([T], [C, T] or [T, C], see `to_mono`) at rate sr -> mono float32 [T] at sample_rate (CPU).

    Uses the same downmix and resampler as files, so units from an array and from its file agree.
    """
    return torch.from_numpy(resample(to_mono(wav, channels_first).numpy(), sr, sample_rate))


def save_audio(
    path: str | os.PathLike,
    wav: torch.Tensor | np.ndarray,
    sample_rate: int,
    subtype: str | None = None,
    compression_level: float | None = None,
) -> None:
    """Write mono [T] or [1, T] audio atomically; the format follows the extension (.wav, .flac, .ogg ...).

    subtype: soundfile's (None = PCM_16 for WAV/FLAC); integer subtypes clip to [-1, 1].
    compression_level: FLAC/OGG effort in [0, 1] (None = libsndfile's default).
    """
    x = wav.detach().cpu().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav)
    x = x.reshape(-1).astype(np.float32)
    if subtype not in ("FLOAT", "DOUBLE"):
        x = np.clip(x, -1.0, 1.0)
    fmt = os.path.splitext(path)[1].lstrip(".").upper()
    with atomic_write(path, "wb") as f:
        sf.write(f, x, sample_rate, subtype=subtype, format=fmt, compression_level=compression_level)


def mu_law_encode(wav: torch.Tensor, n_classes: int = 256) -> torch.Tensor:
    """Float waveform in [-1, 1] -> mu-law class indices in [0, n_classes) (long), same shape.

    Out-of-range and infinite samples clip to the end classes and NaN maps to the class of silence, so a bad sample
    never indexes out of range; the encoder still sees it, so the training loss turns non-finite and the step is
    skipped (counted by the trainer) instead of crashing."""
    return AF.mu_law_encoding(torch.nan_to_num(wav, nan=0.0).clamp(-1.0, 1.0), n_classes)


def mu_law_decode(classes: torch.Tensor, n_classes: int = 256) -> torch.Tensor:
    """Mu-law class indices -> float waveform in [-1, 1], same shape."""
    return AF.mu_law_decoding(classes, n_classes)
