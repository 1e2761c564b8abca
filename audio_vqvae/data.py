"""Corpora -> utterance lists (+ speaker map) -> random-segment training and fixed validation datasets.

A corpus is indexed without keeping audio: each file's header (and, with `scan: full`, its decoded content, one
file at a time) is checked once and the result cached by (size, mtime), so bad files are found up front and a
changed file is re-checked. Datasets hold only the utterance list and read just the frames they need.

torchaudio.datasets.VCTK_092 / LIBRISPEECH know these layouts, but they decode through torchaudio.load (which
needs torchcodec since torchaudio 2.9), give no durations and are in maintenance mode, so the layouts are walked
here and datasets/README.md gives the download URLs.
"""
from __future__ import annotations

import hashlib
import json
import logging
import operator
import os
import random
import re
import signal
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import Dataset
from tqdm import tqdm

from .audio import AUDIO_EXTENSIONS, AudioError, audio_info, load_model_input, scan_audio
from .io import atomic_write, write_skip_report

log = logging.getLogger(__name__)

SCANS = ("header", "full")
SHORT = ("pad", "skip")
INDEX_NAME = ".audio_vqvae_index.json"
INDEX_VERSION = 1
_ROOT_HINTS = {
    "vctk": "set data.root=/path/to/VCTK-Corpus-0.92",
    "librispeech": "set data.root=/path/to/LibriSpeech",
    "folder": "set data.root=/path/to/your/audio",
    "manifest": "set data.root to the directory the manifest's paths are relative to",
    "demo": "run from the audio-vqvae checkout (it holds datasets/demo) or set data.root=/path/to/datasets/demo",
}


@dataclass(frozen=True)
class Utterance:
    """One audio file of a corpus. `peak` (max |sample|) is known when the index decoded the file (scan: full)."""

    id: str
    path: str
    speaker: str
    duration: float  # seconds
    peak: float | None = None


@dataclass
class Corpus:
    """Usable utterances (sorted by id), speakers (sorted; list index = speaker id), skipped (path, reason)."""

    root: str
    utterances: list[Utterance]
    speakers: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _Candidate:
    """A file a layout lists, before it is checked. `duration` is set when a manifest gives it."""

    id: str
    path: Path
    speaker: str
    duration: float | None = None


# ---- small helpers -------------------------------------------------------------------------------------------


def _one_of(value: str, allowed: Sequence[str], key: str) -> str:
    if value not in allowed:
        raise ValueError(f"{key}: {value!r} is not one of {', '.join(allowed)}")
    return value


def path_id(rel: str) -> str:
    """Relative path -> utterance id: without the extension, directories joined by "_" (unique within a tree)."""
    return Path(rel).with_suffix("").as_posix().strip("/").replace("/", "_")


