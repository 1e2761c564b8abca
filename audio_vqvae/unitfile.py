"""The units file format: reader, writer, versioned JSON sidecar, run-length dedup and its inverse.

Files written for `units.txt` (all atomically: a kill leaves the previous file or the complete new one):
  units.txt              `utt_id<TAB>u1 u2 ...` per utterance (the fairseq/textless format), in utterance-id order
  units.txt.durations    when deduplicated: `utt_id<TAB>d1 d2 ...`, same ids in the same order; units.txt then holds
                         run-length deduplicated units and `expand(units, durations)` is the frame-level sequence
  units.txt.f0           with F0 (`audio-vqvae-units --f0`): `utt_id<TAB>f0_1 f0_2 ...`, same ids in the same order,
                         F0 in Hz with one decimal (0 = unvoiced) at the sidecar's `f0.frame_rate`, frame-level
                         (not deduplicated): frames_per_unit per unit, up to frames_per_unit more at the end
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .f0 import check_contour_length
from .io import atomic_write, write_skip_report

FORMAT_NAME = "audio-vqvae-units"
FORMAT_VERSION = 2
"""1: units, durations; 2: adds the optional F0 file (the sidecar's `f0` entry). Version 1 sidecars read as 2 without
F0."""
RESUME_KEYS = ("checkpoint_sha256", "dedup", "codebook_size", "f0", "peak_normalize", "chunk_seconds", "batch_size")
"""Sidecar fields an existing output must share with a new run for that run to resume it (a version 1 output has
f0 null, so a run without --f0 resumes it). The input scaling, the piece length and the batch shape change units
(the batch size through the float kernels chosen per shape, see extract._Buckets), so an output written before they
were recorded (null) is not resumed."""

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
    f0: dict[str, Any] | None = None  # the F0 file: {file, frame_rate, unit "Hz", tracker, range [min, max] Hz}
    peak_normalize: float | None = None  # the input peak files were scaled to (None: not scaled)
    chunk_seconds: float | None = None  # the piece length long files were cut into
    batch_size: int | None = None  # pieces per encoder pass
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


def f0_path(units_path: str | os.PathLike) -> Path:
    return Path(f"{units_path}.f0")


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


def _f0_values(expected: Mapping[str, int], per_unit: int) -> Callable[[str, str], np.ndarray]:
    """A `read_table` parser of an F0 line (Hz >= 0, 0 = unvoiced) whose length must fit `expected[utt_id]` F0
    frames of its units (`f0.check_contour_length`) and whose id must be among them."""

    def parse(utt_id: str, text: str) -> np.ndarray:
        if utt_id not in expected:
            raise ValueError(f"utterance {utt_id!r} has no units")
        try:
            values = np.array([float(v) for v in text.split()], dtype=np.float32)
        except ValueError:
            raise ValueError(f"F0 values must be numbers, got {text[:60]!r}") from None
        if not np.isfinite(values).all() or (values < 0).any():
            raise ValueError(f"F0 of utterance {utt_id!r} must be finite and >= 0 (0 = unvoiced)")
        try:
            check_contour_length(len(values), expected[utt_id], per_unit)
        except ValueError as err:
            raise ValueError(f"utterance {utt_id!r}: {err}") from None
        return values

    return parse


def frames_per_unit(meta: UnitsSidecar) -> int:
    """F0 frames per unit of a sidecar with an `f0` entry; ValueError when they do not tile a unit."""
    per_unit = meta.hop * meta.f0["frame_rate"] / meta.sample_rate
    if per_unit != int(per_unit) or per_unit < 1:
        raise ValueError(f"F0 at {meta.f0['frame_rate']} frames per second does not tile units of {meta.hop} samples")
    return int(per_unit)


def load_f0(path: str | os.PathLike, units: Mapping[str, np.ndarray], frame_rate: float | None = None
            ) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """The F0 contours {utt_id: (F0 Hz float32 [T_f], voiced bool [T_f])} of a units file whose sidecar names an F0
    file, else None. units: the file's frame-level units (`load_units`); every utterance needs one F0 line of
    frames_per_unit * T_z frames (+ up to frames_per_unit); a line that disagrees names the file and line.
    frame_rate: the F0 frame rate the caller decodes at; another one in the sidecar is a ValueError naming it."""
    meta_path = sidecar_path(path)
    if not meta_path.exists():
        return None
    meta = UnitsSidecar.read(meta_path)
    if meta.f0 is None:
        return None
    if frame_rate is not None and float(meta.f0["frame_rate"]) != frame_rate:
        raise ValueError(f"{meta_path}: F0 at {meta.f0['frame_rate']:g} frames per second, but this model's speech "
                         f"path uses {frame_rate:g}")
    per_unit = frames_per_unit(meta)
    f0_file = Path(path).with_name(meta.f0["file"])
    table = read_table(f0_file, _f0_values({k: u.size * per_unit for k, u in units.items()}, per_unit), "F0 values")
    missing = [utt_id for utt_id in units if utt_id not in table]
    if missing:
        raise ValueError(f"{f0_file}: no F0 line for utterance {missing[0]!r} of {path} "
                         f"({len(table)} F0 lines for {len(units)} utterances)")
    return {utt_id: (f0, f0 > 0) for utt_id, f0 in table.items()}


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


def format_f0(f0: np.ndarray) -> str:
    """F0 in Hz -> `f0_1 f0_2 ...` with one decimal, `0` where unvoiced (<= 0)."""
    return " ".join(f"{v:.1f}" if v > 0 else "0" for v in np.asarray(f0, np.float32).tolist())


class UnitWriter:
    """Writes one units output, resumably: what an earlier run with the same `RESUME_KEYS` finished is kept, new
    utterances go to the journal as they finish, and `finish` writes the files in utterance-id order."""

    def __init__(self, out: str | os.PathLike, meta: UnitsSidecar, npy_dir: Path | None, overwrite: bool) -> None:
        self.out, self.meta, self.npy_dir, self.dedup = Path(out), meta, npy_dir, meta.dedup
        self.meta_path, self.journal_path = sidecar_path(out), Path(f"{out}.partial")
        self.skipped_path = Path(f"{out}.skipped.tsv")
        self.f0_file = None if meta.f0 is None else self.out.with_name(meta.f0["file"])
        self.columns = [self.out] + [durations_path(out)] * self.dedup + [self.f0_file] * (self.f0_file is not None)
        self.n_fields = 1 + len(self.columns)  # journal: id, units[, durations][, f0]
        outputs = [self.out, durations_path(out), f0_path(out), self.journal_path]
        if overwrite:
            for p in outputs:
                p.unlink(missing_ok=True)
        elif any(p.exists() for p in outputs):
            self._check_compatible()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        meta.write(self.meta_path)
        self.kept = set.intersection(*map(_ids, self.columns))
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

    def add(self, utt_id: str, codes: np.ndarray, f0: np.ndarray | None = None) -> None:
        """Record one utterance: its .npy (frame-level int64), then one complete journal line. f0: its contour in Hz
        (0 = unvoiced) when the sidecar has an F0 entry."""
        if (f0 is None) != (self.f0_file is None):
            raise ValueError(f"{self.out}: F0 {'missing' if f0 is None else 'given'} for utterance {utt_id!r} "
                             f"({'with' if self.f0_file else 'without'} an F0 file)")
        if self.npy_dir is not None:
            self._npy(utt_id).parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(self._npy(utt_id), "wb") as f:
                np.save(f, codes)
        columns = [*map(_join, run_length_encode(codes) if self.dedup else (codes,))]
        if f0 is not None:
            columns.append(format_f0(f0))
        with open(self.journal_path, "a", encoding="utf-8") as f:
            f.write("\t".join([utt_id, *columns]) + "\n")

    def finish(self, skipped: Sequence[tuple[str, str]]) -> None:
        """Merge kept lines and the journal into the output files (durations first), sorted by utterance id; drop
        the journal; list the skipped files."""
        journal = {fields[0]: fields for fields in _journal(self.journal_path, self.n_fields)}
        for column, path in reversed(list(enumerate(self.columns, start=1))):  # the units file last
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
