"""Resynthesis and voice conversion as batch jobs: (utterance codes, speaker, F0 contour) -> waveforms, decoded in
batches; `generate_files` is all of `audio-vqvae-generate` (units files, audio or prior samples -> WAV files)."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .audio import save_audio
from .checkpoint import file_sha256
from .extract import collect_utterances, encode_utterances
from .io import write_skip_report
from .model import F0_CHOICES, VQVAE, Contour, mapped_contour
from .prior.model import UnitPrior, check_vqvae
from .unitfile import load_f0, load_units, read_speaker_map

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One output file: an utterance's frame-level codes decoded with one speaker and, for the speech path, an F0
    contour (None: the F0 predictor's)."""

    utt_id: str
    speaker: str
    codes: np.ndarray  # [T_z] int64
    path: Path
    f0: Contour | None = None


def job_contour(model: VQVAE, contour: Contour | None, target: str, mode: str) -> Contour | None:
    """The contour a conversion into `target` decodes with: per mode (`F0_CHOICES`) the source contour mapped to
    the target's log-F0 statistics, the source's unchanged, or None (predicted); None without a source contour."""
    if contour is None or mode == "predicted":
        return None
    if mode == "mapped":
        return mapped_contour(contour, model.speech.speaker_stats(model.speaker_index(target)))
    return contour


def plan_jobs(
    model: VQVAE,
    units: Mapping[str, np.ndarray],
    sources: Mapping[str, str],
    targets: Sequence[str],
    out_dir: Path,
    contours: Mapping[str, Contour] | None = None,
    f0: str = "mapped",
) -> list[Job]:
    """Every (utterance, speaker) to decode. targets empty: each utterance's source speaker into `<utt>.wav` (with
    its own contour, or the predicted one when f0 is "predicted"), else each target into `<utt>_to_<target>.wav`
    with `job_contour`. An unknown source speaker is a ValueError listing the valid ones. contours: the source
    contours by utterance id (None: decode with predicted F0, or with the WaveNet)."""
    jobs = []
    contours = contours or {}
    for utt_id, codes in units.items():
        if codes.size == 0:
            log.warning("skipping %s: no units", utt_id)
            continue
        contour = contours.get(utt_id)
        if targets:
            jobs += [Job(utt_id, t, codes, out_dir / f"{utt_id}_to_{t}.wav", job_contour(model, contour, t, f0))
                     for t in targets]
            continue
        source = sources.get(utt_id)
        if not source:
            raise ValueError(f"no speaker known for utterance {utt_id!r}: pass --speaker NAME or --speaker-map TSV "
                             f"(valid speakers: {', '.join(model.speakers)})")
        try:
            model.speaker_index(source)
        except ValueError as err:
            raise ValueError(f"utterance {utt_id!r}: source {err}; pass --speaker to convert it") from None
        jobs.append(Job(utt_id, source, codes, out_dir / f"{utt_id}.wav", None if f0 == "predicted" else contour))
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
    decoder: str = "auto",
) -> Iterator[tuple[Job, torch.Tensor]]:
    """Decode jobs in batches; yield (job, waveform [T_z * hop] at model.sample_rate) as each batch finishes.

    decoder: as `VQVAE.decode` ("auto": the speech path when the model has one), which gets each job's contour.
    progress(n) gets the samples computed (time steps x batch items) after each generation chunk (the speech path:
    after each batch); generator is the sampling's (or the excitation noise's) random source.
    """
    speech = model.resolve_decoder(decoder) == "source_filter"
    uses_f0 = model.uses_f0(decoder)
    for batch in batches(jobs, batch_size):
        step = None if progress is None else _times(progress, len(batch))
        wavs = model.decode([torch.from_numpy(j.codes) for j in batch], [j.speaker for j in batch],
                            temperature=temperature, greedy=greedy, progress=None if speech else step, kernel=kernel,
                            generator=generator, decoder=decoder, f0=[j.f0 for j in batch] if uses_f0 else None)
        if speech and step is not None:
            step(batch[0].codes.size * model.hop)
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
                     overrides: Sequence[str], batch_size: int, chunk_seconds: float, skipped_path: Path,
                     f0: bool = False) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, Contour]]:
    """Encode audio inputs (files, directories, a manifest or a data config, as audio-vqvae-units reads them) ->
    ({utt_id: codes}, {utt_id: source speaker}, {utt_id: F0 contour} (with f0, else empty)); bad files are logged
    and appended to skipped_path."""
    utterances, skipped = collect_utterances(paths, manifest, data, overrides)
    units, speakers, contours = {}, {}, {}
    for utt, result, contour in encode_utterances(model, utterances, batch_size, chunk_seconds, f0=f0):
        if isinstance(result, str):
            skipped.append((utt.path, result))
            continue
        units[utt.id] = result
        if contour is not None:
            contours[utt.id] = contour
        if utt.speaker:
            speakers[utt.id] = utt.speaker
    for path, reason in skipped:
        log.warning("skipping %s: %s", path, reason)
    if skipped:
        skipped_path.parent.mkdir(parents=True, exist_ok=True)
        write_skip_report(skipped_path, skipped)
    return units, speakers, contours