def manifest_utterance_id(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """The id of a manifest entry: its path relative to the manifest's root when it lies under it (`path_id`), else
    the file's stem; never the machine-specific part of an absolute path. Training and extraction both use it."""
    path = Path(os.path.normpath(path))
    try:
        return path_id(path.relative_to(root).as_posix())
    except ValueError:
        return path.stem


def check_ids(items: Iterable[Utterance]) -> None:
    """Ids must be unique and free of tabs/newlines (they start a units line); a ValueError names both files."""
    seen: dict[str, str] = {}
    for u in items:
        if "\t" in u.id or "\n" in u.id:
            raise ValueError(f"{u.path}: utterance id {u.id!r} contains a tab or newline")
        if u.id in seen:
            raise ValueError(f"{seen[u.id]} and {u.path} both map to utterance id {u.id!r}")
        seen[u.id] = u.path


def audio_files(directory: Path) -> list[Path]:
    """All audio files under directory (recursive, following symlinks, skipping hidden directories), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath, f) for f in filenames if Path(f).suffix.lower() in AUDIO_EXTENSIONS]
    return sorted(found)


def _manifest_path(cfg: DictConfig) -> Path:
    """data.manifest as an existing file, or a clear error."""
    if not cfg.manifest:
        raise ValueError("data.manifest is not set; set data.manifest=/path/to/list.tsv")
    manifest = Path(str(cfg.manifest)).expanduser().resolve()
    if not manifest.is_file():
        raise FileNotFoundError(f"data.manifest: {manifest} does not exist; set data.manifest=/path/to/list.tsv")
    return manifest


def _resolve_root(cfg: DictConfig) -> Path:
    """data.root as an absolute directory (relative paths are relative to the working directory), or a clear error.

    A manifest corpus without a root uses the manifest's directory.
    """
    hint = _ROOT_HINTS[cfg.name]
    root = cfg.root
    if root is None and cfg.name == "manifest":
        root = _manifest_path(cfg).parent
    if root is None:
        raise ValueError(f"data.root is not set; {hint}")
    path = Path(str(root)).expanduser().resolve()
    if not path.exists():
        raise FileNotFoundError(f"data.root: {path} does not exist; {hint}")
    if not path.is_dir():
        raise NotADirectoryError(f"data.root: {path} is not a directory; {hint}")
    return path


# ---- layouts: root + config -> candidate files (and files skipped while listing) --------------------------------

Listing = tuple[list[_Candidate], list[tuple[str, str]]]


def _list_vctk(root: Path, cfg: DictConfig) -> Listing:
    """VCTK-Corpus-0.92: wav48_silence_trimmed/<speaker>/<speaker>_<nnn>_<mic>.flac; id = <speaker>_<nnn>."""
    audio = root / "wav48_silence_trimmed"
    if not audio.is_dir():
        raise FileNotFoundError(
            f"data.root: {root} has no wav48_silence_trimmed/ (not VCTK-Corpus-0.92); {_ROOT_HINTS['vctk']}"
        )
    mic = _one_of(cfg.mic, ("mic1", "mic2"), "data.mic")
    suffix = f"_{mic}"
    return [
        _Candidate(p.stem[: -len(suffix)], p, p.parent.name)
        for p in sorted(audio.glob(f"*/*{suffix}.flac"))
    ], []


def _list_librispeech(root: Path, cfg: DictConfig) -> Listing:
    """LibriSpeech: <subset>/<speaker>/<chapter>/<speaker>-<chapter>-<nnnn>.flac; id = file stem."""
    candidates = []
    for subset in cfg.subsets:
        directory = root / subset
        if not directory.is_dir():
            have = sorted(d.name for d in root.iterdir() if d.is_dir())
            raise FileNotFoundError(f"data.subsets: {directory} does not exist (subsets under {root}: {have})")
        candidates += [_Candidate(p.stem, p, p.parent.parent.name) for p in sorted(directory.glob("*/*/*.flac"))]
    return candidates, []


def _speaker_rule(cfg: DictConfig) -> Callable[[str], str | None]:
    """Relative path -> speaker (None if the rule does not apply): data.speaker_regex if set, else data.speaker_level.

    speaker_regex is searched in the relative path (`/`-separated); its group `speaker`, or else group 1, is the
    speaker. speaker_level indexes the path's directories: 0 = the top directory under root, -1 = the file's own.
    """
    if cfg.speaker_regex:
        pattern = re.compile(cfg.speaker_regex)
        if pattern.groups < 1:
            raise ValueError(f"data.speaker_regex: {cfg.speaker_regex!r} needs a group, e.g. '^(p\\d+)/'")
        group = "speaker" if "speaker" in pattern.groupindex else 1

        def by_regex(rel: str) -> str | None:
            m = pattern.search(rel)
            return m.group(group) if m else None

        return by_regex
    level = int(cfg.speaker_level)

    def by_level(rel: str) -> str | None:
        dirs = rel.split("/")[:-1]
        return dirs[level] if -len(dirs) <= level < len(dirs) else None

    return by_level


def _list_folder(root: Path, cfg: DictConfig) -> Listing:
    """Any tree of audio files; speaker from a directory level or a regex; id = relative path joined by "_"."""
    speaker_of = _speaker_rule(cfg)
    key, value = ("speaker_regex", cfg.speaker_regex) if cfg.speaker_regex else ("speaker_level", cfg.speaker_level)
    candidates, skipped = [], []
    for path in audio_files(root):
        rel = path.relative_to(root).as_posix()
        speaker = speaker_of(rel)
        if speaker:
            candidates.append(_Candidate(path_id(rel), path, speaker))
        else:
            skipped.append((str(path), f"no speaker: data.{key}={value!r} does not match {rel}"))
    return candidates, skipped


def _list_manifest(root: Path, cfg: DictConfig) -> Listing:
    """A TSV `path<TAB>speaker[<TAB>duration_s]` per line (blank lines and #comments ignored), paths relative to
    root or absolute; ids by `manifest_utterance_id`."""
    manifest = _manifest_path(cfg)
    candidates = []
    for lineno, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        try:
            if len(fields) not in (2, 3) or not fields[0] or not fields[1]:
                raise ValueError
            duration = float(fields[2]) if len(fields) == 3 else None
        except ValueError:
            raise ValueError(f"{manifest}:{lineno}: expected path<TAB>speaker[<TAB>duration_s], got {line!r}") from None
        path = root / fields[0]
        candidates.append(_Candidate(manifest_utterance_id(path, root), path, fields[1], duration))
    return candidates, []


def _list_demo(root: Path, cfg: DictConfig) -> Listing:
    """The shipped demo: <speaker>/<utt_id>.flac (alignments/ holds no audio)."""
    return [_Candidate(p.stem, p, p.parent.name) for p in sorted(root.glob("*/*.flac"))], []


LAYOUTS: dict[str, Callable[[Path, DictConfig], Listing]] = {
    "vctk": _list_vctk,
    "librispeech": _list_librispeech,
    "folder": _list_folder,
    "manifest": _list_manifest,
    "demo": _list_demo,
}


# ---- the index: per-file check results, cached by (size, mtime) -------------------------------------------------


def _index_path(root: Path, cache: bool | str | None) -> Path | None:
    """Where the index of root lives: next to the data, or in a cache dir if root is read-only; None = no cache."""
    if cache is False or cache is None:
        return None
    if cache is True:
        if os.access(root, os.W_OK):
            return root / INDEX_NAME
        directory = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "audio-vqvae"
    else:
        directory = Path(str(cache)).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"index-{hashlib.sha1(str(root).encode()).hexdigest()[:16]}.json"


def _read_index(path: Path | None) -> dict[str, dict]:
    if path is None or not path.is_file():
        return {}
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        log.warning("ignoring unreadable corpus index %s: %s", path, err)
        return {}
    return index.get("files", {}) if index.get("version") == INDEX_VERSION else {}


def _check_file(path: Path, scan: str) -> dict:
    """One file's index entry: its stat, the scan level and either its AudioInfo fields or the error."""
    try:
        st = path.stat()
    except OSError as err:
        return {"size": -1, "mtime_ns": -1, "scan": scan, "error": f"unreadable: {err.strerror}"}
    entry = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "scan": scan, "error": None}
    try:
        info = scan_audio(path) if scan == "full" else audio_info(path)
    except AudioError as err:
        entry["error"] = str(err)
        return entry
    return entry | {"frames": info.frames, "sample_rate": info.sample_rate, "channels": info.channels,
                    "peak": info.peak}


def _is_current(entry: dict | None, path: Path, scan: str) -> bool:
    """A cached entry still holds if the file's size and mtime match and it was checked at least as deeply."""
    if entry is None:
        return False
    try:
        st = path.stat()
    except OSError:
        return False
    deep_enough = entry["scan"] == "full" or scan == "header" or entry["error"] is not None
    return entry["size"] == st.st_size and entry["mtime_ns"] == st.st_mtime_ns and deep_enough


def _index(root: Path, paths: list[Path], scan: str, cache: bool | str | None) -> dict[str, dict]:
    """Index entries of `paths` (keyed by str(path)): from the cache where current, else checked now and cached."""
    index_path = _index_path(root, cache)
    cached = _read_index(index_path)
    keys = {p: os.path.relpath(p, root) for p in paths}
    entries = {k: cached[k] for p, k in keys.items() if _is_current(cached.get(k), p, scan)}
    todo = [p for p, k in keys.items() if k not in entries]
    for p in tqdm(todo, desc=f"indexing {root}", unit="file", disable=None):
        entries[keys[p]] = _check_file(p, scan)
    if todo and index_path is not None:
        with atomic_write(index_path) as f:
            json.dump({"version": INDEX_VERSION, "files": cached | entries}, f)
        log.info("checked %d files (%s scan); index cached in %s", len(todo), scan, index_path)
    return {str(p): entries[k] for p, k in keys.items()}


# ---- corpus ------------------------------------------------------------------------------------------------------


def _log_conversions(entries: list[dict], sample_rate: int) -> None:
    """Log once how many usable files will be resampled / downmixed on load."""
    rates = sorted({e["sample_rate"] for e in entries if e["sample_rate"] != sample_rate})
    n_rate = sum(e["sample_rate"] != sample_rate for e in entries)
    n_multi = sum(e["channels"] > 1 for e in entries)
    if n_rate:
        log.info("%d files at %s Hz are resampled to %d Hz when read", n_rate, rates, sample_rate)
    if n_multi:
        log.info("%d files with more than one channel are downmixed to mono when read", n_multi)


def load_corpus(cfg: DictConfig) -> Corpus:
    """The `data` config node -> Corpus. Bad files are logged and listed in Corpus.skipped; none usable -> error."""
    _one_of(cfg.name, tuple(LAYOUTS), "data.name")
    scan = _one_of(cfg.scan, SCANS, "data.scan")
    root = _resolve_root(cfg)
    candidates, skipped = LAYOUTS[cfg.name](root, cfg)
    to_check = [c.path for c in candidates if c.duration is None or scan == "full"]
    entries = _index(root, to_check, scan, cfg.cache)
    utterances: list[Utterance] = []
    for c in candidates:
        entry = entries.get(str(c.path))
        if entry is not None and entry["error"]:
            skipped.append((str(c.path), entry["error"]))
            continue
        duration = c.duration if entry is None else entry["frames"] / entry["sample_rate"]
        utterances.append(Utterance(c.id, str(c.path), c.speaker, duration, None if entry is None else entry["peak"]))
    for path, reason in skipped:
        log.warning("skipping %s: %s", path, reason)
    if not utterances:
        raise ValueError(f"data.root: no usable audio in {root} ({cfg.name} layout): {len(candidates)} audio files "
                         f"found, {len(skipped)} skipped{' (see the log for why)' if skipped else ''}")
    check_ids(utterances)
    _log_conversions([e for e in entries.values() if not e["error"]], int(cfg.sample_rate))
    utts = sorted(utterances, key=operator.attrgetter("id"))
    return Corpus(str(root), utts, sorted({u.speaker for u in utts}), skipped)


def _held_out(speakers: list[str], spec: int | Sequence[str], rng: random.Random) -> set[str]:
    """data.held_out_speakers (names, or a count drawn with rng) -> a set of speakers, checked."""
    if isinstance(spec, int):
        if not 0 <= spec < len(speakers):
            raise ValueError(f"data.held_out_speakers: {spec} must be in [0, {len(speakers)}): the corpus has "
                             f"{len(speakers)} speakers")
        return set(rng.sample(speakers, spec))
    unknown = sorted(set(spec) - set(speakers))
    if unknown:
        raise ValueError(f"data.held_out_speakers: unknown speakers {unknown} (the corpus has e.g. {speakers[:5]})")
    if len(set(spec)) == len(speakers):
        raise ValueError("data.held_out_speakers: holds out every speaker; leave some for training")
    return set(spec)


@dataclass(frozen=True)
class Split:
    """A corpus split, each list sorted by id. `test`: held-out speakers' utterances (of held-out sentences only, when
    data.held_out_sentences holds some), so evaluation sees unseen speakers and, optionally, unseen sentences."""

    train: list[Utterance]
    val: list[Utterance]
    test: list[Utterance]


def sentence_of(pattern: str | None) -> Callable[[str], str]:
    """data.sentence_key (a regex with one group, searched in the utterance id) -> id -> sentence key; null: each id
    is its own sentence. The one definition of an utterance's sentence: the split's held-out sentences and the
    evaluation's sentence-grouped folds use it."""
    if pattern is None:
        return lambda utt_id: utt_id
    regex = re.compile(pattern)
    if regex.groups != 1:
        raise ValueError(f"data.sentence_key: {pattern!r} needs exactly one group, e.g. '_(\\d+)$'")

    def key(utt_id: str) -> str:
        m = regex.search(utt_id)
        if m is None:
            raise ValueError(f"data.sentence_key: {pattern!r} does not match utterance id {utt_id!r}")
        return m.group(1)

    return key


def _held_out_sentences(keys: list[str], spec: float | Sequence[str], rng: random.Random) -> set[str]:
    """data.held_out_sentences (a count, a fraction in (0, 1), or keys) -> a set of sentence keys drawn from `keys`."""
    if isinstance(spec, float):
        if not 0 < spec < 1:
            raise ValueError(f"data.held_out_sentences: {spec} must be a count, a fraction in (0, 1) or a list of keys")
        spec = round(spec * len(keys))
    if isinstance(spec, int) and not isinstance(spec, bool):
        if not 0 <= spec < len(keys):
            raise ValueError(f"data.held_out_sentences: {spec} must be in [0, {len(keys)}): the held-out speakers "
                             f"say {len(keys)} sentences")
        return set(rng.sample(keys, spec))
    return {str(k) for k in spec}


def split_corpus(corpus: Corpus, cfg: DictConfig, seed: int) -> Split:
    """Train / val / test utterances; the same for the same corpus, config and seed.

    Validation takes data.val_per_speaker utterances (an int, or a fraction in (0, 1)) of every training speaker,
    always leaving that speaker at least one training utterance. Held-out speakers stay in the speaker map.
    data.held_out_sentences (drawn from the sentences the held-out speakers say, or from all sentences when no
    speaker is held out; a sentence is data.sentence_key of the id) are removed from train and val, and then only
    the held-out speakers' utterances of those sentences form the test set.
    """
    rng = random.Random(seed)
    held = _held_out(corpus.speakers, cfg.held_out_speakers, rng)
    per_speaker = cfg.val_per_speaker
    is_count = isinstance(per_speaker, int) and not isinstance(per_speaker, bool) and per_speaker >= 0
    if not (is_count or isinstance(per_speaker, float) and 0 < per_speaker < 1):
        raise ValueError(f"data.val_per_speaker: {per_speaker!r} must be a count >= 0 or a fraction in (0, 1)")
    sentence = sentence_of(cfg.get("sentence_key"))
    pool = [u for u in corpus.utterances if u.speaker in held] or corpus.utterances
    sentences = _held_out_sentences(sorted({sentence(u.id) for u in pool}), cfg.get("held_out_sentences") or [], rng)
    by_speaker: dict[str, list[Utterance]] = {}
    for u in corpus.utterances:
        by_speaker.setdefault(u.speaker, []).append(u)
    train, val, test = [], [], []
    for speaker in corpus.speakers:
        utts = by_speaker[speaker]
        if speaker in held:
            test += [u for u in utts if not sentences or sentence(u.id) in sentences]
            continue
        utts = [u for u in utts if sentence(u.id) not in sentences] if sentences else list(utts)
        rng.shuffle(utts)
        n = per_speaker if isinstance(per_speaker, int) else round(per_speaker * len(utts))
        n = min(n, len(utts) - 1)
        val += utts[:n]
        train += utts[n:]
    by_id = operator.attrgetter("id")
    return Split(sorted(train, key=by_id), sorted(val, key=by_id), sorted(test, key=by_id))


def drop_too_short(utterances: Sequence[Utterance], sample_rate: int, hop: int) -> tuple[list[Utterance], list[tuple[str, str]]]:
    """(utterances of at least one latent frame, (path, reason) of the others): the rule the units CLI applies, so
    training never pads a file that holds no frame of its own."""
    kept, skipped = [], []
    for u in utterances:
        n = int(u.duration * sample_rate)
        if n < hop:
            skipped.append((u.path, f"too short: {n} samples at {sample_rate} Hz, less than one frame ({hop} samples)"))
        else:
            kept.append(u)
    return kept, skipped


# ---- skip report ---------------------------------------------------------------------------------------------------


# ---- datasets -----------------------------------------------------------------------------------------------------


def _check_peaks(utterances: Sequence[Utterance], peak_normalize: float | None) -> None:
    """peak_normalize must be null or a peak in (0, 1], and then every utterance's peak must be known."""
    if peak_normalize is None:
        return
    if isinstance(peak_normalize, bool) or not isinstance(peak_normalize, (int, float)) or not 0 < peak_normalize <= 1:
        raise ValueError(f"data.peak_normalize: {peak_normalize!r} must be a peak in (0, 1] or null (off)")
    if any(u.peak is None for u in utterances):
        raise ValueError("data.peak_normalize needs each file's peak, which only data.scan=full records; "
                         "set data.scan=full or data.peak_normalize=null")


class SegmentDataset(Dataset):
    """Random fixed-length training segments: item i -> (wav [1, segment_length] float32, speaker index long []).

    The segment's offset is a pure function of (seed, epoch, i), so an epoch is the same whatever the number of
    workers and a resumed run can replay it; `set_epoch` (shared with running workers) moves to new segments.
    An epoch is one segment per utterance (not duration-weighted). Utterances shorter than a segment are
    zero-padded at the end (short="pad") or left out (short="skip"). A file that fails to load is logged, appended
    to report_path and replaced by another utterance drawn from the same generator.
    """

    def __init__(
        self,
        utterances: Sequence[Utterance],
        speakers: Sequence[str],
        segment_length: int,
        sample_rate: int,
        short: str,
        peak_normalize: float | None,
        report_path: str | os.PathLike | None,
        seed: int,
    ) -> None:
        _one_of(short, SHORT, "data.short")
        _check_peaks(utterances, peak_normalize)
        n_short = sum(self._samples(u, sample_rate) < segment_length for u in utterances)
        if short == "skip":
            utterances = [u for u in utterances if self._samples(u, sample_rate) >= segment_length]
        if n_short:
            log.info("%d of the training utterances are shorter than data.segment_length=%d samples: %s",
                     n_short, segment_length, "skipped" if short == "skip" else "zero-padded")
        if not utterances:
            raise ValueError(f"data.segment_length={segment_length}: no training utterance is long enough "
                             "(lower it or set data.short=pad)")
        self.utterances = list(utterances)
        self.speaker_index = {s: i for i, s in enumerate(speakers)}
        self.segment_length = segment_length
        self.sample_rate = sample_rate
        self.peak_normalize = peak_normalize
        self.report_path = report_path
        self.seed = seed
        self._epoch = torch.zeros((), dtype=torch.long).share_memory_()
        self._bad: set[int] = set()  # per worker process: indices that failed to load

    @staticmethod
    def _samples(utt: Utterance, sample_rate: int) -> int:
        return int(utt.duration * sample_rate)

    def set_epoch(self, epoch: int) -> None:
        """Draw the segments of `epoch` from now on (also in workers already running)."""
        self._epoch.fill_(epoch)

    def __len__(self) -> int:
        return len(self.utterances)

    def _offset(self, utt: Utterance, rng: np.random.Generator) -> int:
        n = self._samples(utt, self.sample_rate)
        return int(rng.integers(0, n - self.segment_length + 1)) if n > self.segment_length else 0

    def _segment(self, utt: Utterance, start: int) -> torch.Tensor:
        """[segment_length]: the excerpt at start, zero-padded at the end if the utterance is shorter."""
        wav = load_model_input(utt.path, self.sample_rate, self.peak_normalize, utt.peak, start, self.segment_length)
        return torch.nn.functional.pad(wav, (0, self.segment_length - len(wav)))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(self._epoch), index])
        i = index
        while True:  # draws are the same whichever files this process already knows to be bad
            utt = self.utterances[i]
            start = self._offset(utt, rng)
            if i not in self._bad:
                try:
                    wav = self._segment(utt, start)
                    return wav.unsqueeze(0), torch.tensor(self.speaker_index[utt.speaker])
                except AudioError as err:
                    self._bad.add(i)
                    log.warning("skipping %s: %s", utt.path, err)
                    if self.report_path is not None:
                        write_skip_report(self.report_path, [(utt.path, str(err))])
            if len(self._bad) == len(self.utterances):
                raise RuntimeError(f"none of the {len(self.utterances)} training utterances can be read "
                                   f"(see the log or {self.report_path})")
            i = int(rng.integers(len(self.utterances)))


