"""Extraction: chunked = whole-file (units and F0), batching, peak normalisation, bad files, shards, manifest ids."""
import numpy as np
import pytest
import soundfile as sf
from helpers import assert_same_units, tone, write_wav

from audio_vqvae.audio import load_audio
from audio_vqvae.data import Utterance
from audio_vqvae.extract import encode_utterances, plan_pieces, shard
from audio_vqvae.model import VQVAE


def test_shards_partition_in_order():
    items = list(range(10))
    for n in (1, 3, 4, 10, 12):
        assert [x for i in range(n) for x in shard(items, i, n)] == items


@pytest.mark.parametrize("n", [15, 16, 17, 95, 160, 1001])
@pytest.mark.parametrize("chunk", [16, 48, 160])
def test_pieces_cover_every_frame_once(n, chunk):
    pieces = plan_pieces(n, 16, chunk, 48)
    frames = [f for p in pieces for f in range(p.start // 16 + p.skip, p.start // 16 + p.skip + p.frames)]
    assert frames == list(range(n // 16))
    assert all(p.stop <= n and (p.stop - p.start) // 16 >= p.skip + p.frames for p in pieces)


# ---- chunked encoding -------------------------------------------------------------------------------------------


def test_chunked_extraction_of_a_long_file_equals_whole_file(model, tmp_path):
    path = write_wav(tmp_path / "long.wav", 20.0 + 7 / 16000, seed=5)  # 20 s, not a whole number of frames
    (_, codes, _), = encode_utterances(model, [Utterance("long", str(path), "", 20.0)], batch_size=3, chunk_seconds=2.0)
    assert_same_units(codes, model, path)
    assert len(np.unique(codes)) > 8  # the test is not vacuous


@pytest.mark.parametrize("sample_rate,channels", [(48000, 1), (22050, 2)])
def test_chunked_extraction_is_exact_for_other_rates_and_channels(model, tmp_path, sample_rate, channels):
    path = write_wav(tmp_path / "x.wav", 5.3, sample_rate=sample_rate, seed=6, channels=channels)
    (_, codes, _), = encode_utterances(model, [Utterance("x", str(path), "", 5.3)], batch_size=2, chunk_seconds=0.7)
    assert_same_units(codes, model, path)


def test_batches_mix_utterances_and_pieces_exactly(model, corpus):
    good = [corpus / "spk1" / "a.wav", corpus / "spk1" / "b.wav", corpus / "spk2" / "c.wav", corpus / "spk2" / "d.wav"]
    utts = [Utterance(p.stem, str(p), "", 1.0) for p in good]
    results = list(encode_utterances(model, utts, batch_size=3, chunk_seconds=0.1))
    assert [u.id for u, _, _ in results] == ["a", "b", "c", "d"]
    for (_, codes, _), path in zip(results, good):
        assert_same_units(codes, model, path)


def test_peak_normalisation_scales_the_whole_file(model, tmp_path):
    path = write_wav(tmp_path / "p.wav", 3.0, seed=7)
    model.peak_normalize = 0.3
    try:
        (_, codes, _), = encode_utterances(model, [Utterance("p", str(path), "", 3.0)], 2, 0.5)
    finally:
        model.peak_normalize = None
    assert_same_units(codes, model, path, gain=0.3 / float(load_audio(path, 16000).abs().max()))


def test_bad_files_are_reported_and_the_rest_go_on(model, corpus, tmp_path):
    utts = [Utterance(p.stem, str(p), "", 1.0) for p in
            [corpus / "short.wav", corpus / "spk1" / "a.wav", corpus / "empty.wav", corpus / "spk2" / "d.wav"]]
    results = {u.id: r for u, r, _ in encode_utterances(model, utts, batch_size=2)}
    assert "too short" in results["short"] and "empty" in results["empty"]
    assert isinstance(results["a"], np.ndarray) and isinstance(results["d"], np.ndarray)




# ---- F0 -----------------------------------------------------------------------------------------------------------


def test_f0_of_a_chunked_file_is_the_contour_of_the_whole_prepared_file(speech_ckpt, tmp_path):
    """Tracked on the whole file however it is chunked and resampled: the contour `VQVAE.convert` uses (the block
    resampler's last-bit differences may flip a frame's voicing at a voicing edge, nothing more)."""
    model = VQVAE.from_checkpoint(str(speech_ckpt))
    model.peak_normalize = 0.5
    wav = np.concatenate([tone(0.6, 22050, freq=150.0)[:, 0], np.zeros(3000, np.float32), tone(0.5, 22050, freq=230.0,
                                                                                                amp=0.2)[:, 0]])
    sf.write(tmp_path / "v.wav", wav, 22050, subtype="FLOAT")
    (_, codes, contour), = encode_utterances(model, [Utterance("v", str(tmp_path / "v.wav"), "", 1.3)], 2, 0.2,
                                             f0=True)
    (_, plain, none), = encode_utterances(model, [Utterance("v", str(tmp_path / "v.wav"), "", 1.3)], 2, 0.2)
    n = len(model.prepare(wav, 22050))
    whole = model.f0_contour(model.prepare(wav, 22050))
    assert none is None and (codes == plain).all() and len(codes) == n // model.hop
    assert len(contour[0]) == n // model.speech.f0_hop  # every F0 frame of the file, up to one unit past the units
    same = contour[1] == whole[1]
    assert same.mean() > 0.995 and (contour[0][same] == whole[0][same]).all()
    voiced = contour[0][contour[1]]
    assert 0.6 < contour[1].mean() < 1 and abs(np.median(voiced[:50]) - 150) < 2  # the test is not vacuous