def prior_units(model: VQVAE, prior_path: str, speaker: str | None, seconds: float, n: int, temperature: float,
                top_k: int | None, seed: int, prompt_units: str | None = None,
                force: bool = False) -> dict[str, np.ndarray]:
    """Sample n unit sequences of `seconds` from the prior checkpoint at prior_path for one speaker, each after the
    prompt `FILE:UTT_ID` (prompt_units) when given. A prior trained on another VQ-VAE's units is refused unless
    `force` (`prior.model.check_vqvae`)."""
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
    check_vqvae(prior, prior_path, file_sha256(model.checkpoint_path), model.frame_rate, force)
    generator = torch.Generator(prior.device).manual_seed(seed)
    return sample_units(prior, model, speaker, seconds, n, temperature, top_k, generator, prompt)


@dataclass(frozen=True)
class Request:
    """What `generate_files` writes (the options of `audio-vqvae-generate`, which see). One source: `units` (a units
    file), `prior` (a prior checkpoint to sample units from) or audio (`paths`, `manifest` or `data` + overrides)."""

    out_dir: str | None = None
    units: str | None = None
    prior: str | None = None
    paths: Sequence[str] = ()
    manifest: str | None = None
    data: str | None = None
    overrides: Sequence[str] = ()
    speaker: str | None = None  # target(s), comma-separated; with --prior the one voice
    speaker_map: str | None = None
    seconds: float = 3.0
    n_samples: int = 1
    prior_temperature: float = 1.0
    top_k: int | None = None
    prompt_units: str | None = None
    temperature: float = 1.0
    greedy: bool = False
    kernel: str = "auto"
    batch_size: int = 8
    chunk_seconds: float = 30.0
    seed: int = 0
    overwrite: bool = False
    force: bool = False  # use a --prior trained on another VQ-VAE's units
    decoder: str = "auto"
    f0: str | None = None  # None: "mapped" where a source contour exists, else predicted


def check_f0_request(model: VQVAE, request: Request) -> tuple[bool, str]:
    """(decode with F0?, F0 mode) for a request; a ValueError naming --f0 or --decoder for a combination that
    cannot be honoured (F0 without a speech path or with a WaveNet that takes none, a source contour for prior
    samples). A WaveNet with an F0 excitation and no speech path decodes with the source contour only."""
    mode = request.f0
    excited = model.decoder.takes_f0
    if mode is not None and mode not in F0_CHOICES:
        raise ValueError(f"--f0 {mode}: must be one of {', '.join(F0_CHOICES)}")
    if mode is not None and model.speech is None and not (excited and mode == "source"):
        raise ValueError(f"--f0 {mode}: this checkpoint has no speech path (F0 + source-filter decoder); train one "
                         "with audio-vqvae-train-speech vqvae=CHECKPOINT")
    try:
        uses_f0 = model.uses_f0(request.decoder)
    except ValueError as err:
        raise ValueError(f"--{err}") from None
    if mode is not None and not uses_f0:
        raise ValueError(f"--f0 {mode}: the WaveNet decoder takes no F0 (use --decoder source_filter or auto)")
    if request.prior and mode in ("mapped", "source"):
        raise ValueError(f"--f0 {mode}: prior samples have no source contour; they decode with the predicted F0")
    return uses_f0, mode or ("source" if excited and model.speech is None else "mapped")


