"""Matplotlib figures for TensorBoard and evaluation reports (headless backend): spectrograms with units, codebook
usage, unit-vs-phone co-occurrence. PNGs are written atomically."""
from __future__ import annotations

import math
import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from .io import atomic_write
from .metrics import log_mel as natural_log_mel
from .unitfile import run_length_encode

TOP_DB = 80.0
MAX_UNIT_LABELS = 80  # unit runs labelled with their id under a spectrogram; more would overlap


def log_mel(wav: torch.Tensor, sample_rate: int, n_mels: int = 80) -> torch.Tensor:
    """wav [T] -> log-mel spectrogram in dB [n_mels, frames], floored TOP_DB below its peak.

    The mel filterbank and framing are metrics.log_mel_distance's, so the pictures show what that distance measures.
    """
    db = (10.0 / math.log(10.0)) * natural_log_mel(wav, sample_rate, n_mels, eps=1e-10)
    return db.clamp_min(float(db.max()) - TOP_DB)


def _unit_strip(ax: plt.Axes, units: np.ndarray, frame_rate: float) -> None:
    """Units [T_z] as a colour strip on the time axis, each run labelled with its id (when they fit)."""
    ax.imshow(units[None] % 20, aspect="auto", cmap="tab20", vmin=0, vmax=19, interpolation="nearest",
              extent=(0, units.size / frame_rate, 0, 1))
    values, lengths = run_length_encode(units)
    if values.size <= MAX_UNIT_LABELS:
        ends = np.cumsum(lengths)
        for u, e, n in zip(values, ends, lengths):
            ax.text((e - n / 2) / frame_rate, 0.5, str(u), ha="center", va="center", fontsize=6, rotation=90)
    ax.set_yticks([])
    ax.set_ylabel("units", fontsize=8)


def spectrogram_figure(wavs: Sequence[torch.Tensor], titles: Sequence[str], sample_rate: int,
                       units: np.ndarray | None = None, frame_rate: float | None = None) -> plt.Figure:
    """Stacked log-mel spectrograms of several waveforms (e.g. original vs resynthesis) on one time axis,
    with the unit sequence [T_z] (at `frame_rate` units per second) drawn under them when given."""
    n = len(wavs) + (units is not None)
    ratios = [4] * len(wavs) + ([1] if units is not None else [])
    fig, axes = plt.subplots(n, 1, figsize=(10, 2.2 * len(wavs) + 0.6 * (units is not None)), squeeze=False,
                             sharex=True, gridspec_kw={"height_ratios": ratios})
    for ax, wav, title in zip(axes[:, 0], wavs, titles):
        ax.imshow(log_mel(wav, sample_rate).numpy(), origin="lower", aspect="auto",
                  extent=(0, wav.shape[-1] / sample_rate, 0, 1), cmap="magma")
        ax.set_title(title, fontsize=9)
        ax.set_yticks([])
    if units is not None:
        if frame_rate is None:
            raise ValueError("spectrogram_figure: units need their frame_rate")
        _unit_strip(axes[-1, 0], np.asarray(units), frame_rate)
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    return fig


def codebook_usage_figure(counts: np.ndarray, perplexity: float) -> plt.Figure:
    """Frames per code [K] as bars by code index (left) and sorted by count on a log scale (right)."""
    counts = np.asarray(counts, dtype=np.float64)
    fig, (by_id, ranked) = plt.subplots(1, 2, figsize=(12, 3.2), gridspec_kw={"width_ratios": [3, 2]})
    by_id.bar(np.arange(counts.size), counts, width=1.0, color="tab:blue")
    by_id.set_xlabel("code")
    by_id.set_ylabel("frames")
    by_id.set_xlim(-0.5, counts.size - 0.5)
    used = np.sort(counts[counts > 0])[::-1]
    ranked.bar(np.arange(used.size), used, width=1.0, color="tab:orange")
    ranked.set_yscale("log")
    ranked.set_xlabel("code rank")
    fig.suptitle(f"codebook usage: {used.size} of {counts.size} codes used, perplexity {perplexity:.1f}", fontsize=10)
    fig.tight_layout()
    return fig


def cooccurrence_figure(counts: np.ndarray, phones: Sequence[str]) -> plt.Figure:
    """p(phone | unit) for the used units of a co-occurrence count matrix [units, phones]; rows are sorted by
    their most likely phone (then by its probability), so a good unit inventory shows a block diagonal."""
    counts = np.asarray(counts, dtype=np.float64)
    units = np.flatnonzero(counts.sum(1) > 0)
    cond = counts[units] / counts[units].sum(1, keepdims=True)  # [used units, phones]
    best = cond.argmax(1)
    order = np.lexsort((-cond.max(1), best))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.22 * len(phones) + 2), max(4.0, 0.05 * units.size + 2)))
    im = ax.imshow(cond[order], aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(np.arange(len(phones)), list(phones), fontsize=6, rotation=90)
    if units.size <= 64:
        ax.set_yticks(np.arange(units.size), [str(u) for u in units[order]], fontsize=6)
    ax.set_xlabel("phone")
    ax.set_ylabel(f"unit ({units.size} used), sorted by most likely phone")
    fig.colorbar(im, ax=ax, label="p(phone | unit)")
    fig.tight_layout()
    return fig


def save_figure(fig: plt.Figure, path: str | os.PathLike, dpi: int = 120) -> None:
    """Write `fig` as a PNG atomically and close it."""
    try:
        with atomic_write(path, "wb") as f:
            fig.savefig(f, format="png", dpi=dpi)
    finally:
        plt.close(fig)
