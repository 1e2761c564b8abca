"""The units format: dedup round trip, line checks, resumable writer in utterance-id order, sidecar, F0 file."""
import json

import numpy as np
import pytest

from audio_vqvae.unitfile import (
    FORMAT_VERSION,
    UnitsSidecar,
    UnitWriter,
    durations_path,
    expand,
    format_f0,
    load_f0,
    load_units,
    read_units,
    run_length_encode,
    sidecar_path,
)

F0_ENTRY = {"file": "u.txt.f0", "frame_rate": 500.0, "unit": "Hz", "tracker": "praat-ac", "range": [60.0, 600.0]}
"""An F0 entry of 500 frames per second: 2 F0 frames per unit of 64 samples at 16 kHz."""


def sidecar(dedup: bool = False, sha: str = "ab" * 32, f0: bool = False) -> UnitsSidecar:
    return UnitsSidecar(frame_rate=250.0, sample_rate=16000, hop=64, codebook_size=16, checkpoint="/ckpt.pt",
                        checkpoint_sha256=sha, dedup=dedup, durations="u.txt.durations" if dedup else None,
                        f0=F0_ENTRY if f0 else None)


def write(out, meta, codes: dict, npy_dir=None, overwrite=False, f0: dict | None = None) -> UnitWriter:
    """A UnitWriter that records `codes` ({id: array}, with `f0[id]` when given) in the given order and finishes."""
    writer = UnitWriter(out, meta, npy_dir, overwrite)
    for utt_id, c in codes.items():
        writer.add(utt_id, np.asarray(c), None if f0 is None else f0[utt_id])
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


# ---- F0 -----------------------------------------------------------------------------------------------------------


def contours(codes: dict, extra: int = 1, seed: int = 0) -> dict:
    """An F0 contour in Hz per utterance: 2 frames per unit + `extra`, some unvoiced (0), at 0.1 Hz resolution."""
    rng = np.random.default_rng(seed)
    out = {}
    for utt_id, c in codes.items():
        f0 = np.round(rng.uniform(70, 400, 2 * len(c) + extra), 1).astype(np.float32)
        out[utt_id] = np.where(rng.random(len(f0)) < 0.3, 0, f0).astype(np.float32)
    return out


@pytest.mark.parametrize("dedup", [False, True])
def test_f0_file_round_trips_bit_for_bit_beside_the_units(tmp_path, dedup):
    out = tmp_path / "u.txt"
    codes = {"b": [1, 1, 2, 3], "a": [5, 5, 5]}
    f0 = contours(codes)
    write(out, sidecar(dedup, f0=True), codes, f0=f0)
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["format_version"] == FORMAT_VERSION == 2 and meta["f0"] == F0_ENTRY
    assert [line.split("\t")[0] for line in (tmp_path / "u.txt.f0").read_text().splitlines()] == ["a", "b"]
    got = load_f0(out, load_units(out, 16))
    assert list(got) == ["a", "b"]
    for utt_id, (hz, voiced) in got.items():
        assert hz.dtype == np.float32 and (hz == f0[utt_id]).all() and (voiced == (f0[utt_id] > 0)).all()
    assert format_f0(np.array([0, 123.44, 80], np.float32)) == "0 123.4 80.0"


def test_a_resumed_write_with_f0_keeps_every_column(tmp_path):
    out = tmp_path / "u.txt"
    codes = {"a": [1, 2], "b": [3], "c": [4, 4]}
    f0 = contours(codes)
    writer = UnitWriter(out, sidecar(True, f0=True), None, overwrite=False)
    writer.add("c", np.asarray(codes["c"]), f0["c"])
    writer.finish([])
    with open(f"{out}.partial", "w") as journal:  # a killed second run: one utterance done, one torn line
        journal.write(f"a\t1 2\t1 1\t{format_f0(f0['a'])}\nb\t3\t1")
    write(out, sidecar(True, f0=True), {"b": codes["b"]}, f0=f0)
    assert {k: v[0].tolist() for k, v in load_f0(out, load_units(out, 16)).items()} == {
        k: v.tolist() for k, v in f0.items()}
    with pytest.raises(ValueError, match="written with f0=.*praat-ac.*, not None"):
        UnitWriter(out, sidecar(True), None, overwrite=False)


def test_an_old_sidecar_without_f0_still_reads_and_resumes(tmp_path):
    out = tmp_path / "u.txt"
    write(out, sidecar(), {"a": [1, 2]})
    old = json.loads(sidecar_path(out).read_text())
    del old["f0"]
    sidecar_path(out).write_text(json.dumps(old | {"format_version": 1}))
    assert UnitsSidecar.read(sidecar_path(out)).f0 is None
    assert load_f0(out, load_units(out, 16)) is None
    write(out, sidecar(), {"b": [3]})  # resumed, not refused
    assert {k: v.tolist() for k, v in load_units(out).items()} == {"a": [1, 2], "b": [3]}


@pytest.mark.parametrize("f0_text,message", [
    ("a\t100 0 0 0 0\nb\t0 0 0 0 0 0 0 0 0 0 0 0 0\n",
     r"u\.txt\.f0:2: utterance 'b': F0 contour of 13 frames does not fit its units: expected 2 to 4 frames"),
    ("a\t100 0 0\nb\t0 0 0\n", r"u\.txt\.f0:1: utterance 'a': F0 contour of 3 frames .* expected 4 to 6"),
    ("a\t100 0 0 0 0\nb\t0 x 0\n", r"u\.txt\.f0:2: F0 values must be numbers"),
    ("a\t100 0 0 0 0\nb\t0 -1 0\n", r"u\.txt\.f0:2: F0 of utterance 'b' must be finite and >= 0"),
    ("a\t100 0 0 0 0\nb\t0 0 0\nc\t0 0\n", r"u\.txt\.f0:3: utterance 'c' has no units"),
    ("a\t100 0 0 0 0\n", r"u\.txt\.f0: no F0 line for utterance 'b' of .*u\.txt \(1 F0 lines for 2 utterances\)"),
])
def test_an_f0_file_that_disagrees_with_its_units_names_the_file_and_line(tmp_path, f0_text, message):
    out = tmp_path / "u.txt"
    write(out, sidecar(f0=True), {"a": [1, 2], "b": [3]}, f0={"a": np.zeros(5), "b": np.zeros(2)})
    (tmp_path / "u.txt.f0").write_text(f0_text)
    with pytest.raises(ValueError, match=message):
        load_f0(out, load_units(out, 16))
