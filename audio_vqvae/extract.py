"""Audio -> units at scale: audio sources -> utterances -> pieces -> batched `VQVAE.encode_batch` -> units files.

Used by `audio-vqvae-units`, the evaluation and the benchmarks; in three lines:

    from audio_vqvae import VQVAE, extract_units
    model = VQVAE.from_checkpoint("runs/demo/best.pt")
    extract_units(model, ["wavs/"], "units.txt")

Audio is prepared exactly as `VQVAE.encode` prepares an array (and as training saw it): the same reader, downmix and
resampler, scaled by `model.input_gain` of the file's peak (the checkpoint's data.peak_normalize; the peak is found
in a streaming pass). Long files are encoded in pieces of `chunk_seconds` (a multiple of the hop) with context >= the
encoder's receptive field on each side; only frames whose receptive field lies inside the piece (or at the true
file edges, where the piece's zero padding is the file's) are kept, so every kept frame is computed from the same
samples and padding as in whole-file `VQVAE.encode` (equal up to float32 rounding, see `encode_utterances`). Each
file is read sequentially in blocks, so memory is bounded by batch size x piece length, whatever the file's length.
For the same checkpoint, chunk_seconds and batch_size the units of a file do not depend on the other files of the
run, so shards and resumed runs give exactly the units of one whole run.

F0 (`f0=True`, models with a speech path): each file's contour is tracked on the whole prepared utterance, the
samples the pieces were cut from (`VQVAE.f0_contour`: exactly the contour of `model.prepare` of the file in memory).
Praat's voicing threshold is relative to the signal's peak and its path search spans the signal, so chunked tracking
would depend on the chunking; the price is that with F0 a file's prepared samples are held until it is done
(4 bytes per sample, plus the tracker's float64 copy).
"""
from __future__ import annotations

import logging
import math
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .audio import (
    AUDIO_EXTENSIONS,
    AudioError,
    AudioInfo,
    audio_info,
    file_gain,
    load_audio,
    resample_stream,
    scale,
)
from .batching import pad_batch
from .checkpoint import file_sha256
from .config import load_data_config
from .data import Utterance, audio_files, check_ids, load_corpus, path_id
from .f0 import TRACKER
from .model import VQVAE, Contour
from .unitfile import UnitsSidecar, UnitWriter, durations_path, f0_path

log = logging.getLogger(__name__)

# ---- inputs: files, directories, manifests, data configs -> utterances --------------------------------------------


def file_utterances(inputs: Sequence[str]) -> tuple[list[Utterance], list[tuple[str, str]]]:
    """Files and directories (searched recursively for audio extensions) -> (utterances, skipped (path, reason)).

    A file's id is its stem; a file found under a directory gets its path relative to that directory without
    the extension, directories joined by "_" (as data=folder does). Speakers are unknown ("").
    """
    utts, skipped = [], []
    for spec in inputs:
        root = Path(spec)
        if root.is_dir():
            files = [(p, path_id(p.relative_to(root).as_posix())) for p in audio_files(root)]
            if not files:
                raise ValueError(f"{root}: no audio files ({' '.join(sorted(AUDIO_EXTENSIONS))}) in this directory")
        elif root.is_file():
            files = [(root, root.stem)]
        else:
            raise FileNotFoundError(f"{root}: no such file or directory")
        for path, utt_id in files:
            try:
                utts.append(Utterance(utt_id, str(path), "", audio_info(path).duration))
            except AudioError as err:
                skipped.append((str(path), str(err)))
    return utts, skipped


def collect_utterances(
    inputs: Sequence[str], manifest: str | None = None, data: str | None = None, overrides: Sequence[str] = ()
) -> tuple[list[Utterance], list[tuple[str, str]]]:
    """All inputs -> (utterances sorted by id, skipped files). A manifest is data=manifest with data.manifest set;
    its ids are `data.manifest_utterance_id`s. Two inputs with one id are a ValueError naming both."""
    if manifest and data:
        raise ValueError("--manifest and --data: give one of them (a manifest is --data manifest data.manifest=FILE)")
    if overrides and not (manifest or data):
        raise ValueError(f"{overrides[0]}: data.* overrides need --data (or --manifest)")
    utts, skipped = file_utterances(inputs)
    if manifest:
        data, overrides = "manifest", [f"data.manifest={Path(manifest).resolve()}", *overrides]
    if data:
        corpus = load_corpus(load_data_config(data, overrides))
        utts += corpus.utterances
        skipped += corpus.skipped
    if not utts and not skipped:
        raise ValueError("no input: give audio files or directories, --manifest or --data")
    check_ids(utts)
    return sorted(utts, key=lambda u: u.id), skipped


