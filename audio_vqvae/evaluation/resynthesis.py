"""Resynthesis and voice conversion: which excerpts are decoded, how (the decoder and the F0 it is given), and their
quality: pitch against the contour asked for, the speaker probe, the recogniser's WER next to natural audio, MCD and
round-trip units, each against the targets of issue 19 (`TARGETS`).

Pitch: one tracker for the source and the output (the speech path's, `SpeechDecoder.track`, or `f0.track`'s
defaults for a checkpoint without one). Self-resynthesis is given, and scored against, the source's own contour;
a conversion is scored against the source contour mapped to the target speaker's log-F0 statistics (what the field
asks of a conversion), or the source contour itself with `f0="source"` or without a speech path.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .. import metrics as M
from ..f0 import FRAME_RATE, track
from ..model import VQVAE, Contour, mapped_contour, units_of
from ..stability import frame_agreement
from .probes import SpeakerProbe, accuracy
from .sets import MIN_SAMPLES, EvalOptions
from .speech import intelligibility, pitch_agreement, recognise, summarise

# ---- what is decoded --------------------------------------------------------------------------------------------


def middle(wav: np.ndarray, n_samples: int | None, hop: int) -> np.ndarray:
    """The middle n_samples (None: all) of wav [T], rounded down to whole hops."""
    n = (wav.size if n_samples is None else min(wav.size, n_samples)) // hop * hop
    start = (wav.size - n) // 2 // hop * hop
    return wav[start: start + n]


def resynthesis_jobs(model: VQVAE, self_sources: dict[str, tuple[np.ndarray, str]],
                     convert_sources: dict[str, tuple[np.ndarray, str]], known: Sequence[str],
                     opts: EvalOptions) -> list[dict[str, Any]]:
    """(utt, kind, source speaker, target speaker, excerpt) of each decode: self-resynthesis of training speakers'
    utterances with their own speaker, and conversions of scored utterances to training speakers in turn (seen: the source speaker is a training speaker). The excerpt is the
    middle `opts.resynth_seconds` (None or 0: the whole utterance); each job keeps the whole one for the recogniser."""
    n = int(opts.resynth_seconds * model.sample_rate) if opts.resynth_seconds else None
    jobs = [{"utt": u, "kind": "self", "source": s, "target": s, "wav": middle(w, n, model.hop),
             "whole": middle(w, None, model.hop)} for u, (w, s) in self_sources.items()]
    for i, (u, (w, s)) in enumerate(convert_sources.items()):
        others = [k for k in known if k != s] or list(known)
        target = opts.convert_to or others[i % len(others)]
        jobs.append({"utt": u, "kind": "conversion", "source": s, "target": target, "seen": s in known,
                     "wav": middle(w, n, model.hop), "whole": middle(w, None, model.hop)})
    return [j for j in jobs if j["wav"].size >= max(model.hop, MIN_SAMPLES)]


def pitch_tracker(model: VQVAE) -> Callable[[np.ndarray], Contour]:
    """The one tracker for sources and outputs: the speech path's (its frame rate and F0 range), else `f0.track`'s
    defaults (at the unit frame rate where FRAME_RATE does not divide the sample rate)."""
    if model.speech is not None:
        return model.speech.track
    rate = FRAME_RATE if model.sample_rate % FRAME_RATE == 0 else model.frame_rate
    return lambda wav: track(np.asarray(wav, dtype=np.float32), model.sample_rate, rate)


def contours(model: VQVAE, job: dict[str, Any], source: Contour, opts: EvalOptions) -> tuple[Contour | None, Contour]:
    """(the contour the speech path is given, None: predicted; the reference the output's pitch is scored
    against) of one job, from its source contour. Self: the source's own both times. Conversion: per opts.f0,
    the mapped (default), source or predicted contour given; scored against the source's with f0="source" or
    without a speech path (no target statistics: a WaveNet with an F0 excitation is given the source's), else
    against the mapped one."""
    if job["kind"] == "self":
        return source, source
    if model.speech is None:
        return (source if model.decoder.takes_f0 else None), source
    mapped = mapped_contour(source, model.speech.speaker_stats(model.speaker_index(job["target"])))
    if opts.f0 == "source":
        return source, source
    return (mapped if opts.f0 == "mapped" else None), mapped


def decode(model: VQVAE, wavs: Sequence[np.ndarray], speakers: Sequence[str], given: Sequence[Contour | None],
           decoder: str, opts: EvalOptions) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Encode model inputs [T] and decode their units in one batch with `decoder` ("source_filter": given the
    contours; "wavenet": sampled at opts.temperature, given the contours when it takes an F0 excitation) ->
    (codes [T // hop], decoded waveforms [T // hop * hop])."""
    codes = units_of(model, wavs)
    f0 = list(given) if model.uses_f0(decoder) else None
    out = model.decode([torch.from_numpy(c) for c in codes], list(speakers), temperature=opts.temperature,
                       decoder=decoder, f0=f0)
    return codes, [d.cpu().numpy() for d in out]


# ---- quality ----------------------------------------------------------------------------------------------------


def mean_or_none(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def group_summary(rows: list[dict[str, Any]], probe: SpeakerProbe | None, with_rows: bool) -> dict[str, Any] | None:
    """One kind's section: counts, pooled pitch agreement (`speech.summarise`), mean MCD and round trip, the probe's
    verdicts on the outputs (target; source, over sources the probe knows) and on the natural source excerpts."""
    if not rows:
        return None
    out: dict[str, Any] = {"n": len(rows), "seconds": sum(r["seconds"] for r in rows),
                           "pitch": summarise([r["pitch"] for r in rows]),
                           "round_trip_agreement": mean_or_none([r["round_trip_agreement"] for r in rows])}
    if "mcd_db" in rows[0]:
        out["mcd_db"] = mean_or_none([r["mcd_db"] for r in rows])
    if probe is not None:
        known = [r for r in rows if r["source"] in probe.speakers]
        converted = [r for r in known if r["source"] != r["target"]]
        out |= {"probe_target_accuracy": accuracy([r["probe_says"] for r in rows], [r["target"] for r in rows]),
                "probe_says_source": accuracy([r["probe_says"] for r in converted], [r["source"] for r in converted]),
                "probe_natural_accuracy": accuracy([r["probe_says_natural"] for r in known],
                                                   [r["source"] for r in known])}
    return out | ({"utterances": rows} if with_rows else {})


def wer_section(model: VQVAE, jobs: list[dict[str, Any]], decoded: list[np.ndarray], transcripts: dict[str, str],
                decoder: str, opts: EvalOptions, kind: str = "self") -> dict[str, Any] | None:
    """The recogniser on the WHOLE utterances of the transcribed jobs of `kind` (self or conversion), natural and
    decoded (again whole, with the contour `contours` gives, when the scored excerpt is shorter), against the
    transcripts: `speech.intelligibility`. None without transcribed jobs of that kind."""
    picked = [(j, d) for j, d in zip(jobs, decoded) if j["kind"] == kind and j["utt"] in transcripts]
    if not picked:
        return None
    redo = [j for j, d in picked if j["whole"].size != d.size]
    if redo:
        track_ = pitch_tracker(model)
        given = [contours(model, j, track_(j["whole"]), opts)[0] for j in redo]
        again = iter(decode(model, [j["whole"] for j in redo], [j["target"] for j in redo], given, decoder, opts)[1])
        picked = [(j, d if j["whole"].size == d.size else next(again)) for j, d in picked]
    refs = [transcripts[j["utt"]] for j, _ in picked]
    natural = [recognise(j["whole"], model.sample_rate) for j, _ in picked]
    heard = [recognise(d, model.sample_rate) for _, d in picked]
    utterances = [{"utt": j["utt"], "target": j["target"], "seconds": j["whole"].size / model.sample_rate,
                   "transcript": r, "natural": n, "decoded": h}
                  for (j, _), r, n, h in zip(picked, refs, natural, heard)]
    return intelligibility(refs, natural, heard) | {"audio": "whole utterances", "utterances": utterances}


def resynthesis_quality(model: VQVAE, jobs: list[dict[str, Any]], probe: SpeakerProbe | None, opts: EvalOptions,
                        transcripts: dict[str, str] | None = None
                        ) -> tuple[dict[str, Any], list[tuple[str, str, torch.Tensor]]]:
    """Decode every job (one batch, with `opts.decoder`) and score it: pitch agreement, speaker-probe verdicts,
    round-trip units, for self-resynthesis MCD against the source and the recogniser's WER next to the natural
    audio's (utterances in `transcripts`), and each against `TARGETS`. Returns the section and the audio panels."""
    decoder = model.resolve_decoder(opts.decoder)
    f0 = None if not model.uses_f0(decoder) else opts.f0 if model.speech is not None else "source"
    section: dict[str, Any] = {"decoder": decoder, "f0": f0,
                               "pitch_tracker": pitch_tracker_name(model), "self": None, "conversion": None,
                               "conversion_seen": None, "conversion_unseen": None, "intelligibility": None,
                               "intelligibility_conversion": None}
    if not jobs:
        return section | {"targets": []}, []
    track_ = pitch_tracker(model)
    sources = [track_(j["wav"]) for j in jobs]
    given, refs = zip(*(contours(model, j, s, opts) for j, s in zip(jobs, sources)))
    codes, decoded = decode(model, [j["wav"] for j in jobs], [j["target"] for j in jobs], given, decoder, opts)
    back = units_of(model, decoded)
    verdicts = probe.predict(decoded) if probe is not None else [None] * len(jobs)
    natural = probe.predict([j["wav"] for j in jobs]) if probe is not None else [None] * len(jobs)
    rows: list[tuple[str, dict[str, Any]]] = []
    for job, c, b, wav, ref, said, said_natural in zip(jobs, codes, back, decoded, refs, verdicts, natural):
        row = {"utt": job["utt"], "source": job["source"], "target": job["target"], "probe_says": said,
               "probe_says_natural": said_natural, "round_trip_agreement": frame_agreement(c, b),
               "seconds": wav.size / model.sample_rate, "pitch": pitch_agreement(*ref, *track_(wav))}
        if job["kind"] == "self":
            row["mcd_db"] = M.mel_cepstral_distortion(job["wav"], wav, model.sample_rate)
        else:
            row["seen"] = job["seen"]
        rows.append((job["kind"], row))
    conversions = [r for k, r in rows if k == "conversion"]
    section |= {"self": group_summary([r for k, r in rows if k == "self"], probe, True),
                "conversion": group_summary(conversions, probe, True),
                "conversion_seen": group_summary([r for r in conversions if r["seen"]], probe, False),
                "conversion_unseen": group_summary([r for r in conversions if not r["seen"]], probe, False),
                "intelligibility": wer_section(model, jobs, decoded, transcripts or {}, decoder, opts),
                "intelligibility_conversion": wer_section(model, jobs, decoded, transcripts or {}, decoder, opts,
                                                          "conversion")}
    section["targets"] = target_rows(section)
    panels = [(f"{j['kind']}_{j['utt']}_to_{j['target']}", f"{j['kind']}: {j['utt']} as {j['target']}",
               torch.from_numpy(w)) for j, w in zip(jobs, decoded)]
    return section, panels


def pitch_tracker_name(model: VQVAE) -> str:
    """Which tracker scored the pitch, for the report."""
    if model.speech is None:
        return "Praat autocorrelation (f0.track defaults)"
    lo, hi = model.speech.f0_range
    return f"Praat autocorrelation (the speech path's: {model.speech.frame_rate:g} frames/s, {lo:g}-{hi:g} Hz)"


# ---- targets ----------------------------------------------------------------------------------------------------

PITCH_TARGETS = (("voiced frames kept (recall)", ("pitch", "voiced_recall"), ">=", 0.9),
                 ("gross pitch error", ("pitch", "gpe"), "<=", 0.1),
                 ("median pitch error (cents)", ("pitch", "median_cents"), "<=", 50.0))
TARGETS: tuple[tuple[str, str, tuple[str, ...], str, float], ...] = (
    *(("self", *t) for t in PITCH_TARGETS),
    *(("conversion_seen", *t) for t in PITCH_TARGETS),
    *(("conversion_unseen", *t) for t in PITCH_TARGETS),
    ("self", "probe says its speaker", ("probe_target_accuracy",), ">=", 0.9),
    ("conversion_seen", "probe says the target", ("probe_target_accuracy",), ">=", 0.8),
    ("conversion_unseen", "probe says the target", ("probe_target_accuracy",), ">=", 0.8),
    ("conversion_seen", "probe says the source", ("probe_says_source",), "<=", 0.1),
    ("intelligibility", "WER resynthesis / WER natural", ("wer_ratio",), "<=", 1.5),
    ("self", "MCD (dB)", ("mcd_db",), "<=", 6.0),
    ("self", "round-trip unit agreement", ("round_trip_agreement",), ">=", 0.7),
)
"""(section, measure, key path in it, direction, threshold): the targets of issue 19 ("Speech out of the units")."""


def target_rows(section: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target whose section was scored: measure, value, target, met (None: not computable) and a note.
    The WER ratio is not judged where an empty transcript would meet it (natural WER * ratio >= 1: a WER of 1, all
    words deleted, is within the target), as with a recogniser that fails on the natural audio too."""
    rows = []
    for group, measure, path, op, threshold in TARGETS:
        node = section.get(group)
        if node is None:
            continue
        natural_wer = node.get("wer_natural") if group == "intelligibility" else None
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        met = None if node is None else node >= threshold if op == ">=" else node <= threshold
        note = None
        if natural_wer is not None and natural_wer * threshold >= 1:
            met, note = None, f"not judged: natural WER {natural_wer:.2f}, so silence (WER 1) would meet it"
        rows.append({"measure": f"{group.replace('_', ' from ')}: {measure}", "value": node,
                     "target": f"{op} {threshold:g}", "met": met, "note": note})
    return rows
