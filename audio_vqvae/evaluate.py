"""Evaluation CLI `audio-vqvae-eval`: ELBO, bitrates, codebook statistics, resynthesis quality, unit quality against
phone alignments, the exact latent posterior probe, and figures, for a checkpoint on a set of utterances.

    audio-vqvae-eval runs/x/checkpoints/best.pt --out eval/x                 # the checkpoint's own held-out/val split
    audio-vqvae-eval best.pt --data vctk data.root=/data/VCTK-Corpus-0.92 --split held_out --out eval/vctk
    audio-vqvae-eval best.pt --files some/dir a.wav --alignments aligns/ --out eval/mine

Writes metrics.json, report.md (also printed), codebook_usage.png, unit_phone_cooccurrence.png (with alignments),
resynthesis.png and the excerpts it shows as audio/*.wav into --out. Keys: docs/formats.md.
"""
from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from . import metrics as M
from .alignments import Segment, build_vocab, frame_labels, load_alignments
from .audio import save_audio
from .checkpoint import file_sha256
from .data import Utterance, ValidationDataset, load_corpus, split_corpus
from .device import resolve_device, run_app
from .io import atomic_write
from .model import VQVAE, sample_teacher_forced
from .plots import (
    codebook_usage_figure,
    cooccurrence_figure,
    save_figure,
    spectrogram_figure,
)
from .posterior import PosteriorProbe, conditional_posterior, summarize
from .quantizer import perplexity
from .units import collect_utterances, load_data_config

log = logging.getLogger("audio_vqvae.evaluate")

SPLITS = ("auto", "held_out", "val", "train", "all")
MIN_SAMPLES = 1024  # the spectral distances' FFT size: shorter audio cannot be compared

# ---- the evaluation set -------------------------------------------------------------------------------------------


@dataclass
class EvalSet:
    """Utterances to evaluate and where they came from."""

    utterances: list[Utterance]
    description: str
    root: Path | None  # where `alignments/` is looked for by default
    peak_normalize: float | None = None


def data_config(ckpt_config: dict[str, Any], spec: str | None, overrides: Sequence[str]) -> DictConfig:
    """The `data` node to evaluate on with `data.key=value` overrides: --data's (a config name or YAML file, read as
    audio-vqvae-units reads it), else the checkpoint's own resolved data config."""
    bad = [o for o in overrides if not o.startswith("data.") or "=" not in o]
    if bad:
        raise ValueError(f"overrides must look like data.key=value, got {bad}")
    if spec is not None:
        return load_data_config(spec, overrides)
    if not ckpt_config.get("data"):
        raise ValueError("the checkpoint stores no data config; pass --data NAME or --files PATH ...")
    return OmegaConf.merge(OmegaConf.create(ckpt_config["data"]),
                           OmegaConf.from_dotlist([o.removeprefix("data.") for o in overrides]))


def corpus_set(data: DictConfig, split: str, seed: int) -> EvalSet:
    """Utterances of a corpus split. `auto`: held-out speakers if the config holds any out, else validation."""
    corpus = load_corpus(data)
    train, val, held_out = split_corpus(corpus, data, seed)
    if split == "auto":
        split = "held_out" if held_out else "val"
    utts = {"held_out": held_out, "val": val, "train": train, "all": corpus.utterances}[split]
    if not utts:
        raise ValueError(f"the {split} split of {corpus.root} ({data.name}) is empty; pick another --split")
    return EvalSet(list(utts), f"{data.name} ({split} split)", Path(corpus.root), data.peak_normalize)


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


# ---- per-utterance pass -------------------------------------------------------------------------------------------


