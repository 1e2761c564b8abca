"""The shipped datasets/engines_heldout set (flite and festival voices) indexes as the eval reads it: 14 voices x the
same 10 sentences, 16 kHz mono, every utterance with a phone alignment that covers it and shares one phone set."""
import csv
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audio_vqvae.alignments import build_vocab, frame_labels, load_alignments
from audio_vqvae.data import load_corpus, split_corpus
from audio_vqvae.evaluation.field_abx import item_lines

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO / "datasets" / "engines_heldout"


def _rows(name: str) -> list[list[str]]:
    with open(ROOT / name, newline="", encoding="utf-8") as f:
        return list(csv.reader(f, delimiter="\t"))


@pytest.fixture
def corpus(data_cfg):
    cfg = data_cfg("engines_heldout", root=str(ROOT))
    return cfg, load_corpus(cfg)


def test_voices_sentences_and_audio_format(corpus):
    cfg, c = corpus
    assert c.skipped == [] and len(c.speakers) == 14 and len(c.utterances) == 140
    sentences = {u.id.rsplit("_", 1)[1] for u in c.utterances}
    assert sentences == {f"{n}" for n in range(201, 211)}
    for u in c.utterances:  # every voice reads every sentence
        assert u.id.startswith(u.speaker + "_")
    assert {u.speaker for u in c.utterances if u.id.endswith("_205")} == set(c.speakers)
    for u in c.utterances:
        info = sf.info(u.path)
        assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC"), u.path
        assert 1.0 < info.duration < 6.0
    assert 380 < sum(u.duration for u in c.utterances) < 450
    # not a training corpus: no split holds anything out, so the eval scores all of it as a foreign corpus
    assert split_corpus(c, cfg, seed=1234).test == []


def test_voices_tsv_names_two_engines_and_what_is_processed(corpus):
    _, c = corpus
    header, *rows = _rows("voices.tsv")
    assert header == ["speaker", "engine", "voice", "settings", "kind"]
    assert sorted(r[0] for r in rows) == c.speakers
    assert {r[1] for r in rows} == {"flite", "festival"}
    natural = [r for r in rows if r[4] == "natural"]
    assert len(natural) == 9 and all(r[4].startswith("processed: Change gender") for r in rows if r not in natural)


def test_sentences_are_new_to_the_demo_corpora():
    ours = {text for _, text in _rows("transcripts.tsv")}
    assert len(ours) == 10 and len(_rows("transcripts.tsv")) == 140
    for other in ("demo", "demo_heldout"):
        with open(REPO / "datasets" / other / "transcripts.tsv", encoding="utf-8") as f:
            assert ours.isdisjoint(line.rstrip("\n").split("\t")[1] for line in f)


def test_every_utterance_has_an_alignment_covering_it(corpus):
    _, c = corpus
    alignments = load_alignments(ROOT / "alignments")
    assert set(alignments) == {u.id for u in c.utterances}
    for u in c.utterances:
        segs = alignments[u.id]
        assert segs[0].start == 0.0 and abs(segs[-1].end - u.duration) <= 0.002, u.id
        assert all(a.end == b.start for a, b in pairwise(segs)), f"{u.id}: gap between segments"
        assert sum(s.phone != "sil" for s in segs) >= 15, u.id
        assert max(s.end - s.start for s in segs if s.phone != "sil") < 0.5, u.id
    vocab = build_vocab(alignments)
    assert 35 <= len(vocab) <= 45 and {"dh", "ax", "iy", "s", "t", "n"} <= set(vocab)  # the engines' one phone set
    labels = frame_labels(alignments["fs_ked_201"], 150, 50.0, vocab)
    assert (labels >= 0).mean() > 0.6  # most 50 Hz frames of a 3 s utterance are labelled with a phone
    np.testing.assert_array_equal(labels[:5], -1)  # the lead-in pause is silence, ignored by the metrics


def test_field_abx_item_file_from_the_alignments():
    """The field ABX's item file (evaluation.field_abx): one line per non-silent phone with both neighbours, pauses
    as SIL."""
    alignments = load_alignments(ROOT / "alignments" / "fs_ked_201.tsv")
    segs = alignments["fs_ked_201"]
    lines = item_lines(alignments, {"fs_ked_201": "fs_ked"})
    assert lines[0] == "#file onset offset #phone prev-phone next-phone speaker"
    assert len(lines) - 1 == sum(s.phone != "sil" for s in segs[1:-1])
    first = segs[1]  # the first phone, after the lead-in pause
    assert lines[1] == f"fs_ked_201 {first.start:.3f} {first.end:.3f} {first.phone} SIL {segs[2].phone} fs_ked"
    assert all(len(line.split()) == 7 for line in lines[1:])
