"""The units file format: reader, writer, versioned JSON sidecar, run-length dedup and its inverse.

Files written for `units.txt` (all atomically: a kill leaves the previous file or the complete new one):
  units.txt              `utt_id<TAB>u1 u2 ...` per utterance (the fairseq/textless format), in utterance-id order
  units.txt.durations    when deduplicated: `utt_id<TAB>d1 d2 ...`, same ids in the same order; units.txt then holds
                         run-length deduplicated units and `expand(units, durations)` is the frame-level sequence
  units.txt.json         the sidecar (`UnitsSidecar`): frame rate, codebook size, checkpoint identity, dedup, ...
  units.txt.skipped.tsv  `path<TAB>reason` for each file that could not be encoded
  units.txt.partial      while running only: one complete line per finished utterance (the journal), merged into
                         units.txt by `UnitWriter.finish`; a torn last line (a kill) is dropped on resume.
See docs/formats.md.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from .io import atomic_write, write_skip_report

FORMAT_NAME = "audio-vqvae-units"
FORMAT_VERSION = 1
RESUME_KEYS = ("checkpoint_sha256", "dedup", "codebook_size", "format_version")
"""Sidecar fields an existing output must share with a new run for that run to resume it."""

V = TypeVar("V")


@dataclass(frozen=True)
class UnitsSidecar:
    """What a units file needs to be read back: rates, codebook, checkpoint identity, dedup flag, format version."""

    frame_rate: float
    sample_rate: int
    hop: int
    codebook_size: int
    checkpoint: str
    checkpoint_sha256: str
    dedup: bool
    durations: str | None  # the durations file's name (next to the units file) when dedup
    shard: int = 0
    num_shards: int = 1
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION

    def write(self, path: str | os.PathLike) -> None:
        with atomic_write(path) as f:
            json.dump(dataclasses.asdict(self), f, indent=2)

    @classmethod
    def read(cls, path: str | os.PathLike) -> UnitsSidecar:
        """Load a sidecar; a missing field or another format is a ValueError naming the file."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("format") != FORMAT_NAME:
            raise ValueError(f"{path}: not a {FORMAT_NAME} sidecar (format={data.get('format')!r})")
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in names})
        except TypeError as err:
            raise ValueError(f"{path}: {err}") from None


def sidecar_path(units_path: str | os.PathLike) -> Path:
    return Path(f"{units_path}.json")


def durations_path(units_path: str | os.PathLike) -> Path:
    return Path(f"{units_path}.durations")


# ---- dedup ------------------------------------------------------------------------------------------------------


