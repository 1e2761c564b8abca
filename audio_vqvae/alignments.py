"""Phone alignments for evaluation: TSV or Praat TextGrid files -> segments -> one phone id per latent frame.

A TSV alignment holds one utterance (utt id = file stem), one segment per line: ``start_s<TAB>end_s<TAB>phone``,
in time order, not overlapping. Blank lines are skipped; there is no header. TextGrids are read with `praatio`.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from praatio import textgrid

SILENCE: frozenset[str] = frozenset({"sil", "SIL", "sp", "spn", "<sil>"})
"""Labels that `build_vocab` leaves out by default, so their frames get -1 (ignored), as in ZeroSpeech ABX."""

PHONE_TIERS = ("phones", "phone")
"""TextGrid tier names tried first (case-insensitive) when no tier is named; else the last interval tier is used."""


@dataclass(frozen=True)
class Segment:
    """One labelled interval of an utterance, in seconds."""

    start: float
    end: float
    phone: str


def _parse_tsv_line(path: Path, lineno: int, line: str) -> Segment:
    """One TSV line -> Segment, or a ValueError naming the file and line."""
    fields = line.rstrip("\r\n").split("\t")
    where = f"{path}:{lineno}"
    if len(fields) != 3:
        raise ValueError(f"{where}: expected 3 tab-separated fields (start_s, end_s, phone), got {len(fields)}")
    try:
        start, end = float(fields[0]), float(fields[1])
    except ValueError:
        raise ValueError(f"{where}: start/end {fields[0]!r}, {fields[1]!r} are not numbers") from None
    phone = fields[2].strip()
    if not phone:
        raise ValueError(f"{where}: empty phone label")
    if not 0.0 <= start < end:
        raise ValueError(f"{where}: need 0 <= start < end, got start={start} end={end}")
    return Segment(start, end, phone)


def read_tsv(path: str | Path) -> list[Segment]:
    """Segments of one TSV alignment file, checked to be in time order and not overlapping."""
    path = Path(path)
    segments: list[Segment] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        seg = _parse_tsv_line(path, lineno, line)
        if segments and seg.start < segments[-1].end:
            raise ValueError(f"{path}:{lineno}: segment starts at {seg.start} before the previous one ends "
                             f"({segments[-1].end}); segments must be in time order and not overlap")
        segments.append(seg)
    return segments


def _pick_tier(path: Path, tg: textgrid.Textgrid, tier: str | None) -> str:
    """Name of the tier to read: `tier` if given, else a 'phones'/'phone' tier, else the last interval tier."""
    interval_tiers = [name for name in tg.tierNames if isinstance(tg.getTier(name), textgrid.IntervalTier)]
    if tier is not None:
        if tier not in interval_tiers:
            raise ValueError(f"{path}: no interval tier named {tier!r} (interval tiers: {interval_tiers})")
        return tier
    by_lower = {name.lower(): name for name in interval_tiers}
    for name in PHONE_TIERS:
        if name in by_lower:
            return by_lower[name]
    if not interval_tiers:
        raise ValueError(f"{path}: TextGrid has no interval tier")
    return interval_tiers[-1]


def read_textgrid(path: str | Path, tier: str | None = None) -> list[Segment]:
    """Non-empty intervals of one TextGrid tier (see `_pick_tier`) as segments."""
    path = Path(path)
    try:
        tg = textgrid.openTextgrid(str(path), includeEmptyIntervals=False, reportingMode="error")
    except Exception as e:  # praatio raises assorted exception types on malformed files
        raise ValueError(f"{path}: not a readable TextGrid ({type(e).__name__}: {e})") from e
    entries = tg.getTier(_pick_tier(path, tg, tier)).entries
    return [Segment(float(e.start), float(e.end), e.label.strip()) for e in entries if e.label.strip()]


def _read(path: Path, tier: str | None) -> list[Segment]:
    """Dispatch on the file suffix: .tsv or .TextGrid (any case)."""
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        return read_tsv(path)
    if suffix == ".textgrid":
        return read_textgrid(path, tier)
    raise ValueError(f"{path}: unknown alignment format (expected .tsv or .TextGrid)")


def load_alignments(path: str | Path, tier: str | None = None) -> dict[str, list[Segment]]:
    """Alignments of one file or of every .tsv/.TextGrid file under a directory (recursive), keyed by file stem.

    `tier` names the TextGrid tier to read; by default 'phones'/'phone', else the last interval tier.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in (".tsv", ".textgrid"))
        if not files:
            raise ValueError(f"{path}: no .tsv or .TextGrid alignment files found")
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"{path}: no such alignment file or directory")
    alignments: dict[str, list[Segment]] = {}
    seen: dict[str, Path] = {}
    for file in files:
        if file.stem in seen:
            raise ValueError(f"{file}: utterance id {file.stem!r} also given by {seen[file.stem]}")
        seen[file.stem] = file
        alignments[file.stem] = _read(file, tier)
    return alignments


def build_vocab(alignments: Mapping[str, Iterable[Segment]], ignore: Iterable[str] = SILENCE) -> dict[str, int]:
    """Phone -> index over all utterances, sorted by name so the mapping is stable; `ignore`d labels get none."""
    ignored = set(ignore)
    phones = {seg.phone for segs in alignments.values() for seg in segs} - ignored
    return {phone: i for i, phone in enumerate(sorted(phones))}


def frame_labels(segments: Sequence[Segment], n_frames: int, frame_rate: float, vocab: Mapping[str, int]) -> np.ndarray:
    """Phone index of each frame, taken at the frame centre (i + 0.5) / frame_rate, int64 [n_frames].

    Frames whose centre lies in no segment, or in a segment whose phone is not in `vocab` (e.g. silence left
    out by `build_vocab`), get -1, which the metrics ignore. Segments must be in time order and not overlap.
    """
    if not segments:
        return np.full(n_frames, -1, dtype=np.int64)
    starts = np.array([s.start for s in segments], dtype=np.float64)
    ends = np.array([s.end for s in segments], dtype=np.float64)
    if np.any(starts[1:] < ends[:-1]):
        raise ValueError("frame_labels: segments must be in time order and not overlap")
    ids = np.array([vocab.get(s.phone, -1) for s in segments], dtype=np.int64)
    centres = (np.arange(n_frames) + 0.5) / frame_rate
    seg = np.searchsorted(starts, centres, side="right") - 1  # last segment starting at or before the centre
    inside = (seg >= 0) & (centres < ends[seg])
    return np.where(inside, ids[seg], -1)


def matched_alignments(alignments: Mapping[str, list[Segment]], utterances: Mapping[str, Any]) -> dict[str, list[Segment]]:
    """Segments per utterance id of `utterances` (id -> data.Utterance), found under the id or else its file's stem."""
    found = {u: alignments.get(u, alignments.get(Path(utt.path).stem)) for u, utt in utterances.items()}
    return {u: segments for u, segments in found.items() if segments is not None}
