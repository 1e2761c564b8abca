"""Speech-quality measures: pitch agreement and its pooling on hand-made tracks and on tones through the one tracker,
text normalisation, corpus WER and the WER ratio on hand-counted edits, transcripts files, and the off-the-shelf recogniser on one demo utterance (real words, not garbage)."""
import math

import numpy as np
import pytest
from helpers import REPO

from audio_vqvae import metrics
from audio_vqvae.audio import load_audio
from audio_vqvae.evaluation.speech import (
    intelligibility,
    normalise_text,
    pitch_agreement,
    read_transcripts,
    recognise,
    summarise,
    to_pcm16,
    word_error_rate,
)
from audio_vqvae.f0 import track

NAN = math.nan


def test_pitch_agreement_hand_values():
    # frames:        0      1      2      3      4      5
    ref_f0 = [100.0, 200.0, 200.0, 150.0, NAN, 100.0]
    ref_v = [True, True, True, True, False, True]
    out_f0 = [100.0, 250.0, 200.0 * 2 ** (100 / 1200), NAN, 300.0, 119.0]
    out_v = [True, True, True, False, True, True]
    m = pitch_agreement(ref_f0, ref_v, out_f0, out_v)
    # ref voiced: 0,1,2,3,5 (5); both: 0,1,2,5 (4). Ratios 1, 1.25 (gross), 2^(1/12), 1.19 (not gross)
    assert m["n_ref_voiced"] == 5 and m["n_both"] == 4
    assert m["voiced_recall"] == pytest.approx(4 / 5)
    assert m["gpe"] == pytest.approx(1 / 4)
    cents = sorted([0.0, 1200 * math.log2(1.25), 100.0, 1200 * math.log2(1.19)])
    assert m["median_cents"] == pytest.approx((cents[1] + cents[2]) / 2)
    assert m["n_frames"] == 6 and m["voicing_agreement"] == pytest.approx(4 / 6)  # frames 3 and 4 disagree


def test_pitch_agreement_octave_error_is_1200_cents_and_gross():
    m = pitch_agreement([100.0, 100.0], [True, True], [200.0, 50.0], [True, True])
    assert m["gpe"] == 1.0 and m["median_cents"] == pytest.approx(1200.0)


def test_pitch_agreement_without_frames_gives_none():
    silent = pitch_agreement([NAN] * 4, [False] * 4, [100.0] * 4, [True] * 4)
    assert silent == {"voiced_recall": None, "voicing_agreement": 0.0, "gpe": None, "median_cents": None,
                      "n_frames": 4, "n_agree": 0, "n_ref_voiced": 0, "n_both": 0}
    unvoiced_out = pitch_agreement([100.0] * 4, [True] * 4, [NAN] * 4, [False] * 4)
    assert unvoiced_out["voiced_recall"] == 0.0 and unvoiced_out["gpe"] is None and unvoiced_out["n_ref_voiced"] == 4


def test_pitch_agreement_crops_a_few_frames_and_rejects_misaligned_tracks():
    m = pitch_agreement([100.0] * 10, [True] * 10, [100.0] * 8, [True] * 8)
    assert m["n_ref_voiced"] == 8 and m["voiced_recall"] == 1.0 and m["gpe"] == 0.0
    with pytest.raises(ValueError, match="differ by more than"):
        pitch_agreement([100.0] * 10, [True] * 10, [100.0] * 5, [True] * 5)
    with pytest.raises(ValueError, match="output: F0 has 3 frames but voicing has 4"):
        pitch_agreement([100.0] * 4, [True] * 4, [100.0] * 3, [True] * 4)
    with pytest.raises(ValueError, match="reference: a voiced frame has F0 <= 0 or NaN"):
        pitch_agreement([NAN, 100.0], [True, True], [100.0] * 2, [True] * 2)


def test_summarise_pools_over_frames_not_utterances():
    long = {"gpe": 0.0, "median_cents": 10.0, "n_frames": 100, "n_agree": 100, "n_ref_voiced": 90, "n_both": 90}
    short = {"gpe": 1.0, "median_cents": 40.0, "n_frames": 10, "n_agree": 1, "n_ref_voiced": 10, "n_both": 1}
    empty = {"gpe": None, "median_cents": None, "n_frames": 0, "n_agree": 0, "n_ref_voiced": 0, "n_both": 0}
    s = summarise([long, short, empty])
    assert s["n"] == 3 and s["n_ref_voiced"] == 100 and s["n_both"] == 91 and s["n_frames"] == 110
    assert s["voiced_recall"] == pytest.approx(91 / 100)  # a mean of ratios would say 0.55
    assert s["voicing_agreement"] == pytest.approx(101 / 110)
    assert s["gpe"] == pytest.approx(1 / 91)
    assert s["median_cents"] == pytest.approx((90 * 10.0 + 40.0) / 91)
    assert summarise([empty]) == {"n": 1, "n_frames": 0, "n_ref_voiced": 0, "n_both": 0, "voiced_recall": None,
                                  "voicing_agreement": None, "gpe": None, "median_cents": None}


