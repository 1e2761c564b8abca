"""Unit extraction: audio -> discrete units, and the units file format. CLI `audio-vqvae-units`.

    audio-vqvae-units -c ckpt.pt -o units.txt wavs/ extra.flac          # files and directories (recursive)
    audio-vqvae-units -c ckpt.pt -o units.txt --manifest list.tsv       # path<TAB>speaker[<TAB>duration_s]
    audio-vqvae-units -c ckpt.pt -o units.txt --data vctk data.root=/data/VCTK-Corpus-0.92 --dedup
    audio-vqvae-units ... --shard 2 --num-shards 8                      # writes units.2-of-8.txt (+ sidecars)

Files written for `-o units.txt` (all atomically: a kill leaves the previous file or the complete new one):
  units.txt              `utt_id<TAB>u1 u2 ...` per utterance (the fairseq/textless format), in utterance-id order
  units.txt.durations    with --dedup: `utt_id<TAB>d1 d2 ...`, same ids in the same order; units.txt then holds
                         run-length deduplicated units and `np.repeat(units, durations)` is the frame-level sequence
  units.txt.json         sidecar: frame rate (Hz), codebook size, sample rate, hop, checkpoint path + sha256, dedup
  units.txt.skipped.tsv  `path<TAB>reason` for each file that could not be encoded (this run)
  units.txt.partial      while running only: one complete line per finished utterance, merged into units.txt at the
                         end. A re-run keeps units.txt and units.txt.partial (a torn last line is dropped) and encodes
                         only the missing utterances; it refuses outputs made by another checkpoint or dedup setting.

Long files are encoded in pieces of --chunk-seconds (a multiple of the hop) with context >= the encoder's receptive
field on each side; only frames whose receptive field lies inside the piece (or at the true file edges, where the
piece's zero padding is the file's) are kept, so every kept frame is computed from the same samples and padding as in
whole-file `VQVAE.encode` (equal up to float32 rounding, see extract_units). Each file is read sequentially in blocks
of that size, so memory is bounded by batch size x piece length, whatever the file's length. For the same checkpoint,
--chunk-seconds and --batch-size the units of a file do not depend on the other files of the run, so shards and
resumed runs give exactly the units of one whole run.
Files at another rate are downmixed per block and resampled by one streaming soxr resampler per file, which gives
the same samples as resampling the whole file at once (audio.load_audio), so chunking stays exact for them too.
--peak-normalize auto (the default) scales each file to the peak the model was trained with (the checkpoint's
data.peak_normalize, if any), as training did.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from tqdm import tqdm

from .audio import (
    AUDIO_EXTENSIONS,
    AudioError,
    AudioInfo,
    audio_info,
    load_audio,
    resample_stream,
    scan_audio,
)
from .checkpoint import file_sha256
from .data import Utterance, audio_files, load_corpus, path_id, write_skip_report
from .device import resolve_device, run_app
from .io import atomic_write
from .metrics import run_length_encode
from .model import VQVAE

log = logging.getLogger(__name__)

FORMAT_NAME = "audio-vqvae-units"
FORMAT_VERSION = 1
CONFIG_DIR = Path(__file__).parent / "configs"
_OVERRIDE = re.compile(r"^data\.[\w.]+=")

# ---- the units format --------------------------------------------------------------------------------------------


def expand(units: np.ndarray, durations: np.ndarray) -> np.ndarray:
    """Inverse of run-length deduplication (`metrics.run_length_encode`): repeat each unit by its duration."""
    return np.repeat(units, durations)


def _parse_line(path: Path, lineno: int, line: str, high: int | None, what: str) -> tuple[str, np.ndarray]:
    """One `utt_id<TAB>ints` line -> (utt_id, values int64); ValueError naming file and line when malformed."""
    utt_id, tab, text = line.rstrip("\n").partition("\t")
    if not tab or not utt_id:
        raise ValueError(f"{path}:{lineno}: expected utt_id<TAB>{what} separated by spaces, got {line[:60]!r}")
    try:
        values = np.array([int(v) for v in text.split()], dtype=np.int64)
    except ValueError:
        raise ValueError(f"{path}:{lineno}: {what} must be integers, got {text[:60]!r}") from None
    low = 1 if what == "durations" else 0
    bad = values[(values < low) | (values >= (high if high is not None else np.iinfo(np.int64).max))]
    if bad.size:
        allowed = f"{low}..{high - 1}" if high is not None else f">= {low}"
        raise ValueError(f"{path}:{lineno}: {what[:-1]} {bad[0]} of utterance {utt_id!r} is out of range ({allowed})")
    return utt_id, values


def read_units(path: str | os.PathLike, codebook_size: int | None = None, what: str = "units") -> dict[str, np.ndarray]:
    """A units file (or, what="durations", a durations file) -> {utt_id: values} in file order; blank lines skipped.

    Every code must lie in 0..codebook_size-1 (when given); a malformed line, a value out of range or a repeated id
    raises a ValueError naming the file and line number.
    """
    path = Path(path)
    out: dict[str, np.ndarray] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            utt_id, values = _parse_line(path, lineno, line, codebook_size, what)
            if utt_id in out:
                raise ValueError(f"{path}:{lineno}: utterance {utt_id!r} appears twice")
            out[utt_id] = values
    return out


def durations_path(units_path: str | os.PathLike) -> Path:
    return Path(f"{units_path}.durations")


def load_units(path: str | os.PathLike, codebook_size: int | None = None) -> dict[str, np.ndarray]:
    """Frame-level units {utt_id: codes [T_z]} from a units file, expanded by `<path>.durations` when that exists."""
    units = read_units(path, codebook_size)
    dur_path = durations_path(path)
    if not dur_path.exists():
        return units
    durations = read_units(dur_path, what="durations")
    for utt_id, u in units.items():
        d = durations.get(utt_id)
        if d is None or d.size != u.size:
            got = "no line" if d is None else f"{d.size} durations for {u.size} units"
            raise ValueError(f"{dur_path}: utterance {utt_id!r} does not match {path} ({got})")
    return {utt_id: expand(u, durations[utt_id]) for utt_id, u in units.items()}


# ---- inputs: files, directories, manifests, data configs -> utterances --------------------------------------------


def load_data_config(spec: str, overrides: Sequence[str] = ()) -> DictConfig:
    """`--data`: a config name from configs/data (demo, vctk, ...) or a YAML file (a data node, or a run config with a
    `data:` node), plus `data.key=value` overrides -> the resolved data node."""
    try:
        if spec.endswith((".yaml", ".yml")):
            cfg = OmegaConf.load(spec)
            node = cfg.data if "data" in cfg else cfg
        else:
            with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
                node = compose("train", overrides=[f"data={spec}"]).data
        node = OmegaConf.create(OmegaConf.to_container(node, resolve=True))
        OmegaConf.set_struct(node, True)
        return OmegaConf.merge(node, OmegaConf.from_dotlist([o.removeprefix("data.") for o in overrides]))
    except (OmegaConfBaseException, HydraException, OSError) as err:
        names = ", ".join(sorted(p.stem for p in (CONFIG_DIR / "data").glob("*.yaml")))
        first = str(err).strip().splitlines()[0]
        raise ValueError(f"--data {spec}: {first} (config names: {names}, or a .yaml file)") from None


def _check_ids(utterances: Sequence[Utterance]) -> None:
    """Ids must be unique and free of tabs/newlines (they start a units line)."""
    seen: dict[str, str] = {}
    for u in utterances:
        if "\t" in u.id or "\n" in u.id:
            raise ValueError(f"{u.path}: utterance id {u.id!r} contains a tab or newline")
        if u.id in seen:
            raise ValueError(f"{seen[u.id]} and {u.path} both map to utterance id {u.id!r}")
        seen[u.id] = u.path


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
    """All inputs -> (utterances sorted by id, skipped files). --manifest is data=manifest with data.manifest set."""
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
    _check_ids(utts)
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
    """An utterance in flight: the codes of its pieces (None until encoded), or why it failed."""

    utt: Utterance
    codes: list[np.ndarray | None] = field(default_factory=list)
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.error is not None or (bool(self.codes) and all(c is not None for c in self.codes))


class _Buckets:
    """Pieces waiting to be encoded, grouped by padded length.

    Every forward pass has the shape [batch_size, 1, length] (zero rows fill a short batch), so a piece's units
    depend only on its samples, its bucket and the batch size: not on which other pieces share the pass. Float
    kernels are chosen per shape, so without this, shards or resumed runs could differ at near-tied frames.
    """

    def __init__(self, model: VQVAE, batch_size: int, limit: int, progress: Callable[[float], None] | None) -> None:
        self.model, self.batch_size, self.limit, self.progress = model, batch_size, limit, progress
        self.waiting: dict[int, list[tuple[_Job, int, Piece, np.ndarray]]] = {}

    def add(self, job: _Job, index: int, piece: Piece, wav: np.ndarray) -> None:
        length = padded_length(len(wav), self.model.hop, self.limit)
        self.waiting.setdefault(length, []).append((job, index, piece, wav))
        if len(self.waiting[length]) == self.batch_size:
            self.run(length)

    def run(self, length: int) -> None:
        """Encode one bucket; each piece's kept frames go to its job."""
        items = [item for item in self.waiting.pop(length) if item[0].error is None]
        if not items:
            return
        x = torch.zeros(self.batch_size, 1, length)
        lengths = torch.zeros(self.batch_size, dtype=torch.long)
        for row, (*_, wav) in enumerate(items):
            x[row, 0, : len(wav)] = torch.from_numpy(wav)
            lengths[row] = len(wav)
        device = self.model.device
        codes = self.model.quantizer.nearest(self.model.encode_latents(x.to(device), lengths.to(device))).cpu()
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


