"""Speaker-identity probes (scikit-learn classifiers): how much speaker identity a unit inventory leaks, and whether
audio (natural, resynthesised or converted) is recognised as its speaker.

Both are standardised multinomial logistic regressions, fixed beforehand: the question is whether speaker identity
is linearly readable, not how well a tuned classifier can do.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from .baselines import mfcc

LEAKAGE_FOLDS = 5
"""Cross-validation folds of the leakage classifier (fewer when there are fewer sentences or utterances)."""
MAX_ITER = 2000
"""Logistic-regression iterations: enough for lbfgs to converge on these small problems."""


def _classifier() -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=MAX_ITER))


def unit_histograms(sequences: Sequence[np.ndarray], n_units: int) -> np.ndarray:
    """Unit sequences -> their normalised unigram histograms [N, n_units] (each row sums to 1; empty rows are 0)."""
    counts = np.stack([np.bincount(np.asarray(s, dtype=np.int64), minlength=n_units) for s in sequences])
    return counts / np.maximum(counts.sum(1, keepdims=True), 1)


def speaker_leakage(sequences: Sequence[np.ndarray], n_units: int, speakers: Sequence[str],
                    groups: Sequence[str] | None = None, seed: int = 0) -> dict[str, float | int | str | None]:
    """Cross-validated accuracy of predicting the speaker from an utterance's unit histogram (lower = less leakage).

    Folds group utterances by `groups` (e.g. the sentence) when at least two groups exist and every fold leaves two
    or more speakers to train on, so the classifier cannot recognise a speaker from the words; else stratified by
    speaker. Returns accuracy, chance (the majority speaker's
    share), n_utterances, n_speakers, n_folds and how the folds were made; accuracy is None with fewer than two
    speakers or too few utterances per speaker.
    """
    y = np.asarray(speakers)
    labels, per_speaker = np.unique(y, return_counts=True)
    result: dict[str, float | int | str | None] = {
        "accuracy": None, "chance": float(per_speaker.max() / y.size) if y.size else None,
        "n_utterances": int(y.size), "n_speakers": int(labels.size), "n_folds": 0, "folds": None}
    if labels.size < 2:
        return result
    x = unit_histograms(sequences, n_units)
    n_groups = len(set(groups)) if groups is not None else 0
    n_folds = min(LEAKAGE_FOLDS, n_groups)
    folds = list(GroupKFold(n_splits=n_folds).split(x, y, groups)) if n_folds >= 2 else []
    how = "grouped by sentence"
    if not folds or any(np.unique(y[train]).size < 2 for train, _ in folds):
        n_folds = min(LEAKAGE_FOLDS, int(per_speaker.min()))
        if n_folds < 2:
            return result
        folds = list(StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(x, y))
        how = "stratified by speaker"
    predicted = cross_val_predict(_classifier(), x, y, cv=folds)
    return result | {"accuracy": float(np.mean(predicted == y)), "n_folds": n_folds, "folds": how}


def utterance_features(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """Utterance-level speaker features: mean and standard deviation over frames of MFCC + Δ + ΔΔ [78]."""
    frames = mfcc(wav, sample_rate)
    return np.concatenate([frames.mean(0), frames.std(0)])


@dataclass
class SpeakerProbe:
    """A speaker-ID classifier trained on natural audio; `predict` names the speaker of new audio."""

    classifier: Pipeline
    sample_rate: int

    @property
    def speakers(self) -> list[str]:
        return [str(s) for s in self.classifier.classes_]

    def predict(self, wavs: Sequence[np.ndarray]) -> list[str]:
        """Most likely speaker of each waveform [T] (at the probe's sample rate)."""
        x = np.stack([utterance_features(w, self.sample_rate) for w in wavs])
        return [str(s) for s in self.classifier.predict(x)]


def fit_speaker_probe(wavs: Sequence[np.ndarray], speakers: Sequence[str], sample_rate: int) -> SpeakerProbe:
    """Train the probe on natural utterances [T] of (at least two) speakers."""
    if len(set(speakers)) < 2:
        raise ValueError(f"fit_speaker_probe: need at least two speakers, got {sorted(set(speakers))}")
    x = np.stack([utterance_features(w, sample_rate) for w in wavs])
    return SpeakerProbe(_classifier().fit(x, np.asarray(speakers)), sample_rate)


def accuracy(predicted: Sequence[str], expected: Sequence[str]) -> float | None:
    """Share of predictions equal to the expected speaker; None for no predictions."""
    return float(np.mean(np.asarray(predicted) == np.asarray(expected))) if len(predicted) else None
