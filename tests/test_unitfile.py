"""The units format: dedup round trip, line checks, resumable writer in utterance-id order, sidecar."""
import numpy as np
import pytest

from audio_vqvae.unitfile import (
    expand,
    read_units,
    run_length_encode,
)


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