def extract_units(
    model: VQVAE,
    utterances: Sequence[Utterance],
    batch_size: int = 16,
    chunk_seconds: float = 30.0,
    peak_normalize: float | None = None,
    progress: Callable[[float], None] | None = None,
) -> Iterator[tuple[Utterance, np.ndarray | str]]:
    """Yield (utterance, codes [T // hop] int64) or (utterance, reason it was skipped), in input order.

    Utterances are cut into pieces of up to chunk_seconds (+ context), which are encoded batch_size at a time
    (see _Buckets). Each kept frame sees the same samples and zero padding as in whole-file `model.encode`, so
    the units are the same up to float32 rounding: the convolution kernels may sum in another order for another
    input shape (~1e-7 relative), which can only flip a frame whose two nearest codes are that close to a tie.
    For the same settings the output is a pure function of each file (shards, resumed runs, any input order).
    peak_normalize: scale each utterance so its whole-file peak is this (as training with data.peak_normalize
    does; the peak is found by decoding the file when not known). progress(seconds) gets the audio encoded.
    """
    hop, sr = model.hop, model.sample_rate
    chunk = max(1, round(chunk_seconds * sr / hop)) * hop
    context = math.ceil(model.encoder.receptive_field / hop) * hop
    buckets = _Buckets(model, batch_size, chunk + 2 * context, progress)
    queue: deque[_Job] = deque()

    def finished() -> Iterator[tuple[Utterance, np.ndarray | str]]:
        while queue and queue[0].done:
            job = queue.popleft()
            yield job.utt, job.error if job.error is not None else np.concatenate(job.codes)

    for utt in utterances:
        job = _Job(utt)
        queue.append(job)
        try:
            info = audio_info(utt.path)
            n = math.floor(info.frames * sr / info.sample_rate)
            pieces = plan_pieces(n, hop, chunk, context)
            if not pieces:
                raise AudioError(f"too short: {n} samples at {sr} Hz, less than one frame ({hop} samples)")
            gain = 1.0 if peak_normalize is None else peak_normalize / (utt.peak or scan_audio(utt.path).peak)
            job.codes = [None] * len(pieces)
            blocks = model_rate_blocks(utt.path, info, sr, max(1, round(chunk_seconds * info.sample_rate)))
            for index, (p, wav) in enumerate(zip(pieces, read_pieces(blocks, pieces))):
                buckets.add(job, index, p, wav * np.float32(gain) if gain != 1.0 else wav)
                yield from finished()
        except AudioError as err:
            job.error = str(err)
        if len(queue) > 4 * batch_size:  # bound what waits behind the oldest utterance
            buckets.run_waiting_for(queue[0])
        yield from finished()
    buckets.run_all()
    yield from finished()


