import time

import numpy as np
from helpers import write_wav

from audio_vqvae.alignments import Segment
from audio_vqvae.data import Utterance
from audio_vqvae.training.curves import CurveItem, curve_items, unit_curves


def test_unit_curves_on_aligned_and_unaligned_items(model, tmp_path):
    utts = [Utterance(f"u{i}", str(write_wav(tmp_path / f"u{i}.wav", 0.5, seed=i)), "p225", 0.5) for i in range(3)]
    segments = [Segment(0.0, 0.25, "a"), Segment(0.25, 0.5, "b")]
    items = curve_items(utts, model.sample_rate, None, {"u0": segments, "u2": segments}, n=2, max_seconds=0.3)
    assert [it.wav.size for it in items] == [4800, 4800] and items[0].segments == segments and items[1].segments
    model.train()
    start = time.perf_counter()
    m = unit_curves(model, items)
    assert time.perf_counter() - start < 10 and model.training  # mode restored
    assert set(m) == {"units/entropy_bits_per_second", "units/entropy_bits_per_second_dedup", "units/perplexity",
                      "units/agreement_gain_+6dB", "units/phone_purity", "units/pnmi"}
    assert 0 < m["units/entropy_bits_per_second_dedup"] <= m["units/entropy_bits_per_second"]
    assert 0 <= m["units/agreement_gain_+6dB"] <= 1 and 0 < m["units/phone_purity"] <= 1
    model.eval()
    silent = unit_curves(model, [CurveItem(np.zeros(1600, np.float32), None)])
    assert "units/pnmi" not in silent and silent["units/perplexity"] >= 1.0
    assert silent["units/agreement_gain_+6dB"] == 1.0  # silence stays silence
