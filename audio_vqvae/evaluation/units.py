"""Unit quality next to the MFCC k-means baseline: phone scores (purity, PNMI, ABX), bitrates, speaker leakage,
stability, collapse, and the comparison rows."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .. import metrics as M
from ..alignments import Segment, build_vocab, frame_labels
from ..data import Utterance, sentence_of
from ..model import VQVAE, units_of
from ..quantizer import perplexity
from ..stability import unit_stability
from .baselines import MFCCKMeans
from .field_abx import field_unit_abx
from .probes import speaker_leakage
from .sets import EvalOptions

if TYPE_CHECKING:
    from .scoring import Totals  # the pass that produces them; imported for the annotation only

log = logging.getLogger("audio_vqvae.evaluate")

# ---- units: quality, leakage and stability, next to the baseline ----------------------------------------------


def _abx(features: dict[str, np.ndarray], labels: dict[str, np.ndarray], speakers: dict[str, str], mode: str,
         opts: EvalOptions, distance: str) -> tuple[float | None, int]:
    """ABX error and triplet count, or (None, 0) when the set offers no triplet of that kind."""
    try:
        return M.abx_error(features, labels, speakers, mode, opts.abx_triplets, opts.seed, distance)
    except ValueError as err:
        log.warning("ABX %s (%s): %s", mode, distance, err)
        return None, 0


def phone_scores(units: dict[str, np.ndarray], alignments: dict[str, list[Segment]], speakers: dict[str, str],
                 n_units: int, frame_rate: float, opts: EvalOptions,
                 latents: dict[str, np.ndarray] | None = None) -> tuple[dict[str, Any], np.ndarray, list[str]]:
    """Purity, PNMI and ABX (hamming on unit ids; cosine on `latents` when given; with `opts.field_abx` also the
    field's, `abx.field`) of unit sequences at `frame_rate` against phone alignments; also the unit x phone
    co-occurrence counts and the phone names."""
    utts = list(alignments)
    vocab = build_vocab(alignments)
    labels = {u: frame_labels(alignments[u], units[u].size, frame_rate, vocab) for u in utts}
    counts = M.cooccurrence(np.concatenate([units[u] for u in utts]), np.concatenate([labels[u] for u in utts]),
                            n_units, len(vocab))
    spk = {u: speakers[u] for u in utts}
    abx: dict[str, Any] = {"within": None, "across": None, "triplets": {}}
    for mode in ("within", "across"):
        abx[mode], abx["triplets"][mode] = _abx({u: units[u] for u in utts}, labels, spk, mode, opts, "hamming")
        if latents is not None:
            abx[f"continuous_{mode}"], _ = _abx({u: latents[u] for u in utts}, labels, spk, mode, opts, "cosine")
    if opts.field_abx:
        abx["field"] = field_unit_abx(units, alignments, spk, n_units, frame_rate)
    scores = {
        "n_utterances": len(utts), "n_phones": len(vocab), "n_frames": int(counts.sum()),
        "phone_purity": M.phone_purity(counts), "cluster_purity": M.cluster_purity(counts),
        "pnmi": M.pnmi(counts) if (counts.sum(0) > 0).sum() > 1 else None, "abx": abx,
    }
    return scores, counts, sorted(vocab, key=vocab.get)


def unit_summary(units: dict[str, np.ndarray], utterances: dict[str, Utterance], n_units: int, seconds: float,
                 opts: EvalOptions, sentence_key: str | None = None) -> dict[str, Any]:
    """Bitrates and speaker leakage of one unit inventory on the scored set; the leakage folds group utterances by
    sentence (`data.sentence_of` of the corpus's data.sentence_key)."""
    ids, sentence = list(units), sentence_of(sentence_key)
    return {
        "n_units": n_units,
        "n_frames": sum(len(units[u]) for u in ids),
        # + 0.0: one code has entropy -0.0, which would print as "-0"
        "entropy_bits_per_second": M.entropy_bitrate([units[u] for u in ids], seconds) + 0.0,
        "entropy_bits_per_second_dedup": M.entropy_bitrate([units[u] for u in ids], seconds, dedup=True) + 0.0,
        "speaker_leakage": speaker_leakage([units[u] for u in ids], n_units, [utterances[u].speaker for u in ids],
                                           [sentence(u) for u in ids], opts.seed),
    }


COMPARED = (  # (label, path into a unit section, higher is better, a win only if the units did not collapse)
    ("PNMI", ("phones", "pnmi"), True, False),
    ("phone purity", ("phones", "phone_purity"), True, False),
    ("ABX within, units", ("phones", "abx", "within"), False, False),
    ("ABX across, units", ("phones", "abx", "across"), False, False),
    ("field ABX within, units (zerospeech-libriabx2, any context)", ("phones", "abx", "field", "within_any_context"),
     False, False),
    ("field ABX across, units (zerospeech-libriabx2, any context)", ("phones", "abx", "field", "across_any_context"),
     False, False),
    ("entropy bitrate (bits/s)", ("entropy_bits_per_second",), False, True),
    ("entropy bitrate after dedup (bits/s)", ("entropy_bits_per_second_dedup",), False, True),
    ("speaker leakage (accuracy)", ("speaker_leakage", "accuracy"), False, True),
    ("frame agreement, +6 dB", ("stability", "gain_+6dB", "frame_agreement"), True, True),
    ("frame agreement, -6 dB", ("stability", "gain_-6dB", "frame_agreement"), True, True),
    ("frame agreement, noise 30 dB SNR", ("stability", "noise_30dB", "frame_agreement"), True, True),
    ("frame agreement, noise 20 dB SNR", ("stability", "noise_20dB", "frame_agreement"), True, True),
    ("frame agreement, 16-sample shift", ("stability", "shift_16", "frame_agreement"), True, True),
)
"""The measures on which the model's units are compared with the MFCC k-means baseline. Low bitrate, low leakage
and high stability are what a constant sequence scores: for collapsed units they are no win (beats_baseline None).
The field ABX rows appear only when it was scored (`--field-abx`)."""
COLLAPSE_PERPLEXITY = 2.0
"""Units with a lower codebook perplexity on the scored set count as collapsed..."""
COLLAPSE_TOP_SHARE = 0.9
"""...and so do units whose most used code covers more than this share of the scored frames."""


def collapse(counts: np.ndarray) -> dict[str, Any]:
    """Whether units with code counts [K] collapsed to a handful of codes (perplexity < COLLAPSE_PERPLEXITY or one
    code on more than COLLAPSE_TOP_SHARE of the frames), with both numbers."""
    ppl = float(perplexity(torch.as_tensor(counts, dtype=torch.float64)))
    top = float(counts.max() / max(counts.sum(), 1))
    return {"collapsed": ppl < COLLAPSE_PERPLEXITY or top > COLLAPSE_TOP_SHARE, "perplexity": ppl,
            "top_code": int(counts.argmax()), "top_code_share": top}


def _get(node: Any, path: Sequence[str]) -> Any:
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def comparison(model_units: dict[str, Any], baseline: dict[str, Any], collapsed: bool = False,
               model_rate: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Per compared measure: the model's value, the baseline's, and whether the model beats it (None if n/a, or if
    the units collapsed and the measure rewards a constant sequence); with `model_rate` (the baseline at the
    model's frame rate) also baseline_model_rate and beats_baseline_model_rate."""
    rows = []
    for label, path, higher, needs_units in COMPARED:
        a = _get(model_units, path)
        if "field" in path and a is None:
            continue
        row: dict[str, Any] = {"measure": label, "model": a, "higher_is_better": higher}
        for name, side in (("baseline", baseline), ("baseline_model_rate", model_rate)):
            if side is None:
                continue
            b = _get(side, path)
            void = a is None or b is None or collapsed and needs_units
            row[name], row["beats_" + name] = b, None if void else bool(a > b if higher else a < b)
        rows.append(row)
    return rows


BASELINE_SETTINGS = "13 MFCC + delta + delta-delta, 25 ms window (or one hop), per-utterance CMVN, k-means"


def baseline_section(baseline: MFCCKMeans, totals: Totals, alignments: dict[str, list[Segment]],
                     opts: EvalOptions, sentence_key: str | None = None) -> dict[str, Any]:
    """One baseline's part of the `units` section, scored by the code that scores the model's units: what it was
    fitted on and its frame rate, bitrates, speaker leakage, stability and (when aligned) phone scores."""
    ids = list(totals.codes)
    units = {u: baseline.units(totals.wavs[u]) for u in ids}
    section = {"fitted_on": baseline.fitted_on, "frame_rate": baseline.frame_rate, "settings": BASELINE_SETTINGS,
               **unit_summary(units, totals.utterances, baseline.n_units, totals.seconds, opts, sentence_key),
               "stability": unit_stability(baseline.units, [totals.wavs[u] for u in ids], seed=opts.seed)}
    if alignments:
        speakers = {u: totals.utterances[u].speaker for u in ids}
        section["phones"], _, _ = phone_scores(units, alignments, speakers, baseline.n_units, baseline.frame_rate, opts)
    return section


def score_units(model: VQVAE, totals: Totals, baseline: MFCCKMeans, alignments: dict[str, list[Segment]],
                opts: EvalOptions, model_rate: MFCCKMeans | None = None, sentence_key: str | None = None,
                ) -> tuple[dict[str, Any], tuple[np.ndarray, list[str]] | None]:
    """The `units` section: the model's units and the baseline's clusters (and, given `model_rate`, the same
    baseline at the model's frame rate, as mfcc_kmeans_model_rate), each with phone scores (when aligned),
    bitrates, speaker leakage (folds grouped by the data.sentence_key sentence) and stability, and the comparison;
    plus the model's co-occurrence for the figure."""
    ids = list(totals.codes)
    speakers = {u: totals.utterances[u].speaker for u in ids}

    def model_units(wav: np.ndarray) -> np.ndarray:
        return units_of(model, [wav])[0]

    mine = unit_summary(totals.codes, totals.utterances, model.codebook_size, totals.seconds, opts, sentence_key)
    mine["stability"] = unit_stability(model_units, [totals.wavs[u] for u in ids], seed=opts.seed)
    figure = None
    if alignments:
        mine["phones"], counts, phones = phone_scores(
            totals.codes, alignments, speakers, model.codebook_size, model.frame_rate, opts, totals.latents)
        figure = (counts, phones)
    mine["collapse"] = collapse(totals.counts)
    section = {"model": mine, "baseline": baseline_section(baseline, totals, alignments, opts, sentence_key)}
    if model_rate is not None:
        section["mfcc_kmeans_model_rate"] = baseline_section(model_rate, totals, alignments, opts, sentence_key)
    section["comparison"] = comparison(mine, section["baseline"], mine["collapse"]["collapsed"],
                                       section.get("mfcc_kmeans_model_rate"))
    return section, figure
