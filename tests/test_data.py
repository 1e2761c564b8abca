"""Corpora, splits, the index cache, bad files and the training/validation datasets, on generated trees."""
from __future__ import annotations

import os
import shutil

import pytest
import torch
from helpers import REPO
from test_audio import BAD_FILES, make_bad_file
from torch.utils.data import DataLoader

from audio_vqvae import data as data_module
from audio_vqvae.data import (
    INDEX_NAME,
    SegmentDataset,
    Split,
    Utterance,
    ValidationDataset,
    collate_segments,
    drop_too_short,
    load_corpus,
    sentence_of,
    split_corpus,
    worker_init_fn,
)
from audio_vqvae.io import write_skip_report


def durations(corpus) -> dict[str, float]:
    return {u.id: round(u.duration, 3) for u in corpus.utterances}


# ---- layouts ---------------------------------------------------------------------------------------------------


@pytest.fixture
def vctk_root(tmp_path, write_tone):
    root = tmp_path / "VCTK-Corpus-0.92"
    for spk, n in (("p225", 3), ("p226", 2), ("s5", 2)):
        for i in range(1, n + 1):
            for mic in ("mic1", "mic2"):
                write_tone(root / "wav48_silence_trimmed" / spk / f"{spk}_{i:03d}_{mic}.flac", 0.5 + 0.1 * i, sr=48000)
    (root / "txt" / "p225").mkdir(parents=True)
    return root


def test_vctk_layout(vctk_root, data_cfg):
    corpus = load_corpus(data_cfg("vctk", root=str(vctk_root)))
    assert corpus.speakers == ["p225", "p226", "s5"]
    assert durations(corpus) == {"p225_001": 0.6, "p225_002": 0.7, "p225_003": 0.8, "p226_001": 0.6,
                                 "p226_002": 0.7, "s5_001": 0.6, "s5_002": 0.7}
    assert all(u.path.endswith("_mic1.flac") for u in corpus.utterances)
    mic2 = load_corpus(data_cfg("vctk", root=str(vctk_root), mic="mic2"))
    assert all(u.path.endswith("_mic2.flac") for u in mic2.utterances) and len(mic2.utterances) == 7


def test_vctk_root_errors_name_the_key(tmp_path, data_cfg):
    with pytest.raises(ValueError, match=r"data.root is not set; set data.root=/path/to/VCTK-Corpus-0.92"):
        load_corpus(data_cfg("vctk"))
    with pytest.raises(FileNotFoundError, match=r"data.root: .*/nowhere does not exist; set data.root=/path/to/VCTK"):
        load_corpus(data_cfg("vctk", root=str(tmp_path / "nowhere")))
    with pytest.raises(FileNotFoundError, match=r"has no wav48_silence_trimmed/"):
        load_corpus(data_cfg("vctk", root=str(tmp_path)))


def test_librispeech_layout(tmp_path, write_tone, data_cfg):
    root = tmp_path / "LibriSpeech"
    for subset, spk, chapter in (("train-clean-100", "19", "198"), ("train-clean-100", "26", "495"),
                                 ("dev-clean", "84", "121123")):
        for i in range(2):
            write_tone(root / subset / spk / chapter / f"{spk}-{chapter}-{i:04d}.flac", 0.4)
        (root / subset / spk / chapter / f"{spk}-{chapter}.trans.txt").write_text("0000 HELLO\n")
    corpus = load_corpus(data_cfg("librispeech", root=str(root)))
    assert corpus.speakers == ["19", "26"]
    assert sorted(durations(corpus)) == ["19-198-0000", "19-198-0001", "26-495-0000", "26-495-0001"]
    both = load_corpus(data_cfg("librispeech", root=str(root), subsets=["train-clean-100", "dev-clean"]))
    assert both.speakers == ["19", "26", "84"] and len(both.utterances) == 6
    with pytest.raises(FileNotFoundError, match=r"data.subsets: .*train-other-500 does not exist"):
        load_corpus(data_cfg("librispeech", root=str(root), subsets=["train-other-500"]))