def units_file_contours(model: VQVAE, path: str, units: Mapping[str, np.ndarray], mode: str, explicit: bool
                        ) -> dict[str, Contour] | None:
    """The F0 contours of a units file for the speech path: its F0 file when the sidecar names one (`load_f0`,
    checked against the units and the model's F0 frame rate), None (predicted) when it has none or mode is "predicted";
    an explicit --f0 mapped/source without an F0 file is a ValueError."""
    if mode == "predicted":
        return None
    contours = load_f0(path, units, model.sample_rate / model.contour_hop)
    if contours is None:
        if explicit:
            raise ValueError(f"--f0 {mode}: {path} has no F0 file (write one with audio-vqvae-units --f0)")
        log.info("%s has no F0 file: decoding with the predicted F0", path)
        return None
    return contours


def generate_files(model: VQVAE, request: Request) -> list[Path]:
    """All of `audio-vqvae-generate`: units (a units file, encoded audio or prior samples) -> one WAV file per
    (utterance, speaker) in request.out_dir, decoded with request.decoder and F0 per request.f0 (see
    `check_f0_request`, `plan_jobs`); existing outputs are kept unless request.overwrite. Returns the files
    written."""
    r = request
    if r.out_dir is None:
        raise ValueError("-o/--out-dir is required (where the WAV files go)")
    if sum(map(bool, (r.units, r.prior, r.paths or r.manifest or r.data))) != 1:
        raise ValueError("give one of --units FILE, --prior CKPT or audio inputs (files, directories, --manifest or "
                         "--data)")
    if not r.greedy and r.temperature <= 0:
        raise ValueError(f"--temperature {r.temperature}: must be > 0 (or use --greedy)")
    if r.batch_size < 1:
        raise ValueError(f"--batch-size {r.batch_size}: must be >= 1")
    speech, mode = check_f0_request(model, r)
    out_dir = Path(r.out_dir)
    targets = [t for t in (r.speaker or "").split(",") if t]
    for name in targets:
        model.speaker_index(name)  # fails early, listing the valid names
    contours = None
    if r.prior:
        units = prior_units(model, r.prior, r.speaker, r.seconds, r.n_samples, r.prior_temperature, r.top_k, r.seed,
                            r.prompt_units, r.force)
        sources, targets = dict.fromkeys(units, r.speaker), []
    elif r.units:
        units, sources = load_units(r.units, model.codebook_size), {}
        if speech:
            contours = units_file_contours(model, r.units, units, mode, r.f0 is not None)
    else:
        units, sources, contours = units_from_audio(model, list(r.paths), r.manifest, r.data, r.overrides,
                                                    r.batch_size, r.chunk_seconds, out_dir / "skipped.tsv",
                                                    f0=speech and mode != "predicted")
    if r.speaker_map:
        sources |= read_speaker_map(r.speaker_map)
    jobs = plan_jobs(model, units, sources, targets, out_dir, contours, mode)
    todo = [j for j in jobs if r.overwrite or not j.path.exists()]
    log.info("%d files to write in %s (%d exist already)", len(todo), out_dir, len(jobs) - len(todo))
    generator = torch.Generator(model.device).manual_seed(r.seed)
    total = sum(b[0].codes.size * model.hop * len(b) for b in batches(todo, r.batch_size))
    written = []
    with tqdm(total=total, unit="sample", unit_scale=True, dynamic_ncols=True, disable=None) as bar:
        for job, wav in synthesize(model, todo, r.batch_size, r.temperature, r.greedy, bar.update, r.kernel,
                                   generator, r.decoder):
            job.path.parent.mkdir(parents=True, exist_ok=True)
            save_audio(job.path, wav, model.sample_rate)
            written.append(job.path)
    return written