class ValidationDataset(Dataset):
    """Fixed validation items: i -> (wav [1, T] float32, speaker index long [], utterance id).

    Each utterance from its start, cropped to max_seconds (None = whole): identical across runs. Files that fail to
    load are found when the set is built (one at a time, nothing kept), logged, reported and left out.
    """

    def __init__(
        self,
        utterances: Sequence[Utterance],
        speakers: Sequence[str],
        sample_rate: int,
        max_seconds: float | None,
        peak_normalize: float | None,
        report_path: str | os.PathLike | None,
    ) -> None:
        _check_peaks(utterances, peak_normalize)
        self.speaker_index = {s: i for i, s in enumerate(speakers)}
        self.sample_rate = sample_rate
        self.max_length = None if max_seconds is None else int(max_seconds * sample_rate)
        self.peak_normalize = peak_normalize
        self.utterances, bad = [], []
        for utt in utterances:
            try:
                self._load(utt)
                self.utterances.append(utt)
            except AudioError as err:
                log.warning("skipping %s: %s", utt.path, err)
                bad.append((utt.path, str(err)))
        if bad and report_path is not None:
            write_skip_report(report_path, bad)

    def _load(self, utt: Utterance) -> torch.Tensor:
        return load_model_input(utt.path, self.sample_rate, self.peak_normalize, utt.peak, 0, self.max_length)

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        utt = self.utterances[index]
        return self._load(utt).unsqueeze(0), torch.tensor(self.speaker_index[utt.speaker]), utt.id


