"""Evaluation library behind `audio-vqvae-eval` (audio_vqvae/cli/eval.py): ELBO, bitrates, codebook statistics, unit
quality against phone alignments next to the MFCC k-means baseline, speaker leakage, unit stability, resynthesis and
conversion quality (speaker-ID probe, F0, MCD, round-trip units), the exact latent posterior probe and figures.

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
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError
from tqdm import tqdm

from . import metrics as M
from .alignments import Segment, build_vocab, frame_labels, load_alignments
from .audio import AudioError, load_audio, save_audio, scan_audio
from .baselines import FRAME_RATE as BASELINE_FRAME_RATE
from .baselines import MFCCKMeans, fit_baseline
from .batching import pad_batch
from .checkpoint import file_sha256
from .config import load_data_config
from .data import Utterance, load_corpus, split_corpus
from .extract import collect_utterances
from .io import atomic_write
from .model import VQVAE, sample_teacher_forced
from .plots import codebook_usage_figure, cooccurrence_figure, save_figure, spectrogram_figure
from .posterior import PosteriorProbe, conditional_posterior, summarize
from .prior import UnitPrior
from .probes import SpeakerProbe, accuracy, fit_speaker_probe, speaker_leakage
from .quantizer import perplexity
from .stability import frame_agreement, unit_stability

log = logging.getLogger("audio_vqvae.evaluate")

SPLITS = ("auto", "test", "val", "train", "all")
"""Scored split: test = held-out speakers (x held-out sentences where configured); auto = test if any, else val."""
MIN_SAMPLES = 1024  # the log-mel distance's FFT size: shorter audio cannot be compared
MAX_FIT_UTTERANCES = 400
"""Training utterances the baseline and the speaker probe are fitted on at most (evenly spaced by id)."""
UNITS_BATCH = 16
"""Utterances encoded per `encode_batch` call by `units_of`."""


@dataclass
class EvalOptions:
    """How much to evaluate, and the seeds. Defaults keep the demo with the `small` model to 1.5-3 minutes on 2 busy CPU cores."""

    max_seconds: float | None = None  # crop every scored utterance to its first S seconds
    n_resynth: int = 2  # training-speaker utterances resynthesised with their own speaker (sampled WaveNet, slow)
    n_convert: int = 2  # scored utterances converted to a training speaker
    resynth_seconds: float = 1.0  # length of each resynthesised / converted excerpt
    temperature: float = 1.0
    abx_triplets: int = 5000
    posterior_positions: int = 4  # each scores all K codes with the decoder: the slowest part of the evaluation
    posterior_chunk: int = 64
    convert_to: str | None = None  # conversion target; default: training speakers in turn
    seed: int = 0


# ---- the data -----------------------------------------------------------------------------------------------------


@dataclass
class EvalSet:
    """Utterances to score, where they came from, and the training split used for fitting (empty for plain files)."""

    utterances: list[Utterance]
    description: str
    root: Path | None  # where `alignments/` is looked for by default
    train: list[Utterance] = field(default_factory=list)  # fits the baseline and the speaker probe
    val: list[Utterance] = field(default_factory=list)  # training speakers' held-out sentences: self-resynthesis
    split: str | None = None  # train / val / test / all of a corpus; None for plain files


def data_config(ckpt_config: dict[str, Any], spec: str | None, overrides: Sequence[str]) -> DictConfig:
    """The `data` node to evaluate on with `data.key=value` overrides: --data's (a config name or YAML file, read as
    audio-vqvae-units reads it), else the checkpoint's own resolved data config. Unknown keys are an error."""
    bad = [o for o in overrides if not o.startswith("data.") or "=" not in o]
    if bad:
        raise ValueError(f"overrides must look like data.key=value, got {bad}")
    if spec is not None:
        return load_data_config(spec, overrides)
    if not ckpt_config.get("data"):
        raise ValueError("the checkpoint stores no data config; pass --data NAME or --files PATH ...")
    node = OmegaConf.create(ckpt_config["data"])
    OmegaConf.set_struct(node, True)
    try:
        return OmegaConf.merge(node, OmegaConf.from_dotlist([o.removeprefix("data.") for o in overrides]))
    except ConfigKeyError as err:
        raise ValueError(f"unknown data config key data.{err.key} (the checkpoint's data config has: "
                         f"{', '.join(sorted(map(str, node)))})") from None


