"""What is scored and how much: evaluation options, the scored set (a corpus split or plain files) with the
training split its baseline and probes are fitted on, and the speakers the decoder knows."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError

from ..config import load_data_config
from ..data import Utterance, load_corpus, split_corpus
from ..extract import collect_utterances
from ..model import VQVAE
from .speech import read_transcripts

log = logging.getLogger("audio_vqvae.evaluate")

SPLITS = ("auto", "test", "val", "train", "all")
"""Scored split: test = held-out speakers (x held-out sentences where configured); auto = test if any, else val."""
MIN_SAMPLES = 1024  # the log-mel distance's FFT size: shorter audio cannot be compared
MAX_FIT_UTTERANCES = 400
"""Training utterances the baseline and the speaker probe are fitted on at most (evenly spaced by id)."""


@dataclass
class EvalOptions:
    """How much to evaluate, and the seeds. Defaults keep the demo with the `small` model to 1.5-3 minutes on 2 busy CPU cores."""

    max_seconds: float | None = None  # crop every scored utterance to its first S seconds
    n_resynth: int = 2  # training-speaker utterances resynthesised with their own speaker (the WaveNet is slow)
    n_convert: int = 2  # scored utterances converted to a training speaker
    resynth_seconds: float | None = 1.0  # length of each resynthesised / converted excerpt; None or 0: whole
    temperature: float = 1.0
    decoder: str = "auto"  # auto (the speech path when the checkpoint has one) | source_filter | wavenet
    f0: str = "mapped"  # conversions' F0 with the speech path: mapped | source | predicted (self: its own contour)
    abx_triplets: int = 5000
    field_abx: bool = False  # also the field's ABX (zerospeech-libriabx2, optional; minutes per unit inventory)
    posterior_positions: int = 4  # each scores all K codes with the decoder: the slowest part of the evaluation
    posterior_chunk: int = 64
    convert_to: str | None = None  # conversion target; default: training speakers in turn
    seed: int = 0


# ---- the data -----------------------------------------------------------------------------------------------------


@dataclass
class EvalSet:
    """Utterances to score, where they came from, and the training split used for fitting (empty for plain files)."""

    utterances: list[Utterance]
    description: str
    root: Path | None  # where `alignments/` is looked for by default
    train: list[Utterance] = field(default_factory=list)  # fits the baseline and the speaker probe
    val: list[Utterance] = field(default_factory=list)  # training speakers' held-out sentences: self-resynthesis
    split: str | None = None  # train / val / test / all of a corpus; None for plain files
    transcripts: dict[str, str] = field(default_factory=dict)  # utt id -> sentence (`corpus_transcripts`): WER
    corpus: str | None = None  # the corpus by its config name and root ("demo_heldout at datasets/demo_heldout")
    sentence_key: str | None = None  # its data.sentence_key (`data.sentence_of`): groups the leakage probe's folds


def data_config(ckpt_config: dict[str, Any], spec: str | None, overrides: Sequence[str]) -> DictConfig:
    """The `data` node to evaluate on with `data.key=value` overrides: --data's (a config name or YAML file, read as
    audio-vqvae-units reads it), else the checkpoint's own resolved data config. Unknown keys are an error."""
    bad = [o for o in overrides if not o.startswith("data.") or "=" not in o]
    if bad:
        raise ValueError(f"overrides must look like data.key=value, got {bad}")
    if spec is not None:
        return load_data_config(spec, overrides)
    if not ckpt_config.get("data"):
        raise ValueError("the checkpoint stores no data config; pass --data NAME or --files PATH ...")
    node = OmegaConf.create(ckpt_config["data"])
    OmegaConf.set_struct(node, True)
    try:
        return OmegaConf.merge(node, OmegaConf.from_dotlist([o.removeprefix("data.") for o in overrides]))
    except ConfigKeyError as err:
        raise ValueError(f"unknown data config key data.{err.key} (the checkpoint's data config has: "
                         f"{', '.join(sorted(map(str, node)))})") from None