def collate_segments(batch: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Training items -> (wav [B, 1, segment_length], speaker [B])."""
    wavs, speakers = zip(*batch)
    return torch.stack(wavs), torch.stack(speakers)


def worker_init_fn(worker_id: int) -> None:
    """Seed `random` and numpy in each DataLoader worker from torch's per-worker seed (torch seeds itself), and ignore
    SIGTERM there: Slurm and torchrun signal the whole process group, and a worker that died of it would make the main
    process raise instead of writing last.pt (the main process stops the workers when it is done)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def evenly(items: Sequence[Any], n: int) -> list[Any]:
    """At most n items, evenly spaced (all of them when there are n or fewer)."""
    return list(items) if len(items) <= n else [items[i] for i in np.linspace(0, len(items) - 1, n).astype(int)]


def load_wavs(utterances: Sequence[Utterance], sample_rate: int, max_seconds: float | None,
              peak_normalize: float | None) -> dict[str, np.ndarray]:
    """utt id -> the model's input [T] (`audio.load_model_input`, as training and validation read a file), cropped to
    its first max_seconds. Pass the model's `peak_normalize` (the checkpoint's) to get its input. Unreadable files
    are logged and left out."""
    frames = None if max_seconds is None else int(max_seconds * sample_rate)
    wavs = {}
    for u in utterances:
        try:
            wavs[u.id] = load_model_input(u.path, sample_rate, peak_normalize, u.peak, 0, frames).numpy()
        except AudioError as err:
            log.warning("skipping %s: %s", u.path, err)
    return wavs