def corpus_set(data: DictConfig, split: str, seed: int, foreign: bool = False) -> EvalSet:
    """The EvalSet of a corpus split, as the trainer split it (same config and seed): train, val, test or all.
    `auto`: the test split if the config holds data out, else all of a `foreign` corpus (one the model was not
    trained on), else validation."""
    corpus = load_corpus(data)
    parts = split_corpus(corpus, data, seed)
    if split == "auto":
        split = "test" if parts.test else "all" if foreign else "val"
    scored = corpus.utterances if split == "all" else getattr(parts, split)
    if not scored:
        raise ValueError(f"the {split} split of {corpus.root} ({data.name}) is empty; pick another --split")
    return EvalSet(scored, f"{data.name} ({split} split{split_detail(data, split, scored)})", Path(corpus.root),
                   parts.train, parts.val, split)


def with_training_reference(set_: EvalSet, reference: EvalSet) -> EvalSet:
    """`set_` scored, with the baseline and speaker probe fitted on (and self-resynthesis drawn from) the training
    and validation splits of `reference`, the checkpoint's own training corpus: speech the model was trained on, so
    that a held-out corpus (or plain files) is compared against a baseline fitted without it."""
    return replace(set_, train=reference.train, val=reference.val,
                   description=f"{set_.description}; baseline and probes fitted on {reference.description}")


def split_detail(data: DictConfig, split: str, scored: Sequence[Utterance]) -> str:
    """What a split holds, for the report: the held-out speakers and sentences of `test`, the validation rule of
    `val`."""
    if split == "test":
        sentences = data.get("held_out_sentences") or None
        speakers = ", ".join(sorted({u.speaker for u in scored}))
        return f": held-out speakers {speakers}" + (f" x held-out sentences (data.held_out_sentences={sentences})" if sentences else "")
    if split == "val":
        return f": data.val_per_speaker={data.val_per_speaker} utterances of each training speaker"
    return ""


def file_set(paths: Sequence[str]) -> EvalSet:
    """Audio files and directories, with the ids audio-vqvae-units gives them; speaker = the file's directory."""
    utts, skipped = collect_utterances(paths)
    for path, reason in skipped:
        log.warning("skipping %s: %s", path, reason)
    if not utts:
        raise ValueError(f"--files: no usable audio in {list(paths)}")
    utts = [replace(u, speaker=Path(u.path).parent.name) for u in utts]
    single_dir = len(paths) == 1 and Path(paths[0]).is_dir()
    return EvalSet(utts, f"{len(utts)} files", Path(paths[0]) if single_dir else None)


def load_wavs(utterances: Sequence[Utterance], sample_rate: int, max_seconds: float | None,
              peak_normalize: float | None) -> dict[str, np.ndarray]:
    """utt id -> mono wav [T] at sample_rate, cropped to its first max_seconds, scaled so that the whole file's peak
    is peak_normalize (None: the file's level): how training, validation and `extract` read a file. Pass the
    model's `peak_normalize` (the checkpoint's) to get its input. Unreadable files are logged and left out."""
    frames = None if max_seconds is None else int(max_seconds * sample_rate)
    wavs = {}
    for u in utterances:
        try:
            wav = load_audio(u.path, sample_rate, 0, frames)
            if peak_normalize is not None:
                wav = wav * (peak_normalize / (u.peak or scan_audio(u.path).peak))
        except AudioError as err:
            log.warning("skipping %s: %s", u.path, err)
            continue
        wavs[u.id] = wav.numpy()
    return wavs


