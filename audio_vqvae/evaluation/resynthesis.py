"""Resynthesis and voice conversion: which excerpts are decoded, and their quality (speaker probe, round-trip
units, F0 agreement, MCD)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .. import metrics as M
from ..model import VQVAE, units_of
from ..stability import frame_agreement
from .probes import SpeakerProbe, accuracy
from .sets import MIN_SAMPLES, EvalOptions

# ---- resynthesis and conversion --------------------------------------------------------------------------------


def middle(wav: np.ndarray, n_samples: int, hop: int) -> np.ndarray:
    """The middle n_samples (rounded down to whole hops, at most the whole wav) of wav [T]."""
    n = min(wav.size, n_samples) // hop * hop
    start = (wav.size - n) // 2 // hop * hop
    return wav[start: start + n]


def resynthesis_jobs(model: VQVAE, self_sources: dict[str, tuple[np.ndarray, str]],
                     convert_sources: dict[str, tuple[np.ndarray, str]], known: Sequence[str],
                     opts: EvalOptions) -> list[dict[str, Any]]:
    """(utt, kind, source speaker, target speaker, excerpt) of each decode: self-resynthesis of training speakers'
    utterances with their own speaker, and conversions of scored utterances to training speakers in turn."""
    n = int(opts.resynth_seconds * model.sample_rate)
    jobs = [{"utt": u, "kind": "self", "source": s, "target": s, "wav": middle(w, n, model.hop)}
            for u, (w, s) in self_sources.items()]
    for i, (u, (w, s)) in enumerate(convert_sources.items()):
        others = [k for k in known if k != s] or list(known)
        target = opts.convert_to or others[i % len(others)]
        jobs.append({"utt": u, "kind": "conversion", "source": s, "target": target, "wav": middle(w, n, model.hop)})
    return [j for j in jobs if j["wav"].size >= max(model.hop, MIN_SAMPLES)]


def mean_or_none(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def resynthesis_quality(model: VQVAE, jobs: list[dict[str, Any]], probe: SpeakerProbe | None,
                        opts: EvalOptions) -> tuple[dict[str, Any], list[tuple[str, str, torch.Tensor]]]:
    """Decode every job (sampled WaveNet, one batch) and score it: speaker-probe verdicts, round-trip units, and for
    self-resynthesis F0 agreement and MCD against the source. Returns the section and the audio panels."""
    if not jobs:
        return {"self": None, "conversion": None}, []
    codes = units_of(model, [j["wav"] for j in jobs])
    decoded = model.decode([torch.from_numpy(c) for c in codes], [j["target"] for j in jobs],
                           temperature=opts.temperature)
    decoded = [d.cpu().numpy() for d in decoded]
    back = units_of(model, decoded)
    verdicts = probe.predict(decoded) if probe is not None else [None] * len(jobs)
    rows = []
    for job, c, b, wav, said in zip(jobs, codes, back, decoded, verdicts):
        row = {"utt": job["utt"], "source": job["source"], "target": job["target"], "probe_says": said,
               "round_trip_agreement": frame_agreement(c, b),
               "seconds": wav.size / model.sample_rate}
        if job["kind"] == "self":
            row["mcd_db"] = M.mel_cepstral_distortion(job["wav"], wav, model.sample_rate)
            row |= {f"f0_{k}": v for k, v in M.f0_agreement(job["wav"], wav, model.sample_rate).items()}
        rows.append((job["kind"], row))

    def summary(kind: str) -> dict[str, Any] | None:
        picked = [r for k, r in rows if k == kind]
        if not picked:
            return None
        numeric = sorted({key for r in picked for key, v in r.items() if isinstance(v, float) and key != "seconds"})
        out = {"n": len(picked), "seconds": sum(r["seconds"] for r in picked),
               **{k: mean_or_none([r.get(k) for r in picked]) for k in numeric}, "utterances": picked}
        if probe is not None:
            out["probe_target_accuracy"] = accuracy([r["probe_says"] for r in picked], [r["target"] for r in picked])
            in_probe = [r for r in picked if r["source"] in probe.speakers and r["source"] != r["target"]]
            out["probe_says_source"] = accuracy([r["probe_says"] for r in in_probe], [r["source"] for r in in_probe])
        return out

    panels = [(f"{j['kind']}_{j['utt']}_to_{j['target']}", f"{j['kind']}: {j['utt']} as {j['target']}",
               torch.from_numpy(w)) for j, w in zip(jobs, decoded)]
    return {"self": summary("self"), "conversion": summary("conversion")}, panels