@pytest.fixture
def folder_root(tmp_path, write_tone):
    root = tmp_path / "audio"
    write_tone(root / "alice" / "day1" / "alice_a.wav", 0.5)
    write_tone(root / "alice" / "day2" / "alice_b.flac", 0.25, sr=22050)
    write_tone(root / "bob" / "day1" / "bob_a.ogg", 0.5)
    write_tone(root / "loose.wav", 0.5)  # no directory above it: no speaker at level 0
    (root / "bob" / "notes.txt").write_text("not listed: not an audio extension")
    return root


def test_folder_speaker_from_directory_level(folder_root, data_cfg):
    corpus = load_corpus(data_cfg("folder", root=str(folder_root)))
    assert corpus.speakers == ["alice", "bob"]
    assert durations(corpus) == {"alice_day1_alice_a": 0.5, "alice_day2_alice_b": 0.25, "bob_day1_bob_a": 0.5}
    assert corpus.skipped == [(str(folder_root / "loose.wav"),
                              "no speaker: data.speaker_level=0 does not match loose.wav")]
    by_day = load_corpus(data_cfg("folder", root=str(folder_root), speaker_level=-1))
    assert by_day.speakers == ["day1", "day2"]


def test_folder_speaker_from_regex(folder_root, data_cfg):
    corpus = load_corpus(data_cfg("folder", root=str(folder_root), speaker_regex=r"(?P<speaker>[a-z]+)_[ab]\."))
    assert corpus.speakers == ["alice", "bob"] and len(corpus.utterances) == 3
    assert [p for p, _ in corpus.skipped] == [str(folder_root / "loose.wav")]
    with pytest.raises(ValueError, match=r"data.speaker_regex: .* needs a group"):
        load_corpus(data_cfg("folder", root=str(folder_root), speaker_regex=r"[a-z]+_"))


def test_manifest_layout(tmp_path, write_tone, data_cfg):
    write_tone(tmp_path / "wavs" / "a.wav", 0.5)
    write_tone(tmp_path / "wavs" / "b.wav", 0.75)
    manifest = tmp_path / "train.tsv"
    manifest.write_text("# path\tspeaker\n\nwavs/a.wav\tann\nwavs/b.wav\tben\n")
    corpus = load_corpus(data_cfg("manifest", manifest=str(manifest)))  # root = the manifest's directory
    assert corpus.root == str(tmp_path) and corpus.speakers == ["ann", "ben"]
    assert durations(corpus) == {"wavs_a": 0.5, "wavs_b": 0.75}
    # with a header scan, a given duration is trusted without opening the file
    manifest.write_text("a.wav\tann\t9.5\nb.wav\tben\n")
    listed = load_corpus(data_cfg("manifest", manifest=str(manifest), root=str(tmp_path / "wavs"), scan="header",
                                  peak_normalize=None))
    assert durations(listed) == {"a": 9.5, "b": 0.75}
    manifest.write_text("a.wav ann\n")
    with pytest.raises(ValueError, match=r"train.tsv:1: expected path<TAB>speaker"):
        load_corpus(data_cfg("manifest", manifest=str(manifest)))
    with pytest.raises(ValueError, match=r"data.manifest is not set"):
        load_corpus(data_cfg("manifest"))


def test_manifest_ids_do_not_depend_on_where_the_corpus_lies(tmp_path, write_tone, data_cfg):
    ids = []
    for place in ("here", "there"):
        root = tmp_path / place
        inside, outside = write_tone(root / "s1" / "a.wav", 0.5), write_tone(tmp_path / f"{place}-x" / "b.wav", 0.5)
        manifest = root / "list.tsv"
        manifest.write_text(f"{inside}\tann\n{outside}\tben\ns1/../s1/c.wav\tann\t0.5\n")
        write_tone(root / "s1" / "c.wav", 0.5)
        ids.append([u.id for u in load_corpus(data_cfg("manifest", manifest=str(manifest), cache=False)).utterances])
    assert ids[0] == ids[1] == ["b", "s1_a", "s1_c"]  # path under the root without extension, else the stem