def run_length_encode(seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[T] -> (values [N], durations [N]) of its runs of equal symbols, `expand(values, durations) == seq`:
    [1, 1, 2, 2, 1] -> ([1, 2, 1], [2, 2, 1])."""
    if seq.size == 0:
        return seq, np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, seq[1:] != seq[:-1]])
    return seq[starts], np.diff(np.r_[starts, seq.size])


def expand(units: np.ndarray, durations: np.ndarray) -> np.ndarray:
    """Inverse of `run_length_encode`: repeat each unit by its duration (in frames)."""
    return np.repeat(units, durations)


# ---- reading ----------------------------------------------------------------------------------------------------


def read_table(path: str | os.PathLike, parse: Callable[[str, str], V], what: str) -> dict[str, V]:
    """A TSV of `utt_id<TAB>value` lines -> {utt_id: parse(utt_id, value)} in file order. Blank lines and #comments
    are skipped; a line without a tab, a repeated id or a ValueError from parse names the file and line."""
    path = Path(path)
    out: dict[str, V] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip() or line.startswith("#"):
                continue
            utt_id, tab, text = line.rstrip("\n").partition("\t")
            if not tab or not utt_id:
                raise ValueError(f"{path}:{lineno}: expected utt_id<TAB>{what}, got {line.rstrip()[:60]!r}")
            if utt_id in out:
                raise ValueError(f"{path}:{lineno}: utterance {utt_id!r} appears twice")
            try:
                out[utt_id] = parse(utt_id, text)
            except ValueError as err:
                raise ValueError(f"{path}:{lineno}: {err}") from None
    return out


def _integers(low: int, high: int | None, what: str) -> Callable[[str, str], np.ndarray]:
    """A `read_table` parser of space-separated integers in low..high-1 (no upper bound when high is None)."""

    def parse(utt_id: str, text: str) -> np.ndarray:
        try:
            values = np.array([int(v) for v in text.split()], dtype=np.int64)
        except ValueError:
            raise ValueError(f"{what} must be integers, got {text[:60]!r}") from None
        bad = values[(values < low) | (values >= (high if high is not None else np.iinfo(np.int64).max))]
        if bad.size:
            allowed = f"{low}..{high - 1}" if high is not None else f">= {low}"
            raise ValueError(f"{what[:-1]} {bad[0]} of utterance {utt_id!r} is out of range ({allowed})")
        return values

    return parse


def read_units(path: str | os.PathLike, codebook_size: int | None = None) -> dict[str, np.ndarray]:
    """A units file as written -> {utt_id: units int64} in file order (deduplicated ones stay deduplicated).
    Every code must lie in 0..codebook_size-1 (when given)."""
    return read_table(path, _integers(0, codebook_size, "units"), "units separated by spaces")


def read_durations(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A durations file -> {utt_id: durations in frames (>= 1) int64}."""
    return read_table(path, _integers(1, None, "durations"), "durations separated by spaces")


def load_units(path: str | os.PathLike, codebook_size: int | None = None) -> dict[str, np.ndarray]:
    """Frame-level units {utt_id: codes [T_z]} from a units file, expanded by `<path>.durations` when that exists."""
    units = read_units(path, codebook_size)
    dur_path = durations_path(path)
    if not dur_path.exists():
        return units
    durations = read_durations(dur_path)
    for utt_id, u in units.items():
        d = durations.get(utt_id)
        if d is None or d.size != u.size:
            got = "no line" if d is None else f"{d.size} durations for {u.size} units"
            raise ValueError(f"{dur_path}: utterance {utt_id!r} does not match {path} ({got})")
    return {utt_id: expand(u, durations[utt_id]) for utt_id, u in units.items()}


def read_speaker_map(path: str | os.PathLike) -> dict[str, str]:
    """TSV `utt_id<TAB>speaker` per line (blank lines and #comments ignored) -> {utt_id: speaker}."""

    def parse(utt_id: str, text: str) -> str:
        if "\t" in text or not text.strip():
            raise ValueError(f"expected utt_id<TAB>speaker, got {utt_id + chr(9) + text[:60]!r}")
        return text.strip()

    return read_table(path, parse, "speaker")


def write_speaker_map(path: str | os.PathLike, speakers: dict[str, str]) -> None:
    """{utt_id: speaker} -> the TSV `read_speaker_map` reads, written atomically."""
    with atomic_write(path) as f:
        f.writelines(f"{utt_id}\t{speaker}\n" for utt_id, speaker in speakers.items())


# ---- writing ----------------------------------------------------------------------------------------------------


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
    """Writes one units output, resumably: what an earlier run with the same `RESUME_KEYS` finished is kept, new
    utterances go to the journal as they finish, and `finish` writes the files in utterance-id order."""

    def __init__(self, out: str | os.PathLike, meta: UnitsSidecar, npy_dir: Path | None, overwrite: bool) -> None:
        self.out, self.meta, self.npy_dir, self.dedup = Path(out), meta, npy_dir, meta.dedup
        self.meta_path, self.journal_path = sidecar_path(out), Path(f"{out}.partial")
        self.skipped_path = Path(f"{out}.skipped.tsv")
        self.n_fields = 3 if self.dedup else 2  # journal: id, units[, durations]
        outputs = [self.out, durations_path(out), self.journal_path]
        if overwrite:
            for p in outputs:
                p.unlink(missing_ok=True)
        elif any(p.exists() for p in outputs):
            self._check_compatible()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        meta.write(self.meta_path)
        self.kept = _ids(self.out) & _ids(durations_path(out)) if self.dedup else _ids(self.out)
        self.journaled = {fields[0] for fields in _journal(self.journal_path, self.n_fields)}

    def _check_compatible(self) -> None:
        if not self.meta_path.exists():
            raise ValueError(f"{self.out}: exists without its sidecar {self.meta_path.name}, so it cannot be resumed; "
                             "pass --overwrite or choose another --out")
        old = json.loads(self.meta_path.read_text(encoding="utf-8"))
        for key in RESUME_KEYS:
            if old.get(key) != getattr(self.meta, key):
                raise ValueError(f"{self.out}: exists and was written with {key}={old.get(key)!r}, not "
                                 f"{getattr(self.meta, key)!r}; pass --overwrite or choose another --out")

    def done(self) -> set[str]:
        """Ids finished by earlier runs (with their .npy when npy_dir is set)."""
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
        """Merge kept lines and the journal into the output files (durations first), sorted by utterance id; drop
        the journal; list the skipped files."""
        journal = {fields[0]: fields for fields in _journal(self.journal_path, self.n_fields)}
        for path, column in ([(durations_path(self.out), 2)] if self.dedup else []) + [(self.out, 1)]:
            lines: dict[str, str] = {}
            if path.exists():
                with open(path, encoding="utf-8") as old:
                    for line in old:
                        utt_id = line.partition("\t")[0]
                        if utt_id in self.kept:
                            lines.setdefault(utt_id, line)
            for utt_id, fields in journal.items():
                lines.setdefault(utt_id, f"{utt_id}\t{fields[column]}\n")
            with atomic_write(path) as f:
                f.writelines(lines[utt_id] for utt_id in sorted(lines))
        self.journal_path.unlink(missing_ok=True)
        self.skipped_path.unlink(missing_ok=True)
        write_skip_report(self.skipped_path, skipped)
