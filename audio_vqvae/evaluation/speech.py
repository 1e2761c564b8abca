"""Speech-quality measures of decoded audio against its source: pitch agreement and an off-the-shelf recogniser.

Pitch: voicing recall, gross pitch error and median cents, computed on F0 tracks at one frame rate (any tracker).
Intelligibility: pocketsphinx 5's stock US-English model (acoustic model, dictionary and language model ship in its
wheel, so nothing is downloaded at run time), scored by corpus-level word error rate (jiwer).
"""
from __future__ import annotations

import re
import string
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
from pocketsphinx import Decoder

from ..audio import SILENT_PEAK, resample

GROSS_PITCH_ERROR = 0.2
"""A frame voiced in both tracks is a gross pitch error when its F0 is more than 20 % off the reference's: the
usual definition of GPE (e.g. Chu & Alwan 2009, "Reducing F0 frame error of F0 tracking algorithms under noisy
conditions with an unvoiced/voiced classification frontend", ICASSP)."""

MAX_FRAME_MISMATCH = 3
"""Two tracks of the same audio may differ by a few frames (padding, rounding); more means they are not aligned."""

RECOGNISER_RATE = 16000
"""pocketsphinx's en-us acoustic model expects 16 kHz mono 16-bit audio."""

_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")


def _track(f0: np.ndarray, voiced: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A track as (F0 float [T], voiced bool [T]); unvoiced frames may hold NaN or anything."""
    f0, voiced = np.asarray(f0, dtype=np.float64).ravel(), np.asarray(voiced).ravel().astype(bool)
    if f0.shape != voiced.shape:
        raise ValueError(f"{name}: F0 has {f0.size} frames but voicing has {voiced.size}")
    if np.any(voiced & ~(f0 > 0)):
        raise ValueError(f"{name}: a voiced frame has F0 <= 0 or NaN")
    return f0, voiced


def pitch_agreement(ref_f0: np.ndarray, ref_voiced: np.ndarray, out_f0: np.ndarray,
                    out_voiced: np.ndarray) -> dict[str, float | int | None]:
    """Agreement of an output's F0 track [T'] with the reference's [T] (same frame rate, cropped to the shorter).

    voiced_recall: share of the reference's voiced frames voiced in the output. voicing_agreement: share of all
    frames with the same voiced/unvoiced decision (1 - the voicing decision error; an output voiced everywhere has
    full recall but not this). On frames voiced in both: gpe (share more than GROSS_PITCH_ERROR off) and
    median_cents (median |1200 log2(out / ref)|). n_frames, n_agree, n_ref_voiced and n_both are the frame counts
    the ratios are over, for pooling (see `summarise`); a measure without frames is None.
    Raises ValueError when the lengths differ by more than MAX_FRAME_MISMATCH frames.
    """
    rf, rv = _track(ref_f0, ref_voiced, "reference")
    of, ov = _track(out_f0, out_voiced, "output")
    if abs(rf.size - of.size) > MAX_FRAME_MISMATCH:
        raise ValueError(f"F0 tracks of {rf.size} and {of.size} frames differ by more than {MAX_FRAME_MISMATCH}: "
                         "not the same utterance at the same frame rate")
    n = min(rf.size, of.size)
    rf, rv, of, ov = rf[:n], rv[:n], of[:n], ov[:n]
    both = rv & ov
    n_ref, n_both, n_agree = int(rv.sum()), int(both.sum()), int((rv == ov).sum())
    ratio = of[both] / rf[both]
    return {"voiced_recall": n_both / n_ref if n_ref else None,
            "voicing_agreement": n_agree / n if n else None,
            "gpe": float(np.mean(np.abs(ratio - 1.0) > GROSS_PITCH_ERROR)) if n_both else None,
            "median_cents": float(np.median(np.abs(1200.0 * np.log2(ratio)))) if n_both else None,
            "n_frames": n, "n_agree": n_agree, "n_ref_voiced": n_ref, "n_both": n_both}


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, float | int | None]:
    """Pool `pitch_agreement` rows of a set: voiced_recall, voicing_agreement and gpe over all frames (each row weighted by its
    frame counts, not a mean of per-utterance ratios, so short utterances do not count as much as long
    ones), median_cents as the frame-weighted mean of the rows' medians (the frames themselves are not kept)."""
    n_frames, n_agree = sum(r["n_frames"] for r in rows), sum(r["n_agree"] for r in rows)
    n_ref = sum(r["n_ref_voiced"] for r in rows)
    n_both = sum(r["n_both"] for r in rows)
    with_both = [r for r in rows if r["n_both"]]
    return {"n": len(rows), "n_frames": n_frames, "n_ref_voiced": n_ref, "n_both": n_both,
            "voiced_recall": n_both / n_ref if n_ref else None,
            "voicing_agreement": n_agree / n_frames if n_frames else None,
            "gpe": sum(r["gpe"] * r["n_both"] for r in with_both) / n_both if n_both else None,
            "median_cents": sum(r["median_cents"] * r["n_both"] for r in with_both) / n_both if n_both else None}