# ---- output: resumable, atomic units files ----------------------------------------------------------------------


def sidecar(
    model: VQVAE, checkpoint: str, out: Path, dedup_units: bool, shard_index: int, num_shards: int
) -> dict[str, Any]:
    """What a units file needs to be read back: rates, codebook, checkpoint identity, dedup flag, format version."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "frame_rate": model.frame_rate,
        "sample_rate": model.sample_rate,
        "hop": model.hop,
        "codebook_size": model.codebook_size,
        "checkpoint": str(Path(checkpoint).resolve()),
        "checkpoint_sha256": file_sha256(checkpoint),
        "dedup": dedup_units,
        "durations": durations_path(out).name if dedup_units else None,
        "shard": shard_index,
        "num_shards": num_shards,
    }


def _ids(path: Path) -> set[str]:
    """Utterance ids of a units/durations file (empty if missing)."""
    if not path.exists():
        return set()
    with open(path, encoding="utf-8") as f:
        return {line.partition("\t")[0] for line in f if line.strip()}


def _journal(path: Path, n_fields: int) -> list[list[str]]:
    """The valid lines of a journal, split into `n_fields` tab-separated fields; the file is cut after the last one
    (a kill can leave a torn last line)."""
    if not path.exists():
        return []
    data, rows, end = path.read_bytes(), [], 0
    while (stop := data.find(b"\n", end)) >= 0:
        fields = data[end:stop].decode("utf-8", errors="replace").split("\t")
        if len(fields) != n_fields or not fields[0]:
            break
        rows.append(fields)
        end = stop + 1
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    return rows


def _join(values: np.ndarray) -> str:
    return " ".join(map(str, values.tolist()))


class UnitWriter:
    """Writes one units output; keeps what an earlier run of the same settings finished (see the module doc)."""

    def __init__(self, out: Path, meta: dict[str, Any], npy_dir: Path | None, overwrite: bool) -> None:
        self.out, self.meta, self.npy_dir, self.dedup = out, meta, npy_dir, meta["dedup"]
        self.meta_path, self.journal_path = Path(f"{out}.json"), Path(f"{out}.partial")
        self.skipped_path = Path(f"{out}.skipped.tsv")
        self.n_fields = 3 if self.dedup else 2  # journal: id, units[, durations]
        outputs = [out, durations_path(out), self.journal_path]
        if overwrite:
            for p in outputs:
                p.unlink(missing_ok=True)
        elif any(p.exists() for p in outputs):
            self._check_compatible()
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.meta_path) as f:
            json.dump(meta, f, indent=2)
        self.kept = _ids(out) & _ids(durations_path(out)) if self.dedup else _ids(out)
        self.journaled = {fields[0] for fields in _journal(self.journal_path, self.n_fields)}

    def _check_compatible(self) -> None:
        if not self.meta_path.exists():
            raise ValueError(f"{self.out}: exists without its sidecar {self.meta_path.name}, so it cannot be resumed; "
                             "pass --overwrite or choose another --out")
        old = json.loads(self.meta_path.read_text(encoding="utf-8"))
        for key in ("checkpoint_sha256", "dedup", "codebook_size", "format_version"):
            if old.get(key) != self.meta[key]:
                raise ValueError(f"{self.out}: exists and was written with {key}={old.get(key)!r}, not "
                                 f"{self.meta[key]!r}; pass --overwrite or choose another --out")

    def done(self) -> set[str]:
        """Ids finished by earlier runs (with their .npy when --npy-dir is set)."""
        return {i for i in self.kept | self.journaled if self.npy_dir is None or self._npy(i).exists()}

    def _npy(self, utt_id: str) -> Path:
        return self.npy_dir / f"{utt_id}.npy"

    def add(self, utt_id: str, codes: np.ndarray) -> None:
        """Record one utterance: its .npy (frame-level int64), then one complete journal line."""
        if self.npy_dir is not None:
            self._npy(utt_id).parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(self._npy(utt_id), "wb") as f:
                np.save(f, codes)
        columns = run_length_encode(codes) if self.dedup else (codes,)
        with open(self.journal_path, "a", encoding="utf-8") as f:
            f.write("\t".join([utt_id, *map(_join, columns)]) + "\n")

    def finish(self, skipped: Sequence[tuple[str, str]]) -> None:
        """Merge kept lines and the journal into the output files (durations first), drop the journal, list skips.

        Kept lines come first in their old order, then the journal's in the order they were encoded.
        """
        journal = _journal(self.journal_path, self.n_fields)
        for path, column in ([(durations_path(self.out), 2)] if self.dedup else []) + [(self.out, 1)]:
            written: set[str] = set()
            with atomic_write(path) as f:
                if path.exists():
                    with open(path, encoding="utf-8") as old:
                        for line in old:
                            utt_id = line.partition("\t")[0]
                            if utt_id in self.kept and utt_id not in written:
                                f.write(line)
                                written.add(utt_id)
                for fields in journal:
                    if fields[0] not in written:
                        f.write(f"{fields[0]}\t{fields[column]}\n")
                        written.add(fields[0])
        self.journal_path.unlink(missing_ok=True)
        self.skipped_path.unlink(missing_ok=True)
        write_skip_report(self.skipped_path, skipped)


# ---- CLI ---------------------------------------------------------------------------------------------------------


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared with audio-vqvae-generate: inputs, data config, batching and device."""
    parser.add_argument("inputs", nargs="*", help="audio files, directories (recursive), and data.key=value overrides")
    parser.add_argument("--manifest", help="TSV of path<TAB>speaker[<TAB>duration_s] (paths relative to the TSV)")
    parser.add_argument("--data", help="data config name (demo, vctk, librispeech, folder, manifest) or a YAML file")
    parser.add_argument("-c", "--checkpoint", required=True, help="model checkpoint (.pt)")
    parser.add_argument("--chunk-seconds", type=float, default=30.0, help="encode long files in pieces of this length")
    parser.add_argument("--peak-normalize", default="auto",
                        help="scale each file to this peak before encoding: a number, off, or auto (as in training)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")


