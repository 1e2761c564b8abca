"""The field's ABX (ZeroSpeech's `zerospeech-libriabx2`, the libri-light ABX revamped) next to the project's own, on
one held-out set, for the model and the MFCC baseline: do the two implementations tell the same story?

The project's ABX (`audio_vqvae.metrics.abx_error`, what `audio-vqvae-eval` reports) draws at most 5,000 triplets
of phone tokens A, B, X (A and X the same phone, any context) and averages the errors. The field's scores
triphone items written from the same alignments (`#file onset offset #phone prev-phone next-phone speaker`, one
per phone that has a phone or a pause on both sides) and averages per context, phone pair and speaker
("within context") or per phone pair and speaker ("any context", ABX2's addition), with DTW over frame-wise
angular distances. Both score the same features of the same utterances:
- model units as one-hot vectors (angular distance 0 or 1/2: the hamming distance the project uses) at 50 Hz;
- the model's continuous encoder output z_e at its frame rate;
- the MFCC k-means baseline (fitted on the checkpoint's training split, as the eval fits it) one-hot, at 100 Hz;
- the baseline's CMVN'd MFCC + deltas themselves.

    pip install --no-deps zerospeech-libriabx2 && pip install pandas     # builds its Cython DTW (needs a compiler)
    (audio-vqvae-eval --field-abx scores the units and the baselines the same way; this adds the continuous rows)
    python benchmarks/field_abx.py pretrained/demo-units --data engines_heldout
    python benchmarks/field_abx.py pretrained/demo-units --data demo_heldout --max-utterances 24   # smaller, faster

Prints a table; writes benchmarks/results/field-abx-<data>-<date>.json (atomically).
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from measure import load_average, machine, write_results

from audio_vqvae import metrics as M
from audio_vqvae.alignments import Segment, build_vocab, frame_labels, load_alignments, matched_alignments
from audio_vqvae.data import evenly, load_wavs
from audio_vqvae.evaluation.baselines import FRAME_RATE as BASELINE_RATE
from audio_vqvae.evaluation.baselines import baseline_features, fit_baseline
from audio_vqvae.evaluation.field_abx import field_abx, item_lines, one_hot
from audio_vqvae.evaluation.sets import MAX_FIT_UTTERANCES, EvalOptions, corpus_set, data_config
from audio_vqvae.model import VQVAE

HERE = Path(__file__).resolve().parent


def own_abx(features: Mapping[str, np.ndarray], alignments: Mapping[str, Sequence[Segment]],
            speakers: Mapping[str, str], frame_rate: float, distance: str, opts: EvalOptions) -> dict[str, float]:
    """The project's ABX, as `audio-vqvae-eval` computes it (same triplet budget and seed)."""
    vocab = build_vocab(alignments)
    labels = {u: frame_labels(alignments[u], len(features[u]), frame_rate, vocab) for u in alignments}
    return {mode: M.abx_error(features, labels, speakers, mode, opts.abx_triplets, opts.seed, distance)[0]
            for mode in ("within", "across")}


def representations(model: VQVAE, data: str, max_utterances: int | None,
                    opts: EvalOptions) -> tuple[dict[str, Any], dict[str, list[Segment]], dict[str, str]]:
    """Features of every scored utterance under each representation, with the alignments and speakers."""
    seed = int(model.config.get("seed", 0))
    scored = corpus_set(data_config(model.config, data, []), "auto", seed, foreign=True)
    train = corpus_set(data_config(model.config, None, []), "val", seed).train
    utts = scored.utterances[:max_utterances]
    wavs = load_wavs(utts, model.sample_rate, None, model.peak_normalize)
    wavs = {u: w[: len(w) // model.hop * model.hop] for u, w in wavs.items()}
    fit = load_wavs(evenly(train, MAX_FIT_UTTERANCES), model.sample_rate, None, model.peak_normalize)
    baseline = fit_baseline(list(fit.values()), model.sample_rate, "training split", seed=opts.seed)
    latents, codes = {}, {}
    for u, w in wavs.items():
        z_e = model.encode_latents(torch.from_numpy(w).to(model.device)[None, None])
        latents[u], codes[u] = z_e[0].T.cpu().numpy(), model.quantizer.nearest(z_e)[0].cpu().numpy()
    base = {u: baseline.units(w) for u, w in wavs.items()}
    mfcc = {u: baseline_features(w, model.sample_rate) for u, w in wavs.items()}
    reps = {
        "model units (one-hot)": (model.frame_rate, {u: one_hot(c, model.codebook_size) for u, c in codes.items()},
                                  codes, "hamming"),
        "model z_e (continuous)": (model.frame_rate, latents, latents, "cosine"),
        "MFCC k-means K=64 (one-hot)": (BASELINE_RATE, {u: one_hot(b, baseline.n_units) for u, b in base.items()},
                                        base, "hamming"),
        "MFCC + deltas, CMVN (continuous)": (BASELINE_RATE, mfcc, mfcc, "cosine"),
    }
    by_id = {u.id: u for u in utts if u.id in wavs}
    alignments = matched_alignments(load_alignments(scored.root / "alignments"), by_id)
    return reps, alignments, {u: by_id[u].speaker for u in alignments}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a checkpoint or pretrained directory (e.g. pretrained/demo-units)")
    p.add_argument("--data", required=True, help="a data config with alignments/ (demo_heldout, engines_heldout)")
    p.add_argument("--max-utterances", type=int, help="score only the first N utterances (by id)")
    p.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/field-abx-<data>-<date>.json)")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    opts = EvalOptions()
    model = VQVAE.from_checkpoint(args.checkpoint, torch.device("cpu"))
    start, load = time.perf_counter(), load_average()
    reps, alignments, speakers = representations(model, args.data, args.max_utterances, opts)
    items = item_lines(alignments, speakers)
    rows = {}
    for name, (rate, feats, own_feats, distance) in reps.items():
        rows[name] = {"frame_rate": rate, "own": own_abx({u: own_feats[u] for u in alignments}, alignments,
                                                         speakers, rate, distance, opts),
                      "field": field_abx({u: feats[u] for u in alignments}, items, rate)}
        print(f"{name}: done ({time.perf_counter() - start:.0f} s)", flush=True)
    print(f"\nABX error (%) on {args.data}: {len(alignments)} utterances, {len(set(speakers.values()))} speakers, "
          f"{len(items) - 1} triphone items; own = audio-vqvae-eval's, field = zerospeech-libriabx2")
    print(f"{'features':34s} {'own within':>10s} {'own across':>10s} | {'field within/within-ctx':>23s} "
          f"{'field across/within-ctx':>23s} {'within/any':>10s} {'across/any':>10s}")
    for name, r in rows.items():
        o, f = r["own"], r["field"]
        print(f"{name:34s} {100 * o['within']:10.1f} {100 * o['across']:10.1f} | "
              f"{100 * f['within_within_context']:23.1f} {100 * f['across_within_context']:23.1f} "
              f"{100 * f['within_any_context']:10.1f} {100 * f['across_any_context']:10.1f}")
    result = {"data": args.data, "checkpoint": str(args.checkpoint), "n_utterances": len(alignments),
              "n_items": len(items) - 1, "abx_triplets_own": opts.abx_triplets, "seed": opts.seed,
              "rows": rows, "seconds": time.perf_counter() - start, "load_average_before": load,
              "machine": machine()}
    out = args.out or HERE / "results" / f"field-abx-{args.data}-{time.strftime('%Y-%m-%d')}.json"
    write_results(result, out)


if __name__ == "__main__":
    main()
