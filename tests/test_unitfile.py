"""The units format: dedup round trip, line checks, resumable writer in utterance-id order, sidecar."""
import json

import numpy as np
import pytest

from audio_vqvae.unitfile import (
    FORMAT_VERSION,
    UnitsSidecar,
    UnitWriter,
    durations_path,
    expand,
    load_units,
    read_units,
    run_length_encode,
    sidecar_path,
)


def sidecar(dedup: bool = False, sha: str = "ab" * 32) -> UnitsSidecar:
    return UnitsSidecar(frame_rate=250.0, sample_rate=16000, hop=64, codebook_size=16, checkpoint="/ckpt.pt",
                        checkpoint_sha256=sha, dedup=dedup, durations="u.txt.durations" if dedup else None)


def write(out, meta, codes: dict, npy_dir=None, overwrite=False) -> UnitWriter:
    """A UnitWriter that records `codes` ({id: array}) in the given order and finishes."""
    writer = UnitWriter(out, meta, npy_dir, overwrite)
    for utt_id, c in codes.items():
        writer.add(utt_id, np.asarray(c))
    writer.finish([])
    return writer


def test_dedup_round_trips():
    rng = np.random.default_rng(0)
    for n in (0, 1, 2, 50):
        codes = np.repeat(rng.integers(0, 4, n), rng.integers(1, 5, n))
        units, durations = run_length_encode(codes)
        assert (units[1:] != units[:-1]).all() and (durations >= 1).all()
        np.testing.assert_array_equal(expand(units, durations), codes)


@pytest.mark.parametrize("line,message", [
    ("u2\t1 2 16", r"bad\.txt:2: unit 16 of utterance 'u2' is out of range \(0\.\.15\)"),
    ("u2\t1 -1", r"bad\.txt:2: unit -1 .* out of range"),
    ("u2\t1 x 3", r"bad\.txt:2: units must be integers"),
    ("u2 1 2 3", r"bad\.txt:2: expected utt_id<TAB>units"),
    ("u1\t1", r"bad\.txt:2: utterance 'u1' appears twice"),
])
def test_read_units_rejects_bad_lines_with_line_number(tmp_path, line, message):
    path = tmp_path / "bad.txt"
    path.write_text(f"u1\t0 15 3\n{line}\n")
    with pytest.raises(ValueError, match=message):
        read_units(path, codebook_size=16)




def test_sidecar_round_trips_with_its_format_version(tmp_path):
    meta = sidecar(dedup=True)
    meta.write(tmp_path / "u.txt.json")
    assert UnitsSidecar.read(tmp_path / "u.txt.json") == meta
    assert json.loads((tmp_path / "u.txt.json").read_text())["format_version"] == FORMAT_VERSION
    (tmp_path / "other.json").write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="other.json: not a audio-vqvae-units sidecar"):
        UnitsSidecar.read(tmp_path / "other.json")
    (tmp_path / "short.json").write_text('{"format": "audio-vqvae-units", "hop": 64}')
    with pytest.raises(ValueError, match="short.json: .*missing"):
        UnitsSidecar.read(tmp_path / "short.json")


@pytest.mark.parametrize("dedup", [False, True])
def test_writer_round_trips_in_id_order_with_npy(tmp_path, dedup):
    out, codes = tmp_path / "u.txt", {"b": [3, 3, 1], "a": [0, 15, 15, 15], "c": [7]}
    write(out, sidecar(dedup), codes, npy_dir=tmp_path / "npy")
    assert list(read_units(out)) == ["a", "b", "c"]
    got = load_units(out, 16)
    assert {k: v.tolist() for k, v in got.items()} == codes
    assert np.load(tmp_path / "npy" / "b.npy").tolist() == [3, 3, 1]
    assert durations_path(out).exists() == dedup and sidecar_path(out).exists()
    assert not (tmp_path / "u.txt.partial").exists()


def test_a_resumed_write_keeps_id_order_and_the_finished_lines(tmp_path):
    out = tmp_path / "u.txt"
    write(out, sidecar(True), {"c": [1, 1], "a": [2]})
    writer = UnitWriter(out, sidecar(True), None, overwrite=False)
    assert writer.done() == {"a", "c"}
    writer.add("b", np.array([5, 5, 5]))
    writer.add("d", np.array([4]))
    writer.finish([("/x.wav", "too short")])
    assert list(read_units(out)) == ["a", "b", "c", "d"]
    assert (tmp_path / "u.txt.durations").read_text() == "a\t1\nb\t3\nc\t2\nd\t1\n"
    assert (tmp_path / "u.txt.skipped.tsv").read_text() == "/x.wav\ttoo short\n"


def test_an_output_of_other_settings_is_not_resumed(tmp_path):
    out = tmp_path / "u.txt"
    write(out, sidecar(), {"a": [1]})
    with pytest.raises(ValueError, match="checkpoint_sha256="):
        UnitWriter(out, sidecar(sha="cd" * 32), None, overwrite=False)
    with pytest.raises(ValueError, match="dedup=False"):
        UnitWriter(out, sidecar(dedup=True), None, overwrite=False)
    assert UnitWriter(out, sidecar(dedup=True), None, overwrite=True).done() == set()