def test_manifest_ids_that_collide_are_refused_naming_both_files(tmp_path, write_tone, data_cfg):
    a, b = write_tone(tmp_path / "x" / "a.wav", 0.5), write_tone(tmp_path / "y" / "a.wav", 0.5)
    manifest = tmp_path / "root" / "list.tsv"
    manifest.parent.mkdir()
    manifest.write_text(f"{a}\tann\n{b}\tben\n")
    with pytest.raises(ValueError, match=rf"^{a} and {b} both map to utterance id 'a'$"):
        load_corpus(data_cfg("manifest", manifest=str(manifest), cache=False))


# ---- splits ----------------------------------------------------------------------------------------------------


def corpus_of(n_speakers: int, n_utts: int, seconds: float = 2.0, path: str = "x.wav"):
    speakers = [f"s{k}" for k in range(n_speakers)]
    utts = [Utterance(f"s{k}_{i:02d}", path, f"s{k}", seconds, 0.5) for k in range(n_speakers) for i in range(n_utts)]
    return data_module.Corpus("/r", utts, speakers)


def test_split_held_out_speakers_and_validation(data_cfg):
    corpus = corpus_of(5, 4)
    split = split_corpus(corpus, data_cfg("demo", held_out_speakers=2, val_per_speaker=1), seed=7)
    train, val, held = split.train, split.val, split.test
    held_speakers = {u.speaker for u in held}
    assert len(held_speakers) == 2 and len(held) == 8
    assert len(val) == 3 and {u.speaker for u in val} == {u.speaker for u in train}
    assert {u.speaker for u in train} == set(corpus.speakers) - held_speakers
    assert len(train) == 9 and not {u.id for u in train} & {u.id for u in val}
    assert Split(train, val, held) == split_corpus(corpus, data_cfg("demo", held_out_speakers=2, val_per_speaker=1), 7)
    named = split_corpus(corpus, data_cfg("demo", held_out_speakers=["s1"], val_per_speaker=0.5), seed=0)
    assert {u.speaker for u in named.test} == {"s1"} and len(named.val) == 8
    assert len(split_corpus(corpus_of(2, 1), data_cfg("demo", val_per_speaker=3), 0).train) == 2  # keeps one to train
    with pytest.raises(ValueError, match=r"data.held_out_speakers: unknown speakers \['nobody'\]"):
        split_corpus(corpus, data_cfg("demo", held_out_speakers=["nobody"]), seed=0)


def test_one_definition_of_a_sentence_and_the_splits_it_gives(data_cfg):
    """data.sentence_of is the sentence of the split and of the evaluation's folds (an EvalSet carries its corpus's
    key); the held-out sentences and validation of a fixed corpus and seed are those the split gave before it was
    shared (issue 18)."""
    from audio_vqvae.evaluation.sets import corpus_set

    assert sentence_of(r"_(\d+)$")("us_m_011") == "011" and sentence_of(None)("us_m_011") == "us_m_011"
    with pytest.raises(ValueError, match="needs exactly one group"):
        sentence_of(r"_\d+$")
    split = split_corpus(corpus_of(5, 6), data_cfg("demo", held_out_speakers=2, val_per_speaker=1,
                                                   held_out_sentences=2), seed=3)
    assert [u.id for u in split.test] == ["s1_02", "s1_04", "s4_02", "s4_04"]
    assert [u.id for u in split.val] == ["s0_01", "s2_05", "s3_03"]
    assert corpus_set(data_cfg("demo"), "val", 0).sentence_key == r"_(\d+)$"


def key(utt: Utterance) -> str:
    return utt.id.rsplit("_", 1)[1]