@dataclass
class Totals:
    """What the pass over the set accumulates."""

    nll: float = 0.0
    kl: float = 0.0
    n_samples: int = 0
    n_latents: int = 0
    counts: np.ndarray | None = None
    codes: dict[str, np.ndarray] = field(default_factory=dict)  # utt -> [T_z]
    latents: dict[str, np.ndarray] = field(default_factory=dict)  # utt -> z_e [T_z, D]
    utterances: dict[str, Utterance] = field(default_factory=dict)  # utt id -> the evaluated utterance
    teacher_forced: list[tuple[float, float]] = field(default_factory=list)  # (log-mel distance, MCD) per utt
    sampled: list[tuple[float, float]] = field(default_factory=list)
    sampled_seconds: float = 0.0
    probes: list[PosteriorProbe] = field(default_factory=list)
    fallback_speakers: int = 0
    too_short: list[str] = field(default_factory=list)


def decoder_speaker(model: VQVAE, speaker: str, fallback: str | None) -> tuple[int, bool]:
    """Decoder speaker index for a corpus speaker: its own if the model knows it, else `fallback` (or the first)."""
    if speaker in model.speakers:
        return model.speaker_index(speaker), False
    return model.speaker_index(fallback if fallback is not None else 0), True


def excerpt_frames(n_frames: int, seconds: float, frame_rate: float, min_frames: int) -> slice:
    """The middle `seconds` (whole frames, at least min_frames) of n_frames latent frames."""
    n = min(n_frames, max(min_frames, int(seconds * frame_rate)))
    start = (n_frames - n) // 2
    return slice(start, start + n)


def spectral_distances(ref: torch.Tensor, est: torch.Tensor, sample_rate: int) -> tuple[float, float]:
    """(log-mel distance, MCD in dB) of an estimate against its reference waveform [T]."""
    r, e = ref.cpu().numpy(), est.cpu().numpy()
    return M.log_mel_distance(r, e, sample_rate), M.mel_cepstral_distortion(r, e, sample_rate)


def allocate_positions(set_: EvalSet, n: int, max_seconds: float | None, frame_rate: float,
                       rng: np.random.Generator) -> list[int]:
    """Posterior-probe positions per utterance: n spread over utterances in proportion to their frames."""
    seconds = np.array([u.duration if max_seconds is None else min(u.duration, max_seconds) for u in set_.utterances])
    frames = np.floor(seconds * frame_rate)
    if n <= 0 or frames.sum() <= 0:
        return [0] * len(frames)
    return rng.multinomial(n, frames / frames.sum()).tolist()


@dataclass
class Excerpt:
    """What resynthesis.png shows: panels (file name, title, waveform [T]) of one excerpt, and its units [T_z]."""

    utt_id: str
    panels: list[tuple[str, str, torch.Tensor]]
    units: np.ndarray


def excerpt_panels(model: VQVAE, ref: torch.Tensor, teacher_forced: torch.Tensor, sampled: torch.Tensor | None,
                   codes: torch.Tensor, speaker: int, args: argparse.Namespace) -> list[tuple[str, str, torch.Tensor]]:
    """Original, resyntheses and (when sampling is on) a conversion of the excerpt's codes to another speaker."""
    panels = [("original", "original", ref), ("teacher_forced", "resynthesis, teacher-forced", teacher_forced)]
    if sampled is not None:
        panels.append(("sampled", f"resynthesis, sampled (speaker {model.speakers[speaker]})", sampled))
        if len(model.speakers) > 1:
            target = args.convert_to or model.speakers[(speaker + 1) % len(model.speakers)]
            converted = model.decode(codes, target, temperature=args.temperature).cpu()
            panels.append((f"converted_to_{target}", f"converted to speaker {target}", converted))
    return panels


