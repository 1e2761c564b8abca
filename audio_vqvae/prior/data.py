"""Units files as training data for the prior: speakers, a train/validation split, padded batches and crops."""
from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..batching import pad_batch
from ..unitfile import UnitsSidecar, load_units, read_speaker_map, sidecar_path


@dataclass(frozen=True)
class UnitSet:
    """Utterances of units with their speaker indices (-1 where unknown)."""

    ids: list[str]
    units: list[np.ndarray]
    speakers: list[int]

    def __len__(self) -> int:
        return len(self.ids)


def speaker_of(utt_id: str, speaker_map: Mapping[str, str], separator: str | None) -> str:
    """The map's speaker (a speaker map file, or the corpus's data config); for an id it lacks, the id up to its last
    `separator` (`cb_f_001` -> `cb_f`). An id without the separator is a ValueError rather than its own speaker
    (LibriSpeech ids `84-121123-0000` do not name their speaker that way)."""
    if utt_id in speaker_map:
        return speaker_map[utt_id]
    if not separator or separator not in utt_id:
        raise ValueError(f"utterance {utt_id!r}: no speaker in the speaker map and no {separator!r} in its id; give a "
                         "speaker map (units.speaker_map / --speaker-map) or the corpus's data config (data=NAME)")
    return utt_id.rsplit(separator, 1)[0]


def read_unit_set(path: str, speakers: Sequence[str], speaker_map: Mapping[str, str], separator: str) -> UnitSet:
    """A units file -> UnitSet (empty utterances dropped); speakers outside `speakers` get index -1."""
    units = {k: v for k, v in load_units(path, UnitsSidecar.read(sidecar_path(path)).codebook_size).items() if v.size}
    index = {s: i for i, s in enumerate(speakers)}
    return UnitSet(list(units), list(units.values()),
                   [index.get(speaker_of(u, speaker_map, separator), -1) for u in units])


def held_out(utt_id: str, fraction: float, seed: int) -> bool:
    """Whether an utterance falls in the validation fraction: a stable hash of (seed, id), order-independent."""
    return zlib.crc32(f"{seed}:{utt_id}".encode()) / 2**32 < fraction


def subset(data: UnitSet, keep: Sequence[bool]) -> UnitSet:
    idx = [i for i, k in enumerate(keep) if k]
    return UnitSet([data.ids[i] for i in idx], [data.units[i] for i in idx], [data.speakers[i] for i in idx])


def load_unit_sets(node, corpus_speakers: Mapping[str, str] | None = None
                   ) -> tuple[UnitSet, UnitSet, list[str], UnitsSidecar]:
    """The `units` config node -> (train, validation, speakers, sidecar of the training file). Validation is
    `units.val_path` when set, else the `units.val_fraction` of the training file picked by `held_out`. Speakers come
    from `units.speaker_map`, else `corpus_speakers` ({utt_id: speaker} of the data config), else `speaker_of`'s id
    rule; validation speakers the training file lacks get index -1 (marginalised when scored)."""
    sidecar = UnitsSidecar.read(sidecar_path(node.path))
    speaker_map = read_speaker_map(node.speaker_map) if node.speaker_map else dict(corpus_speakers or {})
    ids = list(load_units(node.path, sidecar.codebook_size))
    speakers = sorted({speaker_of(u, speaker_map, node.speaker_separator) for u in ids})
    data = read_unit_set(node.path, speakers, speaker_map, node.speaker_separator)
    if node.val_path:
        val_sidecar = UnitsSidecar.read(sidecar_path(node.val_path))
        if val_sidecar.codebook_size != sidecar.codebook_size:
            raise ValueError(f"units.val_path {node.val_path}: codebook size {val_sidecar.codebook_size}, training "
                             f"units have {sidecar.codebook_size}")
        return data, read_unit_set(node.val_path, speakers, speaker_map, node.speaker_separator), speakers, sidecar
    val = [held_out(u, node.val_fraction, node.split_seed) for u in data.ids]
    return subset(data, [not v for v in val]), subset(data, val), speakers, sidecar


def unit_batch(seqs: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit sequences -> (units [B, T_max] long, zero-padded by `batching.pad_batch`, lengths [B])."""
    return pad_batch([torch.from_numpy(np.asarray(s, dtype=np.int64)) for s in seqs])


def training_batch(data: UnitSet, batch_size: int, max_frames: int, generator: torch.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random batch: utterances drawn with replacement, each cropped to a random window of at most max_frames ->
    (units [B, T], lengths [B], speakers [B], previous [B]: the unit before each window, -1 where it starts the
    utterance (the prior's BOS)). A function of the generator only, so resume replays it exactly."""
    picks = torch.randint(len(data), (batch_size,), generator=generator).tolist()
    crops, previous = [], []
    for i in picks:
        u = data.units[i]
        start = int(torch.randint(max(1, len(u) - max_frames + 1), (1,), generator=generator))
        crops.append(u[start : start + max_frames])
        previous.append(int(u[start - 1]) if start else -1)
    units, lengths = unit_batch(crops)
    return units, lengths, torch.tensor([data.speakers[i] for i in picks]), torch.tensor(previous)
