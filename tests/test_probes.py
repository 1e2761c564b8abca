import numpy as np
import pytest

from audio_vqvae.evaluation.probes import accuracy, fit_speaker_probe, speaker_leakage, unit_histograms


def test_unit_histograms():
    h = unit_histograms([np.array([0, 0, 1, 3]), np.array([], np.int64)], 4)
    assert np.allclose(h, [[0.5, 0.25, 0, 0.25], [0, 0, 0, 0]])


def _sequences(separable: bool, n_sentences: int = 6, seed: int = 0):
    """Two speakers x n sentences; separable: speaker A uses units 0-3, B units 4-7; else both draw from 0-7."""
    rng = np.random.default_rng(seed)
    seqs, speakers, sentences = [], [], []
    for spk, low in (("A", 0), ("B", 4)):
        for s in range(n_sentences):
            seqs.append(rng.integers(low, low + 4, 50) if separable else rng.integers(0, 8, 50))
            speakers.append(spk)
            sentences.append(f"s{s}")
    return seqs, speakers, sentences


def test_speaker_leakage_is_high_for_speaker_units_and_chance_for_shared_ones():
    seqs, speakers, sentences = _sequences(True)
    m = speaker_leakage(seqs, 8, speakers, sentences)
    assert m["accuracy"] == 1.0 and m["chance"] == 0.5 and m["folds"] == "grouped by sentence"
    assert m["n_folds"] == 5 and m["n_speakers"] == 2 and m["n_utterances"] == 12
    seqs, speakers, _ = _sequences(False, n_sentences=20)
    m = speaker_leakage(seqs, 8, speakers)
    assert m["folds"] == "stratified by speaker" and m["accuracy"] < 0.8
    assert speaker_leakage(seqs[:3], 8, ["A"] * 3)["accuracy"] is None


def test_speaker_leakage_with_sentences_of_one_speaker_each_falls_back_to_stratified_folds():
    seqs, speakers, _ = _sequences(True)
    own_sentences = [f"{spk}0" for spk in speakers]  # each speaker says one sentence, which the other does not
    m = speaker_leakage(seqs, 8, speakers, own_sentences)  # sentence folds would train on one speaker
    assert m["folds"] == "stratified by speaker" and m["accuracy"] == 1.0
    assert speaker_leakage(seqs[:7], 8, speakers[:7], own_sentences[:7])["accuracy"] is None  # B has one utterance


def test_speaker_probe_recognises_separable_voices():
    sr, rng = 16000, np.random.default_rng(0)
    t = np.arange(sr // 2) / sr

    def voice(f0: float) -> np.ndarray:
        x = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 8))
        return (0.1 * x + 0.01 * rng.normal(size=t.size)).astype(np.float32)

    wavs = [voice(f) for f in (110, 115, 120, 240, 250, 260)]
    probe = fit_speaker_probe(wavs, ["low"] * 3 + ["high"] * 3, sr)
    assert probe.speakers == ["high", "low"]
    predicted = probe.predict([voice(112), voice(255)])
    assert predicted == ["low", "high"] and accuracy(predicted, ["low", "low"]) == 0.5
    assert accuracy([], []) is None
    with pytest.raises(ValueError, match="at least two speakers"):
        fit_speaker_probe(wavs[:2], ["low", "low"], sr)
