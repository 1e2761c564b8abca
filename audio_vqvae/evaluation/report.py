"""Evaluation library behind `audio-vqvae-eval` (audio_vqvae/cli/eval.py): ELBO, bitrates, codebook statistics, unit
quality against phone alignments next to the MFCC k-means baseline, speaker leakage, unit stability, resynthesis and
conversion quality (pitch, speaker-ID probe, recogniser WER, MCD, round-trip units; against the speech targets), the
exact latent posterior probe and figures.

Everything is scored on held-out data, and the report says which: by default the corpus's test split (held-out
speakers, and held-out sentences where the data config has them), else the validation split (training speakers'
held-out sentences). Only the training split is used for fitting (the baseline's k-means and the speaker probe).

Speakers the decoder does not know (held-out speakers keep never-trained rows in the speaker table) get no ELBO, no
teacher-forced resynthesis and no posterior probe: those need p(x | z, speaker), which is meaningless for an
untrained embedding row. Their units are scored like every other utterance's, and they are conversion sources.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import metrics as M
from ..alignments import load_alignments, matched_alignments
from ..audio import save_audio
from ..checkpoint import file_sha256
from ..data import evenly, load_wavs
from ..io import atomic_write
from ..model import VQVAE
from ..plots import codebook_usage_figure, cooccurrence_figure, save_figure, spectrogram_figure
from ..prior.model import UnitPrior
from ..quantizer import perplexity
from .baselines import MFCCKMeans, fit_baseline
from .posterior import summarize
from .prior import prior_metrics
from .probes import SpeakerProbe, accuracy, fit_speaker_probe
from .resynthesis import mean_or_none, resynthesis_jobs, resynthesis_quality
from .scoring import Totals, evaluate_set
from .sets import MAX_FIT_UTTERANCES, MIN_SAMPLES, EvalOptions, EvalSet, trained_speakers
from .units import score_units

log = logging.getLogger("audio_vqvae.evaluate")

def set_metrics(model: VQVAE, totals: Totals) -> dict[str, Any]:
    """ELBO (decoder-known speakers only), bitrates and codebook sections of metrics.json."""
    elbo, acc = None, totals.elbo
    if acc.n_samples:
        elbo = acc.result(model.codebook_size, model.sample_rate)
        elbo |= M.elbo_terms(acc.nll, acc.n_samples, acc.n_latents, model.codebook_size, model.sample_rate)
        elbo |= {"n_samples": acc.n_samples, "n_latents": acc.n_latents,
                 "n_utterances": len(totals.elbo_utterances), "speakers": "decoder-known (trained) speakers only"}
    return {
        "elbo": elbo,
        "bitrate": {"latent_bits_per_second": M.latent_bitrate(model.frame_rate, model.codebook_size)},
        "codebook": {
            "size": model.codebook_size,
            "used_codes": int((totals.counts > 0).sum()),
            "perplexity": float(perplexity(torch.as_tensor(totals.counts, dtype=torch.float64))),
        },
        "teacher_forced_log_mel_distance": mean_or_none(totals.teacher_forced),
    }


def speaker_probe(set_: EvalSet, known: Sequence[str], model: VQVAE,
                  opts: EvalOptions) -> tuple[SpeakerProbe | None, dict[str, Any] | None]:
    """The speaker-ID probe, fitted on the training split's audio of the known speakers and scored on their
    validation (held-out sentence) audio; (None, None) without a training split of two or more known speakers."""
    train = [u for u in set_.train if u.speaker in known]
    if len({u.speaker for u in train}) < 2:
        return None, None
    sample_rate = model.sample_rate
    train_wavs = load_wavs(evenly(train, MAX_FIT_UTTERANCES), sample_rate, opts.max_seconds, model.peak_normalize)
    by_id = {u.id: u for u in train}
    probe = fit_speaker_probe(list(train_wavs.values()), [by_id[u].speaker for u in train_wavs], sample_rate)
    val = [u for u in set_.val if u.speaker in known]
    info: dict[str, Any] = {"fitted_on": f"{len(train_wavs)} training-split utterances of "
                                         f"{len(probe.speakers)} speakers", "natural_val_accuracy": None}
    if val:
        val_wavs = load_wavs(val, sample_rate, opts.max_seconds, model.peak_normalize)
        by_id = {u.id: u for u in val}
        info["natural_val_accuracy"] = accuracy(probe.predict(list(val_wavs.values())),
                                                [by_id[u].speaker for u in val_wavs])
        info["natural_val_utterances"] = len(val_wavs)
    return probe, info


def baselines_for(set_: EvalSet, totals: Totals, model: VQVAE,
                  opts: EvalOptions) -> tuple[MFCCKMeans, MFCCKMeans | None]:
    """The MFCC k-means baseline, fitted on the training split's audio (or on the scored audio if there is none),
    and the same at the model's frame rate (mfcc_kmeans_model_rate; None when that is the baseline's own)."""
    if set_.train:
        wavs = load_wavs(evenly(set_.train, MAX_FIT_UTTERANCES), model.sample_rate, opts.max_seconds,
                         model.peak_normalize)
        audio, fitted_on = list(wavs.values()), f"training split ({len(wavs)} utterances)"
    else:
        audio, fitted_on = list(totals.wavs.values()), "the scored audio itself (no training split given)"
    baseline = fit_baseline(audio, model.sample_rate, fitted_on, seed=opts.seed)
    if baseline.frame_rate == model.frame_rate:
        return baseline, None
    return baseline, fit_baseline(audio, model.sample_rate, fitted_on, seed=opts.seed, hop_s=model.hop / model.sample_rate)


def write_figures(model: VQVAE, out: Path, totals: Totals, perplexity_: float,
                  cooccurrence: tuple[np.ndarray, list[str]] | None,
                  resynthesis: list[tuple[str, str, torch.Tensor]]) -> list[str]:
    """The PNGs (and the audio of the excerpt and of every resynthesis) into `out`; returns the figure names."""
    save_figure(codebook_usage_figure(totals.counts, perplexity_), out / "codebook_usage.png")
    names = ["codebook_usage.png"]
    if cooccurrence is not None:
        save_figure(cooccurrence_figure(*cooccurrence), out / "unit_phone_cooccurrence.png")
        names.append("unit_phone_cooccurrence.png")
    (out / "audio").mkdir(exist_ok=True)
    if totals.excerpt is not None:
        utt, panels, units = totals.excerpt
        files, titles, wavs = zip(*panels)
        fig = spectrogram_figure(wavs, [f"{utt}: {t}" for t in titles], model.sample_rate, units, model.frame_rate)
        save_figure(fig, out / "excerpt.png")
        names.append("excerpt.png")
        for name, wav in zip(files, wavs):
            save_audio(out / "audio" / f"{utt}_{name}.wav", wav, model.sample_rate)
    if resynthesis:
        files, titles, wavs = zip(*resynthesis)
        save_figure(spectrogram_figure(wavs, titles, model.sample_rate), out / "resynthesis.png")
        names.append("resynthesis.png")
        for name, wav in zip(files, wavs):
            save_audio(out / "audio" / f"{name}.wav", wav, model.sample_rate)
    return names


def evaluate_checkpoint(model: VQVAE, checkpoint: str, set_: EvalSet, out: Path, opts: EvalOptions,
                        alignment_dir: Path | None = None, prior: UnitPrior | None = None,
                        prior_warning: str | None = None) -> dict[str, Any]:
    """Score `model` on `set_` (and its units under a learned `prior`; `prior_warning`: why that prior is not this
    VQ-VAE's, when used anyway), write metrics.json, report.md, figures and audio into `out`; return the metrics."""
    torch.manual_seed(opts.seed)  # model.decode samples from the global generator
    known = trained_speakers(model, set_.train)
    out.mkdir(parents=True, exist_ok=True)
    totals = evaluate_set(model, set_, known, opts)
    if not totals.codes:
        raise ValueError(f"no utterance of {set_.description} could be evaluated "
                         f"(unreadable, or shorter than {MIN_SAMPLES} samples)")
    scored_speakers = sorted({u.speaker for u in totals.utterances.values()})
    m: dict[str, Any] = {
        "checkpoint": {"path": checkpoint, "sha256": file_sha256(checkpoint), "step": model.step,
                       "codebook_size": model.codebook_size, "hop": model.hop, "sample_rate": model.sample_rate,
                       "frame_rate": model.frame_rate, "receptive_field": model.decoder.receptive_field},
        "data": {"source": set_.description, "corpus": set_.corpus, "split": set_.split, "n_utterances": len(totals.codes),
                 "speakers": scored_speakers,
                 "unknown_to_decoder": [s for s in scored_speakers if s not in known],
                 "seconds": totals.seconds, "too_short": totals.too_short, "train_utterances": len(set_.train)},
        **set_metrics(model, totals),
        "posterior": summarize(totals.probes, model.codebook_size) if totals.probes else None,
        "prior": prior_metrics(prior, model, totals, prior_warning) if prior is not None else None,
    }
    alignments = matched_alignments(load_alignments(alignment_dir), totals.utterances) if alignment_dir else {}
    if alignment_dir is not None and not alignments:
        log.warning("%s holds no alignment for the evaluated utterances: no phone scores", alignment_dir)
    baseline, model_rate = baselines_for(set_, totals, model, opts)
    m["units"], cooccurrence = score_units(model, totals, baseline, alignments, opts, model_rate, set_.sentence_key)
    m["units"]["alignments"] = str(alignment_dir) if alignments else None
    probe, m["speaker_probe"] = speaker_probe(set_, known, model, opts)
    self_utts = [u for u in set_.val if u.speaker in known][: opts.n_resynth] if set_.val else \
        [totals.utterances[u] for u in totals.elbo_utterances][: opts.n_resynth]
    self_wavs = load_wavs(self_utts, model.sample_rate, opts.max_seconds, model.peak_normalize)
    jobs = resynthesis_jobs(
        model, {u.id: (self_wavs[u.id], u.speaker) for u in self_utts if u.id in self_wavs},
        {u: (totals.wavs[u], totals.utterances[u].speaker) for u in list(totals.codes)[: opts.n_convert]}, known, opts)
    decoded = self_utts + [totals.utterances[u] for u in list(totals.codes)[: opts.n_convert]]
    whole = [u.id for u in decoded if opts.max_seconds is None or u.duration <= opts.max_seconds]
    transcripts = {u: set_.transcripts[u] for u in whole if u in set_.transcripts}  # WER: uncropped audio only
    m["resynthesis"], panels = resynthesis_quality(model, jobs, probe, opts, transcripts)
    m["figures"] = write_figures(model, out, totals, m["codebook"]["perplexity"], cooccurrence, panels)
    with atomic_write(out / "metrics.json") as f:
        json.dump(m, f, indent=2)
    with atomic_write(out / "report.md") as f:
        f.write(markdown_report(m))
    return m


# ---- report -------------------------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value + 0.0:.{digits}g}" if isinstance(value, float) else str(value)


def report_rows(m: dict[str, Any]) -> list[tuple[str, str]]:
    """(quantity, value) rows of the model summary."""
    d, e, c = m["data"], m["elbo"], m["codebook"]
    rows = [
        ("scored data", (f"{d['source']}: {d['n_utterances']} utterances, {len(d['speakers'])} speakers, "
                        f"{d['seconds']:.1f} s")),
        ("speakers unknown to the decoder (no ELBO / teacher forcing)", ", ".join(d["unknown_to_decoder"]) or "none"),
        ("-ELBO (bits per sample), known speakers", _fmt(e and e["bits_per_sample"])),
        ("ELBO utterances", _fmt(e and e["n_utterances"])),
        ("latent bitrate T_z log2 K / s (bits/s)", _fmt(m["bitrate"]["latent_bits_per_second"])),
        ("codebook perplexity / used codes", f"{_fmt(c['perplexity'])} / {c['used_codes']} of {c['size']}"),
        ("teacher-forced log-mel distance", _fmt(m["teacher_forced_log_mel_distance"])),
    ]
    if m.get("prior"):
        q = m["prior"]
        rows += [("KL(q || p) bits/s: uniform prior / learned prior",
                  f"{_fmt(q['kl_bits_per_second_uniform'])} / {_fmt(q['kl_bits_per_second_prior'])}"),
                 ("learned prior: unit perplexity (of K)", f"{_fmt(q['unit_perplexity'])} (of {c['size']})")]
        if q.get("vqvae_mismatch"):
            rows.append(("learned prior: WARNING, used with --force", q["vqvae_mismatch"]))
        if q["elbo"]:
            rows.append(("-ELBO bits/sample: uniform prior / learned prior, known speakers",
                         f"{_fmt(q['elbo']['bits_per_sample_uniform'])} / {_fmt(q['elbo']['bits_per_sample_prior'])}"))
    p = m["speaker_probe"]
    rows.append(("speaker probe on natural held-out sentences (accuracy)",
                 "n/a (no training split)" if p is None else _fmt(p["natural_val_accuracy"])))
    rows += resynthesis_rows(m["resynthesis"])
    if m["posterior"]:
        q = m["posterior"]
        rows += [(f"posterior probe: argmax = encoder code ({q['n_positions']} positions)",
                  _fmt(q["argmax_agreement"])), ("KL(q, exact conditional posterior) (nats)", _fmt(q["kl_nats"]))]
    return rows


RESYNTHESIS_GROUPS = {"self": "self-resynthesis", "conversion_seen": "conversion from training speakers",
                      "conversion_unseen": "conversion from unseen speakers"}


def resynthesis_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    """(quantity, value) rows of resynthesis and conversion, each kind next to the natural source audio."""
    rows = [("resynthesis decoder / conversions' F0 / pitch tracker",
             f"{r['decoder']} / {r['f0'] or 'n/a'} / {r['pitch_tracker']}")]
    for kind, name in RESYNTHESIS_GROUPS.items():
        g = r[kind]
        if g is None:
            continue
        p = g["pitch"]
        rows += [(f"{name}: n / seconds", f"{g['n']} / {g['seconds']:.1f}"),
                 (f"{name}: voiced frames kept / voicing agreement / GPE / median error (cents)",
                  " / ".join(_fmt(p[k]) for k in ("voiced_recall", "voicing_agreement", "gpe", "median_cents"))),
                 (f"{name}: probe says target / says source / natural source audio its speaker",
                  " / ".join(_fmt(g.get(k)) for k in ("probe_target_accuracy", "probe_says_source",
                                                      "probe_natural_accuracy"))),
                 (f"{name}: round-trip unit agreement", _fmt(g["round_trip_agreement"]))]
        if "mcd_db" in g:
            rows.append((f"{name}: MCD (dB, WORLD/SPTK mel-cepstrum, DTW)", _fmt(g["mcd_db"])))
    for key, name in (("intelligibility", "self-resynthesis"), ("intelligibility_conversion", "conversion")):
        w = r.get(key)
        rows.append((f"{name}: recogniser WER natural / decoded / ratio (whole utterances)",
                     "n/a (no transcripts)" if w is None else
                     f"{_fmt(w['wer_natural'])} / {_fmt(w['wer_resynthesis'])} / {_fmt(w['wer_ratio'])} "
                     f"({w['n']} utterances, {w['n_words']} words)"))
    return rows


def target_lines(m: dict[str, Any]) -> list[str]:
    """The report's section of speech measures against the targets of issue 19 (none without resynthesis)."""
    rows = m["resynthesis"].get("targets") or []
    if not rows:
        return []
    met = {True: "yes", False: "**no**", None: "n/a"}
    return ["## Speech against its targets (issue 19)", "", "| measure | value | target | met |", "|---|---|---|---|",
            *(f"| {t['measure']} | {_fmt(t['value'])} | {t['target']} | {t['note'] or met[t['met']]} |" for t in rows),
            ""]


def comparison_rows(m: dict[str, Any]) -> list[tuple[str, ...]]:
    """(measure, model, baseline, beats baseline[, baseline at the model's rate, beats it]) rows of the
    units-vs-baseline table."""
    collapsed = m["units"]["model"]["collapse"]["collapsed"]
    yes_no = {True: "yes", False: "no", None: "n/a (units collapsed)" if collapsed else "n/a"}
    sides = ["baseline"] + (["baseline_model_rate"] if "mfcc_kmeans_model_rate" in m["units"] else [])
    return [(r["measure"] + (" ↑" if r["higher_is_better"] else " ↓"), _fmt(r["model"]),
             *(x for side in sides for x in (_fmt(r[side]), yes_no[r["beats_" + side]])))
            for r in m["units"]["comparison"]]


def comparison_header(m: dict[str, Any]) -> list[str]:
    """The units-vs-baseline table's header lines, with the model-rate baseline's columns when it was scored."""
    u = m["units"]
    cols = ["measure", "model", f"baseline ({_fmt(u['baseline']['frame_rate'])} Hz)", "beats baseline"]
    if "mfcc_kmeans_model_rate" in u:
        cols += [f"baseline at the model's rate ({_fmt(u['mfcc_kmeans_model_rate']['frame_rate'])} Hz)", "beats it"]
    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]