def split_inputs(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """Positional arguments -> (paths, data.key=value overrides)."""
    overrides = [i for i in items if _OVERRIDE.match(i)]
    return [i for i in items if not _OVERRIDE.match(i)], overrides


def peak_target(spec: str, checkpoint_config: dict[str, Any]) -> float | None:
    """--peak-normalize: a number, off, or auto = the training data config's data.peak_normalize."""
    if spec == "auto":
        value = (checkpoint_config.get("data") or {}).get("peak_normalize")
        return None if value is None else float(value)
    if spec == "off":
        return None
    try:
        value = float(spec)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise ValueError(f"--peak-normalize {spec}: must be a peak in (0, 1], off or auto")
    return value


def load_model(checkpoint: str, device: str) -> tuple[VQVAE, dict[str, Any]]:
    """The model in eval mode on the resolved device, and the checkpoint's run config."""
    model = VQVAE.from_checkpoint(checkpoint, resolve_device(device))
    return model, model.config


def audio_progress(bar: tqdm) -> Callable[[float], None]:
    """A callback that advances `bar` by audio seconds and shows the rate in audio-hours per minute."""
    start, total = time.monotonic(), [0.0]

    def advance(seconds: float) -> None:
        total[0] += seconds
        bar.update(seconds)
        minutes = max(time.monotonic() - start, 1e-6) / 60
        bar.set_postfix_str(f"{total[0] / 3600 / minutes:.2f} audio-h/min", refresh=False)

    return advance


def run(args: argparse.Namespace) -> Path:
    """The units command; returns the units file written."""
    paths, overrides = split_inputs(args.inputs)
    utterances, skipped = collect_utterances(paths, args.manifest, args.data, overrides)
    model, config = load_model(args.checkpoint, args.device)
    out = shard_path(args.out, args.shard, args.num_shards)
    meta = sidecar(model, args.checkpoint, out, args.dedup, args.shard, args.num_shards)
    writer = UnitWriter(out, meta, Path(args.npy_dir) if args.npy_dir else None, args.overwrite)
    done = writer.done()
    todo = [u for u in shard(utterances, args.shard, args.num_shards) if u.id not in done]
    log.info("%s: %d utterances to encode (%d already done)", out, len(todo), len(done))
    total = round(sum(u.duration for u in todo), 2)
    with tqdm(total=total, unit="audio-s", unit_scale=True, dynamic_ncols=True, disable=None) as bar:
        for utt, result in extract_units(model, todo, args.batch_size, args.chunk_seconds,
                                         peak_target(args.peak_normalize, config), audio_progress(bar)):
            if isinstance(result, str):
                log.warning("skipping %s: %s", utt.path, result)
                skipped.append((utt.path, result))
            else:
                writer.add(utt.id, result)
    writer.finish(skipped)
    if skipped:
        log.warning("%d files skipped, listed in %s", len(skipped), writer.skipped_path)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audio-vqvae-units", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_input_arguments(parser)
    parser.add_argument("-o", "--out", required=True, help="units file (utt_id<TAB>u1 u2 ...)")
    parser.add_argument("--batch-size", type=int, default=16, help="pieces (utterances or chunks) per forward pass")
    parser.add_argument("--dedup", action="store_true", help="run-length deduplicate; durations go to <out>.durations")
    parser.add_argument("--npy-dir", help="also write <npy-dir>/<utt_id>.npy (frame-level units, int64)")
    parser.add_argument("--shard", type=int, default=0, help="which shard to do (0-based)")
    parser.add_argument("--num-shards", type=int, default=1, help="split the sorted utterances into this many blocks")
    parser.add_argument("--overwrite", action="store_true", help="start over instead of resuming an existing output")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Console entry point `audio-vqvae-units`."""
    args = build_parser().parse_args(argv)

    def body() -> Path:
        if args.batch_size < 1 or args.chunk_seconds <= 0:
            raise ValueError("--batch-size must be >= 1 and --chunk-seconds > 0")
        return run(args)

    print(run_app("audio-vqvae-units", body))


if __name__ == "__main__":
    main()
