"""Unit learning curves: cheap unit measures the trainer logs at each validation step (TensorBoard scalars).

The trainer builds the items once (`curve_items`: a few validation utterances with their phone alignments) and calls
`unit_curves(model, items)` at each validation; it returns {"units/<name>": value}. Cost: two encoder passes over
the items (clean and +6 dB) plus numpy bookkeeping, a few seconds at most on the demo with the `small` model.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .. import metrics as M
from ..alignments import Segment, build_vocab, frame_labels, matched_alignments
from ..data import Utterance, evenly, load_wavs
from ..model import VQVAE, units_of
from ..quantizer import perplexity
from ..stability import frame_agreement, perturb

CURVE_UTTERANCES = 16
"""Validation utterances the curves are computed on (evenly spaced by id)."""
CURVE_SECONDS = 2.0
"""Each is cropped to its first 2 s."""
CURVE_PERTURBATION = "gain_+6dB"
"""The stability perturbation of the curves (the cheapest; the full set is in audio-vqvae-eval)."""


@dataclass
class CurveItem:
    """One utterance of the curve set: mono wav [T] at the model rate and its phone segments (None if unaligned)."""

    wav: np.ndarray
    segments: list[Segment] | None


def curve_items(utterances: Sequence[Utterance], sample_rate: int, peak_normalize: float | None,
                alignments: Mapping[str, list[Segment]] | None = None, n: int = CURVE_UTTERANCES,
                max_seconds: float = CURVE_SECONDS) -> list[CurveItem]:
    """Up to n utterances (evenly spaced) read once as validation reads them (data.peak_normalize), each cropped to
    max_seconds, with their alignments (`alignments.load_alignments(<corpus>/alignments)`), found by utterance id or
    file stem."""
    chosen = {u.id: u for u in evenly(utterances, n)}
    found = matched_alignments(alignments or {}, chosen)
    wavs = load_wavs(list(chosen.values()), sample_rate, max_seconds, peak_normalize)
    return [CurveItem(wav, found.get(uid)) for uid, wav in wavs.items()]


@torch.no_grad()
def unit_curves(model: VQVAE, items: Sequence[CurveItem]) -> dict[str, float]:
    """{"units/...": value}: entropy bitrate (and after dedup), codebook perplexity of the units, frame agreement
    under +6 dB gain, and, when items carry alignments, phone purity and PNMI. The items are the model's input
    already (`curve_items`), so they are encoded as they are (`model.units_of`). The model's mode is restored."""
    was_training = model.training
    model.eval()
    try:
        clean = units_of(model, [it.wav for it in items])
        louder = units_of(model, [perturb(it.wav, CURVE_PERTURBATION) for it in items])
    finally:
        model.train(was_training)
    seconds = sum(it.wav.size for it in items) / model.sample_rate
    counts = np.bincount(np.concatenate(clean), minlength=model.codebook_size)
    frames = np.array([c.size for c in clean], dtype=np.float64)
    agree = np.array([frame_agreement(a, b) for a, b in zip(clean, louder)])
    out = {
        "units/entropy_bits_per_second": M.entropy_bitrate(clean, seconds),
        "units/entropy_bits_per_second_dedup": M.entropy_bitrate(clean, seconds, dedup=True),
        "units/perplexity": float(perplexity(torch.as_tensor(counts, dtype=torch.float64))),
        f"units/agreement_{CURVE_PERTURBATION}": float((agree * frames).sum() / max(frames.sum(), 1.0)),
    }
    aligned = {i: it.segments for i, it in enumerate(items) if it.segments}
    if aligned:
        vocab = build_vocab(aligned)
        labels = [frame_labels(aligned[i], clean[i].size, model.frame_rate, vocab) for i in aligned]
        co = M.cooccurrence(np.concatenate([clean[i] for i in aligned]), np.concatenate(labels), model.codebook_size,
                            len(vocab))
        if co.sum() > 0:
            out["units/phone_purity"] = M.phone_purity(co)
            if (co.sum(0) > 0).sum() > 1:
                out["units/pnmi"] = M.pnmi(co)
    return out
