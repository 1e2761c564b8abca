"""Resynthesis and voice conversion as batch jobs: (utterance codes, speaker) -> waveforms, decoded in batches."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .extract import collect_utterances, encode_utterances
from .io import write_skip_report
from .model import VQVAE
from .prior.model import UnitPrior
from .unitfile import load_units

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One output file: an utterance's frame-level codes decoded with one speaker."""

    utt_id: str
    speaker: str
    codes: np.ndarray  # [T_z] int64
    path: Path


def plan_jobs(
    model: VQVAE,
    units: Mapping[str, np.ndarray],
    sources: Mapping[str, str],
    targets: Sequence[str],
    out_dir: Path,
) -> list[Job]:
    """Every (utterance, speaker) to decode. targets empty: each utterance's source speaker into `<utt>.wav`, else
    each target into `<utt>_to_<target>.wav`. An unknown source speaker is a ValueError listing the valid ones."""
    jobs = []
    for utt_id, codes in units.items():
        if codes.size == 0:
            log.warning("skipping %s: no units", utt_id)
            continue
        if targets:
            jobs += [Job(utt_id, t, codes, out_dir / f"{utt_id}_to_{t}.wav") for t in targets]
            continue
        source = sources.get(utt_id)
        if not source:
            raise ValueError(f"no speaker known for utterance {utt_id!r}: pass --speaker NAME or --speaker-map TSV "
                             f"(valid speakers: {', '.join(model.speakers)})")
        try:
            model.speaker_index(source)
        except ValueError as err:
            raise ValueError(f"utterance {utt_id!r}: source {err}; pass --speaker to convert it") from None
        jobs.append(Job(utt_id, source, codes, out_dir / f"{utt_id}.wav"))
    return jobs


def batches(jobs: Sequence[Job], batch_size: int) -> list[list[Job]]:
    """Longest first, `batch_size` jobs per batch, so each batch holds similar lengths."""
    ordered = sorted(jobs, key=lambda j: -j.codes.size)
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


def _times(progress: Callable[[int], None], items: int) -> Callable[[int], None]:
    """Turn decode's time steps into samples computed for a batch of `items`."""
    return lambda steps: progress(steps * items)


def synthesize(
    model: VQVAE,
    jobs: Sequence[Job],
    batch_size: int = 8,
    temperature: float = 1.0,
    greedy: bool = False,
    progress: Callable[[int], None] | None = None,
    kernel: str = "auto",
    generator: torch.Generator | None = None,
) -> Iterator[tuple[Job, torch.Tensor]]:
    """Decode jobs in batches; yield (job, waveform [T_z * hop] at model.sample_rate) as each batch finishes.

    progress(n) gets the samples computed (time steps x batch items) after each generation chunk; generator is the
    sampling's random source (see `VQVAE.decode`).
    """
    for batch in batches(jobs, batch_size):
        step = None if progress is None else _times(progress, len(batch))
        wavs = model.decode([torch.from_numpy(j.codes) for j in batch], [j.speaker for j in batch],
                            temperature=temperature, greedy=greedy, progress=step, kernel=kernel, generator=generator)
        yield from zip(batch, wavs)


def sample_units(prior: UnitPrior, model: VQVAE, speaker: str | None, seconds: float, n: int, temperature: float,
                 top_k: int | None, generator: torch.Generator, prompt: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """n unit sequences of `seconds` at the model's frame rate drawn from the prior (stage two), each after `prompt`
    (the units of a real utterance, kept at the start) when given -> {sample_NNN: codes [T_z]} for `synthesize`."""
    if prior.codebook_size != model.codebook_size:
        raise ValueError(f"the prior models {prior.codebook_size} units but the VQ-VAE has {model.codebook_size} codes")
    steps = round(seconds * model.frame_rate)
    if steps < 1:
        raise ValueError(f"--seconds {seconds}: not one unit at {model.frame_rate:g} units per second")
    cond = None
    if prior.speakers:
        if speaker is None:
            raise ValueError(f"the prior is speaker-conditioned: pass --speaker (one of {', '.join(prior.speakers)})")
        cond = torch.full((n,), prior.speaker_index(speaker), device=prior.device)
    prompt_t = None if prompt is None else torch.as_tensor(prompt, dtype=torch.long)
    units = prior.sample(n, steps, cond, temperature, top_k, generator, prompt_t).cpu().numpy()
    return {f"sample_{i:03d}": row for i, row in enumerate(units)}


def units_from_audio(model: VQVAE, paths: Sequence[str], manifest: str | None, data: str | None,
                     overrides: Sequence[str], batch_size: int, chunk_seconds: float,
                     skipped_path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Encode audio inputs (files, directories, a manifest or a data config, as audio-vqvae-units reads them) ->
    ({utt_id: codes}, {utt_id: source speaker}); bad files are logged and appended to skipped_path."""
    utterances, skipped = collect_utterances(paths, manifest, data, overrides)
    units, speakers = {}, {}
    for utt, result in encode_utterances(model, utterances, batch_size, chunk_seconds):
        if isinstance(result, str):
            skipped.append((utt.path, result))
            continue
        units[utt.id] = result
        if utt.speaker:
            speakers[utt.id] = utt.speaker
    for path, reason in skipped:
        log.warning("skipping %s: %s", path, reason)
    if skipped:
        skipped_path.parent.mkdir(parents=True, exist_ok=True)
        write_skip_report(skipped_path, skipped)
    return units, speakers


def prior_units(model: VQVAE, prior_path: str, speaker: str | None, seconds: float, n: int, temperature: float,
                top_k: int | None, seed: int, prompt_units: str | None = None) -> dict[str, np.ndarray]:
    """Sample n unit sequences of `seconds` from the prior checkpoint at prior_path for one speaker, each after the
    prompt `FILE:UTT_ID` (prompt_units) when given."""
    if not speaker or "," in speaker:
        raise ValueError("--prior needs one --speaker (the voice that decodes the sampled units)")
    prompt = None
    if prompt_units:
        path, _, utt = prompt_units.rpartition(":")
        table = load_units(path, model.codebook_size)
        if utt not in table:
            raise ValueError(f"--prompt-units: no utterance {utt!r} in {path}")
        prompt = table[utt]
    prior = UnitPrior.from_checkpoint(prior_path, model.device)
    generator = torch.Generator(prior.device).manual_seed(seed)
    return sample_units(prior, model, speaker, seconds, n, temperature, top_k, generator, prompt)