def _vowel(seconds: float, f0: float, sr: int = 16000) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (0.2 * sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6))).astype(np.float32)


def test_one_tracker_and_one_pitch_agreement_score_tones():
    """The evaluation's pitch measure is f0.track on both sides + pitch_agreement; the old pyin copy is gone."""
    ref = track(_vowel(0.6, 150.0), 16000)
    same = pitch_agreement(*ref, *track(_vowel(0.6, 150.0), 16000))
    assert same["voiced_recall"] == 1.0 and same["gpe"] == 0.0 and same["median_cents"] == pytest.approx(0, abs=1)
    octave = pitch_agreement(*ref, *track(_vowel(0.6, 300.0), 16000))
    assert octave["gpe"] == 1.0 and octave["median_cents"] == pytest.approx(1200, abs=5)
    silence = pitch_agreement(*ref, *track(np.zeros(9600, np.float32), 16000))
    assert silence["voiced_recall"] == 0.0 and silence["gpe"] is None
    assert not hasattr(metrics, "f0_track") and not hasattr(metrics, "f0_agreement_from_tracks")


def test_intelligibility_reports_both_wers_and_their_ratio():
    refs = ["a b c d", "e f"]
    w = intelligibility(refs, ["a b c d", "e x"], ["a x c", "y x"])  # natural: 1 edit; resynthesis: b->x, d deleted, e->y, f->x
    assert w["n"] == 2 and w["n_words"] == 6
    assert w["wer_natural"] == pytest.approx(1 / 6) and w["wer_resynthesis"] == pytest.approx(4 / 6)
    assert w["wer_ratio"] == pytest.approx(4.0)
    assert intelligibility(refs, refs, ["a b c d", "e"])["wer_ratio"] is None  # natural WER 0: no ratio


def test_read_transcripts(tmp_path):
    good = tmp_path / "t.tsv"
    good.write_text("a_001\tHello, world.\n\nb_002\tOne two\n", encoding="utf-8")
    assert read_transcripts(good) == {"a_001": "Hello, world.", "b_002": "One two"}
    bad = tmp_path / "bad.tsv"
    bad.write_text("a_001\thello\nno tab here\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.tsv:2: expected utt_id<TAB>sentence"):
        read_transcripts(bad)
    bad.write_text("a_001\thello\na_001\tagain\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.tsv:2: utterance 'a_001' is transcribed twice"):
        read_transcripts(bad)
    with pytest.raises(ValueError, match="missing.tsv: cannot read"):
        read_transcripts(tmp_path / "missing.tsv")


def test_normalise_text():
    assert normalise_text("  The old Lighthouse-keeper,  climbed!\tthe STAIRS. ") == "the old lighthouse keeper climbed the stairs"
    assert normalise_text("...") == ""


def test_word_error_rate_hand_values():
    # one substitution in 3 words + two deletions (empty hypothesis) of 2 words: 3 edits / 5 words
    assert word_error_rate(["a b c", "d e"], ["a x c", ""]) == pytest.approx(3 / 5)
    assert word_error_rate(["Hello, world."], ["hello world"]) == 0.0  # normalised before scoring
    assert word_error_rate(["a b"], ["a b c d"]) == pytest.approx(1.0)  # insertions can take it to (and past) 1
    assert word_error_rate(["a"], ["b c d"]) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        word_error_rate(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="hold no words"):
        word_error_rate([" ,"], ["a"])


def test_to_pcm16_resamples_clips_and_rejects_bad_audio():
    pcm = to_pcm16(np.array([0.0, 0.5, 2.0, -2.0] * 2000, dtype=np.float32), 8000)
    assert pcm.dtype == np.int16 and pcm.size == 16000 and pcm.max() == 32767 and pcm.min() == -32767
    with pytest.raises(ValueError, match="mono"):
        to_pcm16(np.zeros((100, 2)), 16000)
    with pytest.raises(ValueError, match="NaN"):
        to_pcm16(np.array([0.0, NAN]), 16000)


def test_recogniser_hears_words_in_a_demo_utterance():
    """us_f_013, "Thick fog rolled over the hills just after sunset.": the stock en-us model (measured) hears
    "the pond rolled over that he was just after sunset", 5 edits in 9 words."""
    wav = load_audio(REPO / "datasets" / "demo" / "us_f" / "us_f_013.flac", 16000).numpy()
    text = recognise(wav, 16000)
    assert text and text == normalise_text(text)
    assert word_error_rate(["Thick fog rolled over the hills just after sunset."], [text]) < 0.8
    assert recognise(np.zeros(16000, dtype=np.float32), 16000) == ""  # unguarded, pocketsphinx hears "dog"
    assert recognise(np.zeros(0, dtype=np.float32), 16000) == ""