@lru_cache(maxsize=1)
def _decoder() -> Decoder:
    """pocketsphinx's default decoder (en-us acoustic model, CMU dictionary, en-us 3-gram LM from its wheel), built
    once per process: loading the model takes about a second."""
    return Decoder(loglevel="FATAL")


def to_pcm16(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono float audio [T] in [-1, 1] at sample_rate -> int16 [T'] at RECOGNISER_RATE (clipped, rounded)."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"recognise: expected mono audio [T], got shape {wav.shape}")
    if not np.all(np.isfinite(wav)):
        raise ValueError("recognise: audio holds NaN or infinite samples")
    wav = resample(wav, sample_rate, RECOGNISER_RATE)
    return np.round(np.clip(wav, -1.0, 1.0) * 32767.0).astype(np.int16)


def recognise(wav: np.ndarray, sample_rate: int) -> str:
    """The recogniser's best word sequence for one utterance (mono float [T] at sample_rate), normalised as by
    `normalise_text`; "" when it hears no words. Decodes the whole utterance in one pass (full_utt: cepstral mean
    normalisation over the utterance, so the result does not depend on earlier calls). Silent audio (peak below
    SILENT_PEAK) is "" without decoding: on digital zeros the model hallucinates a word."""
    pcm = to_pcm16(wav, sample_rate)
    if pcm.size == 0 or np.abs(pcm).max() < SILENT_PEAK * 32767:
        return ""
    decoder = _decoder()
    decoder.start_utt()
    decoder.process_raw(pcm.tobytes(), full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return normalise_text(hyp.hypstr) if hyp is not None else ""


def normalise_text(text: str) -> str:
    """Lower case, punctuation replaced by spaces, whitespace collapsed: "Hello, World!" -> "hello world"."""
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


def word_error_rate(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus-level word error rate of hypotheses against references (both normalised here): total substitutions,
    deletions and insertions over total reference words, not a mean of per-utterance rates. Can exceed 1."""
    if len(refs) != len(hyps):
        raise ValueError(f"word_error_rate: {len(refs)} references but {len(hyps)} hypotheses")
    refs, hyps = [normalise_text(r) for r in refs], [normalise_text(h) for h in hyps]
    if not refs or not any(refs):
        raise ValueError("word_error_rate: the references hold no words")
    return float(jiwer.process_words(refs, hyps).wer)



def intelligibility(refs: Sequence[str], natural: Sequence[str], decoded: Sequence[str]) -> dict[str, Any]:
    """Corpus WER of the recogniser's hypotheses on natural audio and on decodings of the same utterances, against
    the same references, and their ratio wer_decoded / wer_natural (the issue's target: at most 1.5; None when the
    natural WER is 0, where any error is an unbounded ratio)."""
    natural_wer, decoded_wer = word_error_rate(refs, natural), word_error_rate(refs, decoded)
    return {"n": len(refs), "n_words": sum(len(normalise_text(r).split()) for r in refs),
            "wer_natural": natural_wer, "wer_resynthesis": decoded_wer,
            "wer_ratio": decoded_wer / natural_wer if natural_wer > 0 else None}

def read_transcripts(path: str | Path) -> dict[str, str]:
    """utt_id -> sentence from a UTF-8 file of `utt_id<TAB>sentence` lines (blank lines skipped, as
    datasets/demo/transcripts.tsv); a ValueError naming the file and line for any other line or a repeated id."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read transcripts ({err})") from None
    out: dict[str, str] = {}
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        row = line.split("\t")
        if len(row) != 2 or not row[0].strip():
            raise ValueError(f"{path}:{i}: expected utt_id<TAB>sentence")
        if row[0] in out:
            raise ValueError(f"{path}:{i}: utterance {row[0]!r} is transcribed twice")
        out[row[0]] = row[1].strip()
    return out