@torch.inference_mode()
def evaluate_set(model: VQVAE, set_: EvalSet, args: argparse.Namespace) -> tuple[Totals, Excerpt | None]:
    """One pass over the set: ELBO terms, codes, encoder outputs, resynthesis distances, posterior probes."""
    sr, hop, device = model.sample_rate, model.hop, model.device
    dataset = ValidationDataset(set_.utterances, sorted({u.speaker for u in set_.utterances}), sr, args.max_seconds,
                                set_.peak_normalize, None)
    rng = np.random.default_rng(args.seed)
    probe_counts = allocate_positions(set_, args.posterior_positions, args.max_seconds, model.frame_rate, rng)
    probe_counts = dict(zip((u.id for u in set_.utterances), probe_counts))
    generator = torch.Generator(device).manual_seed(args.seed)
    totals = Totals(counts=np.zeros(model.codebook_size, dtype=np.int64))
    excerpt: Excerpt | None = None
    for i in tqdm(range(len(dataset)), desc="evaluate", unit="utt", disable=None):
        wav, _, uid = dataset[i]
        utt = dataset.utterances[i]
        if wav.shape[-1] < max(hop, MIN_SAMPLES):
            totals.too_short.append(uid)
            continue
        spk, fell_back = decoder_speaker(model, utt.speaker, args.speaker)
        totals.fallback_speakers += fell_back
        x = wav.to(device)[None]  # [1, 1, T]
        out = model(x, torch.tensor([spk], device=device))
        totals.nll += float(out.nll)
        totals.kl += out.kl
        totals.n_samples += out.n_samples
        totals.n_latents += out.n_latents
        codes = out.codes[0].cpu().numpy()
        totals.counts += np.bincount(codes, minlength=model.codebook_size)
        totals.codes[uid] = codes
        totals.latents[uid] = out.z_e[0].T.cpu().numpy()
        totals.utterances[uid] = utt
        ref = wav[0, : out.n_samples]
        tf_wav = sample_teacher_forced(out.logits[0], generator).cpu()
        totals.teacher_forced.append(spectral_distances(ref, tf_wav, sr))
        if probe_counts[uid]:
            frames = rng.choice(codes.size, size=min(probe_counts[uid], codes.size), replace=False)
            totals.probes.append(conditional_posterior(model, ref, spk, sorted(frames.tolist()), args.posterior_chunk))
        span = excerpt_frames(codes.size, args.sampled_seconds, model.frame_rate, -(-MIN_SAMPLES // hop))
        samples = slice(span.start * hop, span.stop * hop)
        sampled = None
        if len(totals.sampled) < args.n_sampled:
            sampled = model.decode(out.codes[0, span], spk, temperature=args.temperature).cpu()
            totals.sampled.append(spectral_distances(ref[samples], sampled, sr))
            totals.sampled_seconds += sampled.numel() / sr
        if excerpt is None:
            panels = excerpt_panels(model, ref[samples], tf_wav[samples], sampled, out.codes[0, span], spk, args)
            excerpt = Excerpt(uid, panels, codes[span])
    return totals, excerpt


# ---- set-level metrics --------------------------------------------------------------------------------------------


def _mean_pair(pairs: list[tuple[float, float]]) -> dict[str, float]:
    a = np.asarray(pairs, dtype=np.float64).reshape(-1, 2)
    return {"n": len(pairs), "log_mel_distance": float(a[:, 0].mean()), "mcd_db": float(a[:, 1].mean())}


def _abx(features: dict[str, np.ndarray], labels: dict[str, np.ndarray], speakers: dict[str, str], mode: str,
         args: argparse.Namespace, distance: str) -> tuple[float | None, int]:
    """ABX error and triplet count, or (None, 0) when the set offers no triplet of that kind."""
    try:
        return M.abx_error(features, labels, speakers, mode, args.abx_triplets, args.seed, distance)
    except ValueError as err:
        log.warning("ABX %s (%s): %s", mode, distance, err)
        return None, 0


def matched_alignments(alignments: dict[str, list[Segment]],
                       utterances: dict[str, Utterance]) -> dict[str, list[Segment]]:
    """Segments per evaluated utterance id, found under the utterance id or else its file's stem."""
    found = {u: alignments.get(u, alignments.get(Path(utt.path).stem)) for u, utt in utterances.items()}
    return {u: segments for u, segments in found.items() if segments is not None}


def unit_quality(totals: Totals, alignments: dict[str, list[Segment]], codebook_size: int, frame_rate: float,
                 args: argparse.Namespace) -> tuple[dict[str, Any], np.ndarray, list[str]]:
    """Purity, PNMI and ABX (units and encoder outputs) on the utterances of `alignments` (utt id -> segments).

    Also returns the unit x phone co-occurrence counts and the phone names for the figure.
    """
    utts = list(alignments)
    vocab = build_vocab(alignments)
    labels = {u: frame_labels(alignments[u], totals.codes[u].size, frame_rate, vocab) for u in utts}
    counts = M.cooccurrence(np.concatenate([totals.codes[u] for u in utts]),
                            np.concatenate([labels[u] for u in utts]), codebook_size, len(vocab))
    speakers = {u: totals.utterances[u].speaker for u in utts}
    abx: dict[str, Any] = {"units": {}, "continuous": {}, "triplets": {}}
    for mode in ("within", "across"):
        abx["units"][mode], n = _abx({u: totals.codes[u] for u in utts}, labels, speakers, mode, args, "hamming")
        abx["continuous"][mode], _ = _abx({u: totals.latents[u] for u in utts}, labels, speakers, mode, args, "cosine")
        abx["triplets"][mode] = n
    result = {
        "n_utterances": len(utts),
        "n_phones": len(vocab),
        "n_frames": int(counts.sum()),
        "phone_purity": M.phone_purity(counts),
        "cluster_purity": M.cluster_purity(counts),
        "pnmi": M.pnmi(counts) if (counts.sum(0) > 0).sum() > 1 else None,
        "abx": abx,
    }
    return result, counts, sorted(vocab, key=vocab.get)


def set_metrics(model: VQVAE, totals: Totals) -> dict[str, Any]:
    """ELBO, bitrates, codebook and resynthesis sections of metrics.json."""
    seconds = totals.n_samples / model.sample_rate
    elbo = M.elbo_terms(totals.nll, totals.n_samples, totals.n_latents, model.codebook_size, model.sample_rate)
    elbo |= {"n_samples": totals.n_samples, "n_latents": totals.n_latents}
    sequences = list(totals.codes.values())
    return {
        "elbo": elbo,
        "bitrate": {
            "latent_bits_per_second": M.latent_bitrate(model.frame_rate, model.codebook_size),
            "entropy_bits_per_second": M.entropy_bitrate(sequences, seconds),
            "entropy_bits_per_second_dedup": M.entropy_bitrate(sequences, seconds, dedup=True),
        },
        "codebook": {
            "size": model.codebook_size,
            "used_codes": int((totals.counts > 0).sum()),
            "perplexity": float(perplexity(torch.as_tensor(totals.counts, dtype=torch.float64))),
        },
        "resynthesis": {
            "teacher_forced": _mean_pair(totals.teacher_forced),
            "sampled": (_mean_pair(totals.sampled) | {"seconds": totals.sampled_seconds}) if totals.sampled else None,
        },
    }


# ---- report -------------------------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def report_rows(m: dict[str, Any]) -> list[tuple[str, str]]:
    """(quantity, value) rows of the human-readable summary."""
    e, b, c, r = m["elbo"], m["bitrate"], m["codebook"], m["resynthesis"]
    rows = [
        ("utterances / audio seconds", f"{m['data']['n_utterances']} / {m['data']['seconds']:.1f}"),
        ("-ELBO (bits per sample)", _fmt(e["bits_per_sample"])),
        ("-ELBO (nats per second)", _fmt(e["nats_per_second"], 6)),
        ("reconstruction NLL (bits per sample)", _fmt(e["nll_bits_per_sample"])),
        ("KL = T_z log K (nats, whole set)", _fmt(e["kl_nats"], 6)),
        ("latent bitrate T_z log2 K / s (bits/s)", _fmt(b["latent_bits_per_second"])),
        ("code entropy bitrate, ZS2019 (bits/s)", _fmt(b["entropy_bits_per_second"])),
        ("codebook perplexity / used codes", f"{_fmt(c['perplexity'])} / {c['used_codes']} of {c['size']}"),
        ("teacher-forced log-mel distance / MCD (dB)",
         f"{_fmt(r['teacher_forced']['log_mel_distance'])} / {_fmt(r['teacher_forced']['mcd_db'])}"),
    ]
    if r["sampled"]:
        rows.append((f"sampled log-mel distance / MCD (dB), {r['sampled']['n']} excerpts",
                     f"{_fmt(r['sampled']['log_mel_distance'])} / {_fmt(r['sampled']['mcd_db'])}"))
    if m["units"]:
        u, abx = m["units"], m["units"]["abx"]
        rows += [
            ("phone purity / cluster purity / PNMI",
             f"{_fmt(u['phone_purity'])} / {_fmt(u['cluster_purity'])} / {_fmt(u['pnmi'])}"),
            ("ABX within / across, units (%)", f"{_pct(abx['units']['within'])} / {_pct(abx['units']['across'])}"),
            ("ABX within / across, encoder outputs (%)",
             f"{_pct(abx['continuous']['within'])} / {_pct(abx['continuous']['across'])}"),
        ]
    if m["posterior"]:
        p = m["posterior"]
        rows += [
            (f"posterior probe: argmax = encoder code ({p['n_positions']} positions)", _fmt(p["argmax_agreement"])),
            ("posterior entropy (nats / bits)", f"{_fmt(p['entropy_nats'])} / {_fmt(p['entropy_bits'])}"),
            ("KL(q, exact conditional posterior) (nats)", _fmt(p["kl_nats"])),
        ]
    return rows


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def markdown_report(m: dict[str, Any]) -> str:
    """report.md: what was evaluated, the summary table and the figures."""
    lines = [
        f"# Evaluation of `{m['checkpoint']['path']}` (step {m['checkpoint']['step']})",
        "",
        f"Data: {m['data']['source']}. Full numbers: `metrics.json`.",
        "",
        "| quantity | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in report_rows(m)),
        "",
        *(f"![{name}]({name})" for name in m["figures"]),
        "",
    ]
    return "\n".join(lines)


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


# ---- CLI ----------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="audio-vqvae-eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint written by audio-vqvae-train")
    p.add_argument("overrides", nargs="*", help="data config overrides, e.g. data.root=/data/VCTK-Corpus-0.92")
    p.add_argument("--out", required=True, help="output directory")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", help="a data config name (demo, vctk, librispeech, folder, manifest); "
                                    "default: the checkpoint's own data config")
    src.add_argument("--files", nargs="+", help="audio files or directories instead of a corpus config")
    p.add_argument("--split", choices=SPLITS, default="auto",
                   help="corpus split (checkpoint's seed); auto = held-out speakers, else validation")
    p.add_argument("--alignments", help="phone alignments (.tsv/.TextGrid dir or file); default <corpus>/alignments")
    p.add_argument("--speaker", help="decoder speaker for utterances whose speaker the model does not know "
                                     "(default: the model's first)")
    p.add_argument("--convert-to", help="target speaker of the conversion figure (default: another speaker)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 | mps")
    p.add_argument("--max-seconds", type=float, help="crop every utterance to its first S seconds (default: whole)")
    p.add_argument("--max-utterances", type=int, help="evaluate only the first N utterances (by id)")
    p.add_argument("--n-sampled", type=int, default=2, help="excerpts resynthesised by incremental sampling (slow)")
    p.add_argument("--sampled-seconds", type=float, default=1.0, help="length of each sampled excerpt")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    p.add_argument("--abx-triplets", type=int, default=5000, help="ABX triplets per condition (at most)")
    p.add_argument("--posterior-positions", type=int, default=32, help="latent positions probed (0 = off)")
    p.add_argument("--posterior-chunk", type=int, default=64, help="candidate codes per decoder batch in the probe")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_intermixed_args(argv)
    if args.files and args.overrides:
        p.error("data.* overrides apply to corpus configs, not to --files")
    return args


def write_figures(model: VQVAE, out: Path, totals: Totals, perplexity: float, excerpt: Excerpt | None,
                  cooccurrence: tuple[np.ndarray, list[str]] | None) -> list[str]:
    """The PNGs (and the excerpt's audio) into `out`; returns the figure file names."""
    save_figure(codebook_usage_figure(totals.counts, perplexity), out / "codebook_usage.png")
    names = ["codebook_usage.png"]
    if cooccurrence is not None:
        save_figure(cooccurrence_figure(*cooccurrence), out / "unit_phone_cooccurrence.png")
        names.append("unit_phone_cooccurrence.png")
    if excerpt is not None:
        files, titles, wavs = zip(*excerpt.panels)
        titles = [f"{excerpt.utt_id}: {t}" for t in titles]
        fig = spectrogram_figure(wavs, titles, model.sample_rate, excerpt.units, model.frame_rate)
        save_figure(fig, out / "resynthesis.png")
        names.append("resynthesis.png")
        (out / "audio").mkdir(exist_ok=True)
        for name, wav in zip(files, wavs):
            save_audio(out / "audio" / f"{excerpt.utt_id}_{name}.wav", wav, model.sample_rate)
    return names


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Run the evaluation the parsed arguments describe; write everything into args.out; return the metrics."""
    torch.manual_seed(args.seed)  # model.decode samples from the global generator
    model = VQVAE.from_checkpoint(args.checkpoint, resolve_device(args.device))
    ckpt = {"config": model.config, "step": model.step}
    if args.files:
        set_ = file_set(args.files)
    else:
        data = data_config(ckpt["config"], args.data, args.overrides)
        set_ = corpus_set(data, args.split, int(ckpt["config"].get("seed", 0)))
    set_.utterances = set_.utterances[: args.max_utterances]
    alignment_dir = Path(args.alignments) if args.alignments else None
    if alignment_dir is None and set_.root is not None and (set_.root / "alignments").is_dir():
        alignment_dir = set_.root / "alignments"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    totals, excerpt = evaluate_set(model, set_, args)
    if not totals.codes:
        raise ValueError(f"no utterance of {set_.description} could be evaluated "
                         f"(unreadable, or shorter than {MIN_SAMPLES} samples)")
    m: dict[str, Any] = {
        "checkpoint": {"path": str(args.checkpoint), "sha256": file_sha256(args.checkpoint), "step": ckpt["step"],
                       "codebook_size": model.codebook_size, "hop": model.hop, "sample_rate": model.sample_rate,
                       "frame_rate": model.frame_rate, "receptive_field": model.decoder.receptive_field},
        "data": {"source": set_.description, "n_utterances": len(totals.codes),
                 "n_speakers": len({u.speaker for u in totals.utterances.values()}),
                 "seconds": totals.n_samples / model.sample_rate, "too_short": totals.too_short,
                 "fallback_speaker_utterances": totals.fallback_speakers},
        **set_metrics(model, totals),
        "units": None,
        "posterior": summarize(totals.probes, model.codebook_size) if totals.probes else None,
    }
    alignments = matched_alignments(load_alignments(alignment_dir), totals.utterances) if alignment_dir else {}
    cooccurrence = None
    if alignments:
        units, counts, phones = unit_quality(totals, alignments, model.codebook_size, model.frame_rate, args)
        m["units"], cooccurrence = {"alignments": str(alignment_dir), **units}, (counts, phones)
    elif alignment_dir is not None:
        if args.alignments:
            raise ValueError(f"--alignments {alignment_dir}: no alignment for any evaluated utterance "
                             f"(ids look like {next(iter(totals.codes))!r})")
        log.warning("%s holds no alignment for the evaluated utterances: no unit-quality metrics", alignment_dir)
    m["figures"] = write_figures(model, out, totals, m["codebook"]["perplexity"], excerpt, cooccurrence)
    with atomic_write(out / "metrics.json") as f:
        json.dump(m, f, indent=2)
    with atomic_write(out / "report.md") as f:
        f.write(markdown_report(m))
    return m


def main(argv: list[str] | None = None) -> None:
    """Console entry point `audio-vqvae-eval`."""
    args = parse_args(argv)
    m = run_app("audio-vqvae-eval", lambda: evaluate(args))
    print_table(report_rows(m))
    print(f"wrote metrics.json, report.md and {', '.join(m['figures'])} to {args.out}")


if __name__ == "__main__":
    main()