def test_split_holds_out_sentences_as_well_as_speakers(data_cfg):
    corpus = corpus_of(5, 6)  # ids s<k>_<nn>: sentence key nn, every speaker says sentences 00..05
    cfg = data_cfg("demo", held_out_speakers=2, val_per_speaker=1, sentence_key=r"_(\d+)$", held_out_sentences=2)
    split = split_corpus(corpus, cfg, seed=3)
    held_sentences = {key(u) for u in split.test}
    held_speakers = {u.speaker for u in split.test}
    assert len(held_sentences) == 2 and len(held_speakers) == 2 and len(split.test) == 4  # unseen x unseen only
    seen = split.train + split.val
    assert not {key(u) for u in seen} & held_sentences and not {u.speaker for u in seen} & held_speakers
    assert len(split.train) + len(split.val) == 3 * 4 and len(split.val) == 3  # 3 speakers x 4 other sentences
    assert split == split_corpus(corpus, cfg, seed=3)
    assert held_speakers == {u.speaker for u in split_corpus(corpus, data_cfg("demo", held_out_speakers=2), 3).test}
    listed = split_corpus(corpus, data_cfg("demo", sentence_key=r"_(\d+)$", held_out_sentences=["01"]), seed=0)
    assert listed.test == [] and all(key(u) != "01" for u in listed.train + listed.val)
    fraction = split_corpus(corpus, data_cfg("demo", held_out_speakers=1, sentence_key=r"_(\d+)$",
                                             held_out_sentences=0.5), seed=0)
    assert len(fraction.test) == 3
    firsts = [f"s{k}_00" for k in range(5)]  # null sentence_key: each id is its own sentence
    no_key = split_corpus(corpus, data_cfg("demo", held_out_speakers=1, sentence_key=None, held_out_sentences=firsts), 0)
    (held,) = {u.speaker for u in corpus.utterances} - {u.speaker for u in no_key.train + no_key.val}
    assert [u.id for u in no_key.test] == [f"{held}_00"] and not set(firsts) & {u.id for u in no_key.train + no_key.val}
    with pytest.raises(ValueError, match="data.sentence_key: .* does not match utterance id"):
        split_corpus(corpus, data_cfg("demo", sentence_key=r"-(\d+)$", held_out_sentences=1), seed=0)
    with pytest.raises(ValueError, match=r"data.held_out_sentences: 6 must be in \[0, 6\)"):
        split_corpus(corpus, data_cfg("demo", held_out_speakers=1, sentence_key=r"_(\d+)$", held_out_sentences=6), 0)


def test_files_shorter_than_one_latent_frame_are_dropped_with_a_reason():
    utts = [Utterance("a", "a.wav", "s", 10 / 16000), Utterance("b", "b.wav", "s", 64 / 16000)]
    kept, skipped = drop_too_short(utts, 16000, hop=64)
    assert kept == utts[1:] and skipped == [("a.wav", "too short: 10 samples at 16000 Hz, less than one frame (64 samples)")]


# ---- index cache -----------------------------------------------------------------------------------------------


def test_index_cache_rechecks_only_changed_files(tmp_path, write_tone, data_cfg, monkeypatch):
    root = tmp_path / "audio"
    for name in ("a", "b", "c"):
        write_tone(root / "spk" / f"{name}.wav", 0.5)
    checked = []
    real_scan = data_module.scan_audio
    monkeypatch.setattr(data_module, "scan_audio", lambda p: checked.append(p.name) or real_scan(p))
    cfg = data_cfg("folder", root=str(root))
    assert durations(load_corpus(cfg))["spk_b"] == 0.5 and sorted(checked) == ["a.wav", "b.wav", "c.wav"]
    assert (root / INDEX_NAME).is_file()
    checked.clear()
    load_corpus(cfg)
    assert checked == []  # nothing changed: all from the cache
    write_tone(root / "spk" / "b.wav", 1.25)
    os.utime(root / "spk" / "b.wav", ns=(1, 1))  # a different mtime even on coarse-clock filesystems
    assert durations(load_corpus(cfg))["spk_b"] == 1.25 and checked == ["b.wav"]
    cache_dir = tmp_path / "cache"
    load_corpus(data_cfg("folder", root=str(root), cache=str(cache_dir)))
    assert len(list(cache_dir.glob("index-*.json"))) == 1


# ---- bad files ---------------------------------------------------------------------------------------------------