def units_of(model: VQVAE, wavs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Codes [T // hop] of audio already at the model's input (`load_wavs` with the model's peak_normalize, or a
    perturbation or decoding of it), batched through `VQVAE.encode_batch`: no second peak normalisation."""
    out = []
    for i in range(0, len(wavs), UNITS_BATCH):
        batch, lengths = pad_batch([torch.from_numpy(np.asarray(w, dtype=np.float32)) for w in wavs[i: i + UNITS_BATCH]])
        codes = model.encode_batch(batch[:, None], lengths)
        out += [c[: int(n) // model.hop].cpu().numpy() for c, n in zip(codes, lengths)]
    return out


def evenly(items: Sequence[Any], n: int) -> list[Any]:
    """At most n items, evenly spaced (all of them when there are n or fewer)."""
    return list(items) if len(items) <= n else [items[i] for i in np.linspace(0, len(items) - 1, n).astype(int)]


def sentence_of(utt: Utterance) -> str:
    """The sentence an utterance speaks, for grouping folds: its id without the speaker name (demo and VCTK ids are
    <speaker>_<sentence number>, so parallel utterances share it)."""
    return utt.id.replace(utt.speaker, "").strip("_-/") or utt.id


def trained_speakers(model: VQVAE, train: Sequence[Utterance]) -> list[str]:
    """Speakers whose embedding rows were trained: those of the training split, else (no split known) all."""
    in_train = {u.speaker for u in train}
    return [s for s in model.speakers if s in in_train] if in_train else list(model.speakers)


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


# ---- units: quality, leakage and stability, next to the baseline ----------------------------------------------


def matched_alignments(alignments: Mapping[str, list[Segment]],
                       utterances: dict[str, Utterance]) -> dict[str, list[Segment]]:
    """Segments per evaluated utterance id, found under the utterance id or else its file's stem."""
    found = {u: alignments.get(u, alignments.get(Path(utt.path).stem)) for u, utt in utterances.items()}
    return {u: segments for u, segments in found.items() if segments is not None}


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
    """Purity, PNMI and ABX (hamming on unit ids; cosine on `latents` when given) of unit sequences at `frame_rate`
    against phone alignments; also the unit x phone co-occurrence counts and the phone names."""
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
    scores = {
        "n_utterances": len(utts), "n_phones": len(vocab), "n_frames": int(counts.sum()),
        "phone_purity": M.phone_purity(counts), "cluster_purity": M.cluster_purity(counts),
        "pnmi": M.pnmi(counts) if (counts.sum(0) > 0).sum() > 1 else None, "abx": abx,
    }
    return scores, counts, sorted(vocab, key=vocab.get)


def unit_summary(units: dict[str, np.ndarray], utterances: dict[str, Utterance], n_units: int, seconds: float,
                 opts: EvalOptions) -> dict[str, Any]:
    """Bitrates and speaker leakage of one unit inventory on the scored set."""
    ids = list(units)
    return {
        "n_units": n_units,
        # + 0.0: one code has entropy -0.0, which would print as "-0"
        "entropy_bits_per_second": M.entropy_bitrate([units[u] for u in ids], seconds) + 0.0,
        "entropy_bits_per_second_dedup": M.entropy_bitrate([units[u] for u in ids], seconds, dedup=True) + 0.0,
        "speaker_leakage": speaker_leakage([units[u] for u in ids], n_units, [utterances[u].speaker for u in ids],
                                           [sentence_of(utterances[u]) for u in ids], opts.seed),
    }


COMPARED = (  # (label, path into a unit section, higher is better, a win only if the units did not collapse)
    ("PNMI", ("phones", "pnmi"), True, False),
    ("phone purity", ("phones", "phone_purity"), True, False),
    ("ABX within, units", ("phones", "abx", "within"), False, False),
    ("ABX across, units", ("phones", "abx", "across"), False, False),
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
and high stability are what a constant sequence scores: for collapsed units they are no win (beats_baseline None)."""
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


def comparison(model_units: dict[str, Any], baseline: dict[str, Any], collapsed: bool = False) -> list[dict[str, Any]]:
    """Per compared measure: the model's value, the baseline's, and whether the model beats it (None if n/a, or if
    the units collapsed and the measure rewards a constant sequence)."""
    rows = []
    for label, path, higher, needs_units in COMPARED:
        a, b = _get(model_units, path), _get(baseline, path)
        void = a is None or b is None or collapsed and needs_units
        beats = None if void else bool(a > b if higher else a < b)
        rows.append({"measure": label, "model": a, "baseline": b, "higher_is_better": higher, "beats_baseline": beats})
    return rows


def score_units(model: VQVAE, totals: Totals, baseline: MFCCKMeans, alignments: dict[str, list[Segment]],
                opts: EvalOptions) -> tuple[dict[str, Any], tuple[np.ndarray, list[str]] | None]:
    """The `units` section: model units and baseline clusters, each with phone scores (when aligned), bitrates,
    speaker leakage and stability, and the comparison; plus the model's co-occurrence for the figure."""
    ids = list(totals.codes)
    speakers = {u: totals.utterances[u].speaker for u in ids}
    base_units = {u: baseline.units(totals.wavs[u]) for u in ids}

    def model_units(wav: np.ndarray) -> np.ndarray:
        return units_of(model, [wav])[0]

    sections = {
        "model": unit_summary(totals.codes, totals.utterances, model.codebook_size, totals.seconds, opts),
        "baseline": unit_summary(base_units, totals.utterances, baseline.n_units, totals.seconds, opts),
    }
    wavs = [totals.wavs[u] for u in ids]
    sections["model"]["stability"] = unit_stability(model_units, wavs, seed=opts.seed)
    sections["baseline"]["stability"] = unit_stability(baseline.units, wavs, seed=opts.seed)
    figure = None
    if alignments:
        sections["model"]["phones"], counts, phones = phone_scores(
            totals.codes, alignments, speakers, model.codebook_size, model.frame_rate, opts, totals.latents)
        sections["baseline"]["phones"], _, _ = phone_scores(base_units, alignments, speakers, baseline.n_units,
                                                            BASELINE_FRAME_RATE, opts)
        figure = (counts, phones)
    baseline_info = {"fitted_on": baseline.fitted_on, "frame_rate": BASELINE_FRAME_RATE,
                     "settings": "13 MFCC + delta + delta-delta, 25 ms / 10 ms, per-utterance CMVN, k-means"}
    sections["model"]["collapse"] = collapse(totals.counts)
    section = {"model": sections["model"], "baseline": baseline_info | sections["baseline"],
               "comparison": comparison(sections["model"], sections["baseline"],
                                        sections["model"]["collapse"]["collapsed"])}
    return section, figure


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


def _mean(values: Sequence[float | None]) -> float | None:
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
               **{k: _mean([r.get(k) for r in picked]) for k in numeric}, "utterances": picked}
        if probe is not None:
            out["probe_target_accuracy"] = accuracy([r["probe_says"] for r in picked], [r["target"] for r in picked])
            in_probe = [r for r in picked if r["source"] in probe.speakers and r["source"] != r["target"]]
            out["probe_says_source"] = accuracy([r["probe_says"] for r in in_probe], [r["source"] for r in in_probe])
        return out

    panels = [(f"{j['kind']}_{j['utt']}_to_{j['target']}", f"{j['kind']}: {j['utt']} as {j['target']}",
               torch.from_numpy(w)) for j, w in zip(jobs, decoded)]
    return {"self": summary("self"), "conversion": summary("conversion")}, panels


# ---- the whole evaluation -----------------------------------------------------------------------------------------


@torch.inference_mode()
def prior_log_prob(prior: UnitPrior, codes: np.ndarray, speaker: str) -> float:
    """log p(z) in nats of one utterance's units under the prior; a speaker the prior does not know is marginalised
    over the prior's speakers (the mixture prior: logsumexp_s log p(z | s) - log S)."""
    z = torch.as_tensor(codes, dtype=torch.long, device=prior.device)[None]
    n = torch.tensor([z.shape[1]], device=prior.device)
    if not prior.speakers:
        return float(prior.log_prob(z, n)[0])
    if speaker in prior.speakers:
        return float(prior.log_prob(z, n, torch.tensor([prior.speaker_index(speaker)], device=prior.device))[0])
    every = torch.stack([prior.log_prob(z, n, torch.tensor([s], device=prior.device))[0]
                         for s in range(len(prior.speakers))])
    return float(torch.logsumexp(every, 0) - math.log(len(prior.speakers)))


def prior_metrics(prior: UnitPrior, model: VQVAE, totals: Totals) -> dict[str, Any]:
    """Stage two in metrics.json: KL(q || p) = -log p(z_q(x)) of the scored units under the learned prior next to the
    uniform prior's T_z log K, in bits per second; unit perplexity; and, for the decoder-known speakers, -ELBO in bits
    per sample under both priors (metrics.elbo_with_prior)."""
    if prior.codebook_size != model.codebook_size:
        raise ValueError(f"--prior models {prior.codebook_size} units but the VQ-VAE has {model.codebook_size} codes")
    log_p = {u: prior_log_prob(prior, c, totals.utterances[u].speaker) for u, c in totals.codes.items()}
    n_units = sum(c.size for c in totals.codes.values())
    out: dict[str, Any] = {
        "n_units": n_units,
        "unit_perplexity": math.exp(-sum(log_p.values()) / n_units),
        "kl_bits_per_second_uniform": model.frame_rate * math.log2(model.codebook_size),
        "kl_bits_per_second_prior": -sum(log_p.values()) / math.log(2) / totals.seconds,
        "unknown_speakers": "marginalised over the prior's speakers" if prior.speakers else "unconditional prior",
        "elbo": None,
    }
    acc = totals.elbo
    if acc.n_samples:
        out["elbo"] = M.elbo_with_prior(acc.nll, sum(log_p[u] for u in totals.elbo_utterances), acc.n_samples,
                                        acc.n_latents, model.codebook_size, model.sample_rate)
    return out


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
        "teacher_forced_log_mel_distance": _mean(totals.teacher_forced),
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


def baseline_for(set_: EvalSet, totals: Totals, model: VQVAE, opts: EvalOptions) -> MFCCKMeans:
    """The MFCC k-means baseline, fitted on the training split's audio, or on the scored audio if there is none."""
    if set_.train:
        wavs = load_wavs(evenly(set_.train, MAX_FIT_UTTERANCES), model.sample_rate, opts.max_seconds,
                         model.peak_normalize)
        return fit_baseline(list(wavs.values()), model.sample_rate, f"training split ({len(wavs)} utterances)",
                            seed=opts.seed)
    return fit_baseline(list(totals.wavs.values()), model.sample_rate,
                        "the scored audio itself (no training split given)", seed=opts.seed)


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
                        alignment_dir: Path | None = None, prior: UnitPrior | None = None) -> dict[str, Any]:
    """Score `model` on `set_` (and its units under a learned `prior`), write metrics.json, report.md, figures and
    audio into `out`; return the metrics."""
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
        "data": {"source": set_.description, "split": set_.split, "n_utterances": len(totals.codes),
                 "speakers": scored_speakers,
                 "unknown_to_decoder": [s for s in scored_speakers if s not in known],
                 "seconds": totals.seconds, "too_short": totals.too_short, "train_utterances": len(set_.train)},
        **set_metrics(model, totals),
        "posterior": summarize(totals.probes, model.codebook_size) if totals.probes else None,
        "prior": prior_metrics(prior, model, totals) if prior is not None else None,
    }
    alignments = matched_alignments(load_alignments(alignment_dir), totals.utterances) if alignment_dir else {}
    if alignment_dir is not None and not alignments:
        log.warning("%s holds no alignment for the evaluated utterances: no phone scores", alignment_dir)
    baseline = baseline_for(set_, totals, model, opts)
    m["units"], cooccurrence = score_units(model, totals, baseline, alignments, opts)
    m["units"]["alignments"] = str(alignment_dir) if alignments else None
    probe, m["speaker_probe"] = speaker_probe(set_, known, model, opts)
    self_utts = [u for u in set_.val if u.speaker in known][: opts.n_resynth] if set_.val else \
        [totals.utterances[u] for u in totals.elbo_utterances][: opts.n_resynth]
    self_wavs = load_wavs(self_utts, model.sample_rate, opts.max_seconds, model.peak_normalize)
    jobs = resynthesis_jobs(
        model, {u.id: (self_wavs[u.id], u.speaker) for u in self_utts if u.id in self_wavs},
        {u: (totals.wavs[u], totals.utterances[u].speaker) for u in list(totals.codes)[: opts.n_convert]}, known, opts)
    m["resynthesis"], panels = resynthesis_quality(model, jobs, probe, opts)
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
        if q["elbo"]:
            rows.append(("-ELBO bits/sample: uniform prior / learned prior, known speakers",
                         f"{_fmt(q['elbo']['bits_per_sample_uniform'])} / {_fmt(q['elbo']['bits_per_sample_prior'])}"))
    p = m["speaker_probe"]
    rows.append(("speaker probe on natural held-out sentences (accuracy)",
                 "n/a (no training split)" if p is None else _fmt(p["natural_val_accuracy"])))
    for kind in ("self", "conversion"):
        r = m["resynthesis"][kind]
        if r is None:
            continue
        rows.append((f"{kind}: n / seconds / probe says target / says source",
                     (f"{r['n']} / {r['seconds']:.1f} / {_fmt(r.get('probe_target_accuracy'))} / "
                     f"{_fmt(r.get('probe_says_source'))}")))
        rows.append((f"{kind}: round-trip unit agreement", _fmt(r.get("round_trip_agreement"))))
        if kind == "self":
            rows += [("self: MCD (dB, WORLD/SPTK mel-cepstrum, DTW)", _fmt(r.get("mcd_db"))),
                     ("self: F0 voicing agreement / GPE / corr / RMSE (cents)",
                      " / ".join(_fmt(r.get(f"f0_{k}")) for k in ("voicing_agreement", "gross_pitch_error",
                                                                  "f0_correlation", "f0_rmse_cents")))]
    if m["posterior"]:
        q = m["posterior"]
        rows += [(f"posterior probe: argmax = encoder code ({q['n_positions']} positions)",
                  _fmt(q["argmax_agreement"])), ("KL(q, exact conditional posterior) (nats)", _fmt(q["kl_nats"]))]
    return rows


def comparison_rows(m: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(measure, model, baseline, beats baseline) rows of the units-vs-baseline table."""
    collapsed = m["units"]["model"]["collapse"]["collapsed"]
    yes_no = {True: "yes", False: "no", None: "n/a (units collapsed)" if collapsed else "n/a"}
    return [(r["measure"] + (" ↑" if r["higher_is_better"] else " ↓"), _fmt(r["model"]), _fmt(r["baseline"]),
             yes_no[r["beats_baseline"]]) for r in m["units"]["comparison"]]


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
        "| measure | model | baseline | beats baseline |",
        "|---|---|---|---|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in comparison_rows(m)),
        "",
        *(f"![{name}]({name})" for name in m["figures"]),
        "",
    ]
    return "\n".join(lines)