def shard(items: Sequence[Any], index: int, count: int) -> list[Any]:
    """Contiguous block `index` of `count` (sizes differ by at most one): shards 0..count-1 concatenate to items."""
    if not 0 <= index < count:
        raise ValueError(f"--shard {index}: must be in 0..{count - 1} for --num-shards {count}")
    n = len(items)
    return list(items[index * n // count : (index + 1) * n // count])


def shard_path(out: str | os.PathLike, index: int, count: int) -> Path:
    """units.txt -> units.2-of-8.txt (unchanged when count == 1)."""
    out = Path(out)
    return out if count == 1 else out.with_name(f"{out.stem}.{index}-of-{count}{out.suffix}")


# ---- chunked encoding -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """Samples [start, stop) of an utterance (model rate) to encode; keep `frames` latent frames after `skip`."""

    start: int
    stop: int
    skip: int
    frames: int


def plan_pieces(n_samples: int, hop: int, chunk: int, context: int) -> list[Piece]:
    """Cover frames 0 .. n_samples // hop - 1 with pieces of `chunk` samples (multiple of hop) +- `context` (multiple of
    hop, >= the encoder's receptive field). Empty when the utterance is shorter than one frame."""
    if chunk <= 0 or chunk % hop or context % hop:
        raise ValueError(f"chunk ({chunk}) and context ({context}) must be multiples of the hop ({hop}), chunk > 0")
    end = n_samples // hop * hop
    pieces = []
    for s in range(0, end, chunk):
        e = min(s + chunk, end)
        a, b = max(0, s - context), min(n_samples, e + context)
        pieces.append(Piece(a, b, (s - a) // hop, (e - s) // hop))
    return pieces


def model_rate_blocks(path: str, info: AudioInfo, sample_rate: int, block: int) -> Iterator[np.ndarray]:
    """The file as consecutive mono float32 blocks at sample_rate, read `block` source frames at a time.

    Concatenated they equal `load_audio(path, sample_rate)` exactly: same reader and downmix, and a streaming
    resampler gives the samples of a one-shot one. AudioError if the file turns out to be unusable.
    """
    total = math.floor(info.frames * sample_rate / info.sample_rate)
    stream = None if info.sample_rate == sample_rate else resample_stream(info.sample_rate, sample_rate)
    emitted = 0
    for start in range(0, info.frames, block):
        x = load_audio(path, info.sample_rate, start, block).numpy()
        if stream is not None:
            x = stream.resample_chunk(x, last=start + block >= info.frames)
        x = x[: total - emitted]
        emitted += len(x)
        yield x
    if emitted < total:  # as load_audio: the resampler's last sample can fall short by one
        yield np.zeros(total - emitted, dtype=np.float32)


def read_pieces(blocks: Iterator[np.ndarray], pieces: Sequence[Piece]) -> Iterator[np.ndarray]:
    """Cut pieces (increasing start and stop) out of a block stream, holding only what the next piece needs."""
    buf, buf_start = np.zeros(0, dtype=np.float32), 0
    for p in pieces:
        buf, buf_start = buf[p.start - buf_start :], p.start
        parts = [buf]
        have = len(buf)
        while buf_start + have < p.stop:
            parts.append(next(blocks))
            have += len(parts[-1])
        buf = np.concatenate(parts) if len(parts) > 1 else buf
        yield buf[: p.stop - buf_start]


def padded_length(n: int, hop: int, limit: int) -> int:
    """The canonical batch length of a piece of n samples: a whole number of frames with at most 3 significant bits
    (so at most 1/4 is padding), capped at limit (the longest piece)."""
    frames = -(-n // hop)
    step = 2 ** max(0, frames.bit_length() - 3)
    return min(limit, -(-frames // step) * step * hop)


@dataclass
class _Job:
    """An utterance in flight: the codes of its pieces (None until encoded) and, when asked for, its F0 contour
    (None until tracked), or why it failed."""

    utt: Utterance
    wants_f0: bool = False
    codes: list[np.ndarray | None] = field(default_factory=list)
    contour: Contour | None = None
    error: str | None = None

    @property
    def done(self) -> bool:
        if self.error is not None:
            return True
        return bool(self.codes) and all(c is not None for c in self.codes) and (not self.wants_f0 or
                                                                                 self.contour is not None)


class _Buckets:
    """Pieces waiting to be encoded, grouped by padded length.

    Every forward pass has the shape [batch_size, 1, length] (zero rows fill a short batch), so a piece's units
    depend only on its samples, its bucket and the batch size: not on which other pieces share the pass. Float
    kernels are chosen per shape, so without this, shards or resumed runs could differ at near-tied frames.
    """

    def __init__(self, model: VQVAE, batch_size: int, limit: int, progress: Callable[[float], None] | None) -> None:
        self.model, self.batch_size, self.limit, self.progress = model, batch_size, limit, progress
        self.waiting: dict[int, list[tuple[_Job, int, Piece, torch.Tensor]]] = {}

    def add(self, job: _Job, index: int, piece: Piece, wav: torch.Tensor) -> None:
        length = padded_length(len(wav), self.model.hop, self.limit)
        self.waiting.setdefault(length, []).append((job, index, piece, wav))
        if len(self.waiting[length]) == self.batch_size:
            self.run(length)

    def run(self, length: int) -> None:
        """Encode one bucket; each piece's kept frames go to its job."""
        items = [item for item in self.waiting.pop(length) if item[0].error is None]
        if not items:
            return
        x, lengths = pad_batch([wav for *_, wav in items], length, self.batch_size)
        codes = self.model.encode_batch(x[:, None], lengths).cpu()
        for row, (job, index, p, _) in enumerate(items):
            job.codes[index] = codes[row, p.skip : p.skip + p.frames].numpy()
        if self.progress is not None:
            self.progress(sum(p.frames for _, _, p, _ in items) * self.model.hop / self.model.sample_rate)

    def run_waiting_for(self, job: _Job) -> None:
        """Encode the buckets that hold pieces of `job` now, full or not."""
        for length in [n for n, items in self.waiting.items() if any(item[0] is job for item in items)]:
            self.run(length)

    def run_all(self) -> None:
        for length in list(self.waiting):
            self.run(length)


def encode_utterances(
    model: VQVAE,
    utterances: Sequence[Utterance],
    batch_size: int = 16,
    chunk_seconds: float = 30.0,
    progress: Callable[[float], None] | None = None,
    f0: bool = False,
) -> Iterator[tuple[Utterance, np.ndarray | str, Contour | None]]:
    """Yield (utterance, codes [T // hop] int64, F0 contour or None) or (utterance, reason it was skipped, None), in
    input order. f0: also track each file's (F0 Hz, voiced) [T // f0_hop] on the whole prepared file
    (`VQVAE.f0_contour`; the model needs a speech path).

    Each file is prepared as `model.encode` prepares an array: mono, model rate, scaled by `model.input_gain` of the
    file's peak (`utt.peak` when the corpus index knows it, else a streaming `scan_audio`). Utterances are cut into
    pieces of up to chunk_seconds (+ context), which are encoded batch_size at a time (see _Buckets). Each kept frame
    sees the same samples and zero padding as in whole-file `model.encode`, so the units are the same up to float32
    rounding: the convolution kernels may sum in another order for another input shape (~1e-7 relative), which can
    only flip a frame whose two nearest codes are that close to a tie. For the same settings the output is a pure
    function of each file (shards, resumed runs, any input order). progress(seconds) gets the audio encoded.
    """
    hop, sr = model.hop, model.sample_rate
    chunk = max(1, round(chunk_seconds * sr / hop)) * hop
    context = math.ceil(model.encoder.receptive_field / hop) * hop
    buckets = _Buckets(model, batch_size, chunk + 2 * context, progress)
    queue: deque[_Job] = deque()

    def finished() -> Iterator[tuple[Utterance, np.ndarray | str, Contour | None]]:
        while queue and queue[0].done:
            job = queue.popleft()
            if job.error is not None:
                yield job.utt, job.error, None
            else:
                yield job.utt, np.concatenate(job.codes), job.contour

    for utt in utterances:
        job = _Job(utt, f0)
        queue.append(job)
        try:
            info = audio_info(utt.path)
            n = math.floor(info.frames * sr / info.sample_rate)
            pieces = plan_pieces(n, hop, chunk, context)
            if not pieces:
                raise AudioError(f"too short: {n} samples at {sr} Hz, less than one frame ({hop} samples)")
            gain = file_gain(utt.path, model.peak_normalize, utt.peak)
            job.codes = [None] * len(pieces)
            blocks = model_rate_blocks(utt.path, info, sr, max(1, round(chunk_seconds * info.sample_rate)))
            held: list[np.ndarray] = []
            if f0:
                blocks = _holding(blocks, held)
            for index, (p, wav) in enumerate(zip(pieces, read_pieces(blocks, pieces))):
                buckets.add(job, index, p, scale(torch.from_numpy(wav), gain))
                yield from finished()
            if f0:  # the last piece ends at the file's end, so `held` has every sample
                whole = scale(torch.from_numpy(np.concatenate(held)[:n]), gain)
                held.clear()
                job.contour = model.f0_contour(whole.numpy())
        except AudioError as err:
            job.error = str(err)
        if len(queue) > 4 * batch_size:  # bound what waits behind the oldest utterance
            buckets.run_waiting_for(queue[0])
        yield from finished()
    buckets.run_all()
    yield from finished()


def _holding(blocks: Iterator[np.ndarray], held: list[np.ndarray]) -> Iterator[np.ndarray]:
    """The block stream unchanged, each block also appended to `held` (the whole file, for the F0 tracker)."""
    for block in blocks:
        held.append(block)
        yield block


def f0_entry(model: VQVAE, out: str | os.PathLike) -> dict[str, Any]:
    """The sidecar's `f0` entry for the F0 file beside units file `out`: its name and the tracker's settings; a
    ValueError naming --f0 when the model has no speech path."""
    if model.speech is None:
        raise ValueError("--f0: this checkpoint has no speech path (F0 tracker and frame rate); train one with "
                         "audio-vqvae-train-speech vqvae=CHECKPOINT")
    return {"file": f0_path(out).name, "frame_rate": model.speech.frame_rate, "unit": "Hz", "tracker": TRACKER,
            "range": list(model.speech.f0_range)}


def units_sidecar(model: VQVAE, out: str | os.PathLike, dedup: bool, shard_index: int = 0,
                  num_shards: int = 1, f0: bool = False, chunk_seconds: float | None = None,
                  batch_size: int | None = None) -> UnitsSidecar:
    """The sidecar of a units file written by `model` (a model loaded with `VQVAE.from_checkpoint`) with the
    extraction settings that change its units (`model.peak_normalize`, chunk_seconds, batch_size)."""
    return UnitsSidecar(
        frame_rate=model.frame_rate,
        sample_rate=model.sample_rate,
        hop=model.hop,
        codebook_size=model.codebook_size,
        checkpoint=str(Path(model.checkpoint_path).resolve()),
        checkpoint_sha256=file_sha256(model.checkpoint_path),
        dedup=dedup,
        durations=durations_path(out).name if dedup else None,
        shard=shard_index,
        num_shards=num_shards,
        f0=f0_entry(model, out) if f0 else None,
        peak_normalize=model.peak_normalize,
        chunk_seconds=chunk_seconds,
        batch_size=batch_size,
    )


def write_units(
    model: VQVAE,
    utterances: Sequence[Utterance],
    out: str | os.PathLike,
    *,
    skipped: Sequence[tuple[str, str]] = (),
    dedup: bool = False,
    npy_dir: str | os.PathLike | None = None,
    shard_index: int = 0,
    num_shards: int = 1,
    overwrite: bool = False,
    batch_size: int = 16,
    chunk_seconds: float = 30.0,
    progress: Callable[[float], None] | None = None,
    f0: bool = False,
) -> Path:
    """Utterances (sorted by id, see `collect_utterances`) -> shard `shard_index` of them as a units file with its
    sidecar (`unitfile`), resuming what an earlier run of the same settings (`unitfile.RESUME_KEYS`: checkpoint,
    dedup, F0, peak normalisation, chunk_seconds, batch_size) finished; returns the file written
    (`shard_path(out, ...)`). Files that cannot be encoded are logged and listed, after `skipped`, in
    `<out>.skipped.tsv`. progress(seconds) gets the audio encoded. f0: also write each utterance's F0 contour
    to `<out>.f0` (the model needs a speech path)."""
    if batch_size < 1 or chunk_seconds <= 0:
        raise ValueError("batch_size must be >= 1 and chunk_seconds > 0")
    path = shard_path(out, shard_index, num_shards)
    writer = UnitWriter(path, units_sidecar(model, path, dedup, shard_index, num_shards, f0, chunk_seconds, batch_size),
                        None if npy_dir is None else Path(npy_dir), overwrite)
    done, skipped = writer.done(), list(skipped)
    todo = [u for u in shard(utterances, shard_index, num_shards) if u.id not in done]
    log.info("%s: %d utterances to encode (%d already done)", path, len(todo), len(done))
    for utt, result, contour in encode_utterances(model, todo, batch_size, chunk_seconds, progress, f0):
        if isinstance(result, str):
            log.warning("skipping %s: %s", utt.path, result)
            skipped.append((utt.path, result))
        else:
            writer.add(utt.id, result, None if contour is None else contour[0])
    writer.finish(skipped)
    if skipped:
        log.warning("%d files skipped, listed in %s", len(skipped), writer.skipped_path)
    return path


def extract_units(
    model: VQVAE,
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    manifest: str | None = None,
    data: str | None = None,
    overrides: Sequence[str] = (),
    **options: Any,
) -> Path:
    """Audio files and directories (and/or a manifest or a data config) -> a units file: `collect_utterances` then
    `write_units(model, ..., **options)`; returns the file written."""
    utterances, skipped = collect_utterances([str(i) for i in inputs], manifest, data, overrides)
    return write_units(model, utterances, out, skipped=skipped, **options)