def test_bad_files_are_skipped_with_reasons(tmp_path, write_tone, data_cfg, caplog):
    root = tmp_path / "audio"
    good = [write_tone(root / "spk" / f"good{i}.wav", 0.5) for i in range(2)]
    bad = dict(make_bad_file(root / "spk", name) for name in BAD_FILES)
    corpus = load_corpus(data_cfg("folder", root=str(root)))
    assert sorted(u.path for u in corpus.utterances) == sorted(map(str, good))
    assert {p for p, _ in corpus.skipped} == set(map(str, bad))
    for path, reason in corpus.skipped:
        assert bad[root / "spk" / os.path.basename(path)] in reason
        assert f"skipping {path}: {reason}" in caplog.text
    report = tmp_path / "run" / "skipped.tsv"
    report.parent.mkdir()
    write_skip_report(report, corpus.skipped)
    write_skip_report(report, corpus.skipped)  # a resumed run does not repeat lines
    lines = report.read_text().splitlines()
    assert len(lines) == len(bad) and all(len(line.split("\t")) == 2 for line in lines)


def test_all_bad_corpus_stops_with_one_clear_error(tmp_path, data_cfg):
    root = tmp_path / "broken"
    (root / "spk").mkdir(parents=True)
    for name in ("empty.wav", "text.wav", "silent.flac"):
        make_bad_file(root / "spk", name)
    message = rf"data.root: no usable audio in {root} \(folder layout\): 3 audio files found, 3 skipped"
    with pytest.raises(ValueError, match=message):
        load_corpus(data_cfg("folder", root=str(root)))


def test_header_scan_leaves_content_checks_to_the_dataset(tmp_path, write_tone, data_cfg, caplog):
    root = tmp_path / "audio"
    write_tone(root / "spk" / "good.wav", 1.5)
    make_bad_file(root / "spk", "nan.wav")
    corpus = load_corpus(data_cfg("folder", root=str(root), scan="header", peak_normalize=None))
    assert len(corpus.utterances) == 2  # the NaN file passes a header check
    report = tmp_path / "skipped.tsv"
    ds = SegmentDataset(corpus.utterances, corpus.speakers, 8000, 16000, "pad", None, report, seed=0)
    items = [ds[i][0] for i in range(len(ds))]
    for wav in items:
        assert torch.isfinite(wav).all() and wav.abs().max() > 0.1  # the good file stands in for the bad one
    fresh = SegmentDataset(corpus.utterances, corpus.speakers, 8000, 16000, "pad", None, None, seed=0)
    assert all(torch.equal(items[i], ds[i][0]) and torch.equal(items[i], fresh[i][0]) for i in range(len(ds)))
    assert report.read_text() == f"{root / 'spk' / 'nan.wav'}\tnon-finite samples (NaN/inf)\n"
    assert "skipping" in caplog.text and "nan.wav" in caplog.text


# ---- datasets ----------------------------------------------------------------------------------------------------


@pytest.fixture
def small_corpus(tmp_path, write_tone, data_cfg):
    root = tmp_path / "audio"
    for k, spk in enumerate(("ann", "ben", "cat")):
        for i in range(3):
            write_tone(root / spk / f"{i}.flac", 0.5 + 0.25 * i, freq=150.0 + 50 * k + 10 * i)
    write_tone(root / "ben" / "short.flac", 0.1)
    return load_corpus(data_cfg("folder", root=str(root)))


def test_segments_shapes_labels_and_determinism(small_corpus):
    utts, speakers = small_corpus.utterances, small_corpus.speakers
    ds = SegmentDataset(utts, speakers, 4096, 16000, "pad", 0.95, None, seed=3)
    assert len(ds) == 10
    items = [ds[i] for i in range(len(ds))]
    for utt, (wav, spk) in zip(utts, items):
        assert wav.shape == (1, 4096) and wav.dtype == torch.float32
        assert spk.dtype == torch.long and speakers[int(spk)] == utt.speaker
        assert wav.abs().max() <= 0.95 + 1e-5
    short = items[[u.id for u in utts].index("ben_short")][0]
    assert short[0, 1600:].abs().max() == 0 and short[0, :1600].abs().max() > 0.5  # 0.1 s, then zero padding
    again = SegmentDataset(utts, speakers, 4096, 16000, "pad", 0.95, None, seed=3)
    assert all(torch.equal(ds[i][0], again[i][0]) for i in reversed(range(len(ds))))  # any order, same items
    again.set_epoch(1)
    assert not all(torch.equal(ds[i][0], again[i][0]) for i in range(len(ds)))  # a new epoch, new offsets
    assert len(SegmentDataset(utts, speakers, 4096, 16000, "skip", 0.95, None, seed=3)) == 9


