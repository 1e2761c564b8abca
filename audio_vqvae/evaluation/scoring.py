"""The pass over the scored set: codes and encoder outputs of every utterance, and for decoder-known speakers the
ELBO terms, teacher-forced resynthesis and posterior probes (`Totals`)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from .. import metrics as M
from ..data import Utterance, load_wavs
from ..model import VQVAE, sample_teacher_forced
from .posterior import PosteriorProbe, conditional_posterior
from .sets import MIN_SAMPLES, EvalOptions, EvalSet

# ---- per-utterance pass -------------------------------------------------------------------------------------------


@dataclass
class Totals:
    """What the pass over the scored set accumulates."""

    elbo: M.ELBOAccumulator = field(default_factory=M.ELBOAccumulator)  # forwards of the known speakers
    seconds: float = 0.0  # all scored audio
    counts: np.ndarray | None = None  # code counts of all scored utterances
    codes: dict[str, np.ndarray] = field(default_factory=dict)  # utt -> [T_z]
    latents: dict[str, np.ndarray] = field(default_factory=dict)  # utt -> z_e [T_z, D]
    wavs: dict[str, np.ndarray] = field(default_factory=dict)  # utt -> the scored audio [T]
    utterances: dict[str, Utterance] = field(default_factory=dict)
    elbo_utterances: list[str] = field(default_factory=list)
    teacher_forced: list[float] = field(default_factory=list)  # log-mel distance per utterance
    probes: list[PosteriorProbe] = field(default_factory=list)
    too_short: list[str] = field(default_factory=list)
    excerpt: tuple[str, list[tuple[str, str, torch.Tensor]], np.ndarray] | None = None  # (utt, panels, units)


def allocate_positions(utterances: Sequence[Utterance], n: int, max_seconds: float | None, frame_rate: float,
                       rng: np.random.Generator) -> list[int]:
    """Posterior-probe positions per utterance: n spread over utterances in proportion to their frames."""
    seconds = np.array([u.duration if max_seconds is None else min(u.duration, max_seconds) for u in utterances])
    frames = np.floor(seconds * frame_rate)
    if n <= 0 or frames.sum() <= 0:
        return [0] * len(frames)
    return rng.multinomial(n, frames / frames.sum()).tolist()


@torch.inference_mode()
def evaluate_set(model: VQVAE, set_: EvalSet, known: Sequence[str], opts: EvalOptions) -> Totals:
    """One pass over the scored set: codes and encoder outputs of every utterance; for speakers in `known`, also
    the ELBO terms, the teacher-forced resynthesis distance and the posterior probes."""
    sr, hop, device = model.sample_rate, model.hop, model.device
    wavs = load_wavs(set_.utterances, sr, opts.max_seconds, model.peak_normalize)
    rng = np.random.default_rng(opts.seed)
    probe_at = allocate_positions([u for u in set_.utterances if u.speaker in known], opts.posterior_positions,
                                  opts.max_seconds, model.frame_rate, rng)
    probe_at = dict(zip((u.id for u in set_.utterances if u.speaker in known), probe_at))
    generator = torch.Generator(device).manual_seed(opts.seed)
    t = Totals(counts=np.zeros(model.codebook_size, dtype=np.int64))
    for utt in tqdm([u for u in set_.utterances if u.id in wavs], desc="evaluate", unit="utt", disable=None):
        wav = torch.from_numpy(wavs[utt.id])
        if wav.numel() < max(hop, MIN_SAMPLES):
            t.too_short.append(utt.id)
            continue
        n = wav.numel() // hop * hop
        x = wav[:n].to(device)[None, None]
        t.wavs[utt.id], t.utterances[utt.id] = wav[:n].numpy(), utt
        t.seconds += n / sr
        panels = [("original", "original", wav[:n])]
        if utt.speaker in known:
            spk = model.speaker_index(utt.speaker)
            out = model(x, torch.tensor([spk], device=device))
            z_e, codes = out.z_e, out.codes
            t.elbo.add(out)
            t.elbo_utterances.append(utt.id)
            tf_wav = sample_teacher_forced(out.logits[0], generator).cpu()
            t.teacher_forced.append(M.log_mel_distance(wav[:n].numpy(), tf_wav.numpy(), sr))
            panels.append(("teacher_forced", f"teacher-forced resynthesis ({utt.speaker})", tf_wav))
            if probe_at[utt.id]:
                frames = rng.choice(codes.shape[1], size=min(probe_at[utt.id], codes.shape[1]), replace=False)
                t.probes.append(conditional_posterior(model, x[0, 0], spk, sorted(frames.tolist()),
                                                      opts.posterior_chunk))
        else:
            z_e = model.encode_latents(x)
            codes = model.quantizer.nearest(z_e)
        t.codes[utt.id] = codes[0].cpu().numpy()
        t.latents[utt.id] = z_e[0].T.cpu().numpy()
        t.counts += np.bincount(t.codes[utt.id], minlength=model.codebook_size)
        if t.excerpt is None:
            t.excerpt = (utt.id, panels, t.codes[utt.id])
    return t