def collapse_lines(m: dict[str, Any]) -> list[str]:
    """The report's warning paragraph when the units collapsed (none otherwise)."""
    c = m["units"]["model"]["collapse"]
    if not c["collapsed"]:
        return []
    return [(f"**The units collapsed**: perplexity {_fmt(c['perplexity'], 3)}, code {c['top_code']} on "
            f"{100 * c['top_code_share']:.0f} % of the frames. Their low bitrate, low speaker leakage and high "
            "stability are those of a near-constant sequence, so they are not counted as beating the baseline."), ""]


def markdown_report(m: dict[str, Any]) -> str:
    """report.md: what was scored, the model summary, units against the baseline, and the figures."""
    u = m["units"]
    lines = [
        f"# Evaluation of `{m['checkpoint']['path']}` (step {m['checkpoint']['step']})",
        "",
        (f"Scored: {m['data']['source']}, {m['data']['n_utterances']} utterances of speakers "
        f"{', '.join(m['data']['speakers'])}, {m['data']['seconds']:.1f} s. Full numbers: `metrics.json`."),
        ("ELBO, teacher forcing and the posterior probe: decoder-known (trained) speakers only; held-out speakers "
        "have never-trained embedding rows, so they are scored on their units and used as conversion sources."),
        "",
        "| quantity | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in report_rows(m)),
        "",
        (f"## Units against the MFCC k-means baseline (K = {u['baseline']['n_units']}, fitted on "
        f"{u['baseline']['fitted_on']})"),
        "",
        (f"Phone scores: {'alignments ' + u['alignments'] if u['alignments'] else 'n/a (no alignments)'}. "
        "Speaker leakage: cross-validated logistic regression on unit histograms (chance "
        f"{_fmt(u['model']['speaker_leakage']['chance'])})."),
        "",
        *collapse_lines(m),
        *comparison_header(m),
        *("| " + " | ".join(row) + " |" for row in comparison_rows(m)),
        "",
        *target_lines(m),
        *(f"![{name}]({name})" for name in m["figures"]),
        "",
    ]
    return "\n".join(lines)

