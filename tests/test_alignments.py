import numpy as np
import pytest

from audio_vqvae.alignments import Segment, build_vocab, frame_labels, load_alignments, read_textgrid, read_tsv


def _textgrid(tiers: dict[str, list[tuple[float, float, str]]], xmax: float = 1.0) -> str:
    """A long-format Praat TextGrid with the given interval tiers."""
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0", f"xmax = {xmax}",
             "tiers? <exists>", f"size = {len(tiers)}", "item []:"]
    for n, (name, intervals) in enumerate(tiers.items(), start=1):
        lines += [f"    item [{n}]:", '        class = "IntervalTier"', f'        name = "{name}"',
                  "        xmin = 0", f"        xmax = {xmax}", f"        intervals: size = {len(intervals)}"]
        for k, (start, end, text) in enumerate(intervals, start=1):
            lines += [f"        intervals [{k}]:", f"            xmin = {start}", f"            xmax = {end}",
                      f'            text = "{text}"']
    return "\n".join(lines) + "\n"


TIERS = {
    "words": [(0, 0.5, "hi"), (0.5, 1.0, "")],
    "phones": [(0, 0.2, "h"), (0.2, 0.5, "ai"), (0.5, 1.0, "")],
}


def test_read_tsv(tmp_path):
    path = tmp_path / "utt1.tsv"
    path.write_text("0.0\t0.1\tsil\n0.1\t0.25\tk\n\n0.25\t0.4\tae\n")
    assert read_tsv(path) == [Segment(0.0, 0.1, "sil"), Segment(0.1, 0.25, "k"), Segment(0.25, 0.4, "ae")]


@pytest.mark.parametrize("bad_line, message", [
    ("0.1 0.2 k", "expected 3 tab-separated fields"),
    ("0.1\tx\tk", "not numbers"),
    ("0.3\t0.2\tk", "start < end"),
    ("0.1\t0.2\t ", "empty phone"),
    ("0.05\t0.2\tk", "time order"),
])
def test_read_tsv_malformed_line_names_file_and_line(tmp_path, bad_line, message):
    path = tmp_path / "utt1.tsv"
    path.write_text(f"0.0\t0.1\tsil\n{bad_line}\n")
    with pytest.raises(ValueError, match=message) as err:
        read_tsv(path)
    assert f"{path}:2:" in str(err.value) and "\n" not in str(err.value)


def test_read_textgrid_picks_phone_tier_by_default(tmp_path):
    path = tmp_path / "utt1.TextGrid"
    path.write_text(_textgrid(TIERS))
    assert read_textgrid(path) == [Segment(0.0, 0.2, "h"), Segment(0.2, 0.5, "ai")]  # empty interval dropped
    assert read_textgrid(path, tier="words") == [Segment(0.0, 0.5, "hi")]
    with pytest.raises(ValueError, match="no interval tier named 'syllables'"):
        read_textgrid(path, tier="syllables")


def test_read_textgrid_falls_back_to_last_interval_tier(tmp_path):
    path = tmp_path / "utt1.TextGrid"
    path.write_text(_textgrid({"words": TIERS["words"], "segments": TIERS["phones"]}))
    assert [s.phone for s in read_textgrid(path)] == ["h", "ai"]


def test_read_textgrid_malformed_names_file(tmp_path):
    path = tmp_path / "broken.TextGrid"
    path.write_text('File type = "ooTextFile"\nObject class = "TextGrid"\nxmin = oops\n')
    with pytest.raises(ValueError, match="broken.TextGrid: not a readable TextGrid"):
        read_textgrid(path)


def test_load_alignments_directory_mixes_formats_and_rejects_duplicate_ids(tmp_path):
    (tmp_path / "spk1").mkdir()
    (tmp_path / "spk1" / "a.tsv").write_text("0\t0.5\tk\n")
    (tmp_path / "b.TextGrid").write_text(_textgrid(TIERS))
    (tmp_path / "notes.txt").write_text("ignored")
    alignments = load_alignments(tmp_path)
    assert sorted(alignments) == ["a", "b"]
    assert alignments["a"] == [Segment(0.0, 0.5, "k")]
    assert load_alignments(tmp_path / "b.TextGrid") == {"b": alignments["b"]}
    (tmp_path / "a.tsv").write_text("0\t0.5\tk\n")
    with pytest.raises(ValueError, match="utterance id 'a' also given by"):
        load_alignments(tmp_path)


def test_build_vocab_is_sorted_and_leaves_out_silence():
    alignments = {"u1": [Segment(0, 1, "sil"), Segment(1, 2, "t")], "u2": [Segment(0, 1, "a"), Segment(1, 2, "sp")]}
    assert build_vocab(alignments) == {"a": 0, "t": 1}
    assert build_vocab(alignments, ignore=()) == {"a": 0, "sil": 1, "sp": 2, "t": 3}


def test_frame_labels_by_frame_centre():
    segments = [Segment(0.0, 0.1, "a"), Segment(0.1, 0.2, "sil"), Segment(0.25, 0.3, "b")]
    vocab = {"a": 0, "b": 1}
    # frame rate 20 Hz -> centres 0.025, 0.075, 0.125, 0.175, 0.225 (gap), 0.275, 0.325 (past the end)
    labels = frame_labels(segments, n_frames=7, frame_rate=20.0, vocab=vocab)
    np.testing.assert_array_equal(labels, [0, 0, -1, -1, -1, 1, -1])
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(frame_labels([], 3, 20.0, vocab), [-1, -1, -1])
    with pytest.raises(ValueError, match="time order"):
        frame_labels([Segment(0.0, 0.2, "a"), Segment(0.1, 0.3, "b")], 3, 20.0, vocab)