def corpus_set(data: DictConfig, split: str, seed: int, foreign: bool = False, name: str | None = None) -> EvalSet:
    """The EvalSet of a corpus split, as the trainer split it (same config and seed): train, val, test or all.
    `auto`: the test split if the config holds data out, else all of a `foreign` corpus (one the model was not
    trained on), else validation. `name`: the config's name for the report (--data's; default data.name, the
    layout, which a config like demo_heldout inherits)."""
    corpus = load_corpus(data)
    parts = split_corpus(corpus, data, seed)
    if split == "auto":
        split = "test" if parts.test else "all" if foreign else "val"
    scored = corpus.utterances if split == "all" else getattr(parts, split)
    if not scored:
        raise ValueError(f"the {split} split of {corpus.root} ({data.name}) is empty; pick another --split")
    where = f"{Path(name).stem if name else data.name} at {corpus.root}"
    return EvalSet(scored, f"{where} ({split} split{split_detail(data, split, scored)})", Path(corpus.root),
                   parts.train, parts.val, split, corpus_transcripts(data, Path(corpus.root)), where,
                   data.get("sentence_key"))


TRANSCRIPTS = "transcripts.tsv"
"""A corpus's transcripts file (utt_id<TAB>sentence) looked for in its root when data.transcripts is null."""


def corpus_transcripts(data: DictConfig, root: Path) -> dict[str, str]:
    """utt id -> sentence for the recogniser's WER: the file data.transcripts names (relative to the corpus root;
    missing: an error), else <root>/transcripts.tsv when there is one (null, or configs saved before the key), else
    none."""
    spec = data.get("transcripts")
    path = root / (spec or TRANSCRIPTS)
    if not spec and not path.is_file():
        return {}
    if not path.is_file():
        raise ValueError(f"data.transcripts: {path} does not exist")
    return read_transcripts(path)


def same_corpus(data: DictConfig, own: Any) -> bool:
    """Whether `data` names the corpus the checkpoint was trained on (`own`, its data config): the same layout and
    the same root (and manifest) once resolved, so a relative and an absolute spelling of one path agree."""
    def where(node: Any, key: str) -> Path | None:
        value = node.get(key)
        return None if value is None else Path(str(value)).expanduser().resolve()

    return data.get("name") == own.get("name") and all(where(data, k) == where(own, k) for k in ("root", "manifest"))


def with_training_reference(set_: EvalSet, reference: EvalSet) -> EvalSet:
    """`set_` scored, with the baseline and speaker probe fitted on (and self-resynthesis drawn from) the training
    and validation splits of `reference`, the checkpoint's own training corpus: speech the model was trained on, so
    that a held-out corpus (or plain files) is compared against a baseline fitted without it."""
    return replace(set_, train=reference.train, val=reference.val,
                   transcripts={**reference.transcripts, **set_.transcripts},
                   description=f"{set_.description}; baseline and probes fitted on the training split of "
                               f"{reference.corpus} ({len(reference.train)} utterances)")


def split_detail(data: DictConfig, split: str, scored: Sequence[Utterance]) -> str:
    """What a split holds, for the report: the held-out speakers and sentences of `test`, the validation rule of
    `val`."""
    if split == "test":
        sentences = data.get("held_out_sentences") or None
        speakers = ", ".join(sorted({u.speaker for u in scored}))
        return f": held-out speakers {speakers}" + (f" x held-out sentences (data.held_out_sentences={sentences})" if sentences else "")
    if split == "val":
        return f": data.val_per_speaker={data.val_per_speaker} utterances of each training speaker"
    if split == "all":
        return ": every utterance of the corpus"
    return ""


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



def trained_speakers(model: VQVAE, train: Sequence[Utterance]) -> list[str]:
    """Speakers whose embedding rows were trained: those of the training split, else (no split known) all."""
    in_train = {u.speaker for u in train}
    return [s for s in model.speakers if s in in_train] if in_train else list(model.speakers)