def test_segments_do_not_depend_on_workers(small_corpus):
    ds = SegmentDataset(small_corpus.utterances, small_corpus.speakers, 2048, 16000, "pad", None, None, seed=5)
    ds.set_epoch(2)
    expected = collate_segments([ds[i] for i in range(len(ds))])
    loader = DataLoader(ds, batch_size=len(ds), num_workers=2, collate_fn=collate_segments,
                        worker_init_fn=worker_init_fn, persistent_workers=True)
    ds.set_epoch(0)
    next(iter(loader))
    ds.set_epoch(2)  # reaches the running workers
    wav, spk = next(iter(loader))
    assert wav.shape == (10, 1, 2048) and torch.equal(wav, expected[0]) and torch.equal(spk, expected[1])


def test_validation_set_is_fixed_and_cropped(small_corpus):
    utts, speakers = small_corpus.utterances, small_corpus.speakers
    a = ValidationDataset(utts, speakers, 16000, 0.6, 0.95, None)
    b = ValidationDataset(utts, speakers, 16000, 0.6, 0.95, None)
    assert [a[i][2] for i in range(len(a))] == [u.id for u in utts]
    assert all(torch.equal(a[i][0], b[i][0]) for i in range(len(a)))
    assert max(a[i][0].shape[-1] for i in range(len(a))) == 9600  # cropped to 0.6 s
    assert [a[i][0].shape[-1] for i in (0, 6)] == [8000, 1600] and [a[i][1].item() for i in (0, 6)] == [0, 1]


def test_validation_leaves_out_unreadable_files(small_corpus, tmp_path):
    broken = small_corpus.utterances[0]
    shutil.copy(REPO / "pyproject.toml", broken.path)  # replaced by a text file after indexing
    report = tmp_path / "skipped.tsv"
    ds = ValidationDataset(small_corpus.utterances, small_corpus.speakers, 16000, None, 0.95, report)
    assert len(ds) == len(small_corpus.utterances) - 1 and broken.path in report.read_text()


def test_peak_normalize_needs_a_full_scan(small_corpus):
    utts = [Utterance(u.id, u.path, u.speaker, u.duration) for u in small_corpus.utterances]
    with pytest.raises(ValueError, match=r"data.peak_normalize needs .* data.scan=full"):
        SegmentDataset(utts, small_corpus.speakers, 2048, 16000, "pad", 0.95, None, seed=0)
    with pytest.raises(ValueError, match=r"data.short: 'crop' is not one of pad, skip"):
        SegmentDataset(utts, small_corpus.speakers, 2048, 16000, "crop", None, None, seed=0)


# ---- the shipped demo ------------------------------------------------------------------------------------------------


def test_demo_corpus_loads_from_the_checkout(data_cfg, monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = data_cfg("demo")
    corpus = load_corpus(cfg)
    assert len(corpus.speakers) >= 6 and sum(u.duration for u in corpus.utterances) >= 480
    assert corpus.skipped == [] and corpus.root == str(REPO / "datasets" / "demo")
    assert all((REPO / "datasets" / "demo" / "alignments" / f"{u.id}.tsv").is_file() for u in corpus.utterances)
    split = split_corpus(corpus, cfg, seed=1234)
    assert split.test == [] and len(split.val) == 2 * len(corpus.speakers)
    monkeypatch.chdir(REPO / "tests")
    message = r"data.root: .*tests/datasets/demo does not exist; run from the audio-vqvae checkout"
    with pytest.raises(FileNotFoundError, match=message):
        load_corpus(cfg)
