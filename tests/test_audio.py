"""Audio I/O: mono at the model rate from any rate/channel count, excerpts, bad-file reasons, atomic writes."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import tone

from audio_vqvae.audio import (
    AudioError,
    audio_info,
    input_gain,
    load_audio,
    load_model_input,
    mu_law_decode,
    mu_law_encode,
    normalize_peak,
    prepare_waveform,
    save_audio,
    scale,
    scan_audio,
)
from audio_vqvae.data import Utterance, load_wavs
from audio_vqvae.io import atomic_write


def test_stereo_44k_becomes_mono_16k(tmp_path, write_tone):
    path = write_tone(tmp_path / "a.wav", seconds=1.5, sr=44100, channels=2, freq=200.0)
    wav = load_audio(path, 16000)
    assert wav.dtype == torch.float32 and wav.shape == (24000,)
    expected = tone(1.5, 16000, channels=2, freq=200.0).mean(axis=1)  # 200 and 400 Hz: far below both Nyquists
    assert np.abs(wav.numpy()[100:-100] - expected[100:-100]).max() < 1e-3


def test_8k_is_upsampled_to_16k(tmp_path, write_tone):
    path = write_tone(tmp_path / "a.flac", seconds=0.75, sr=8000, freq=300.0)
    wav = load_audio(path, 16000)
    assert wav.shape == (12000,)
    assert np.abs(wav.numpy()[100:-100] - tone(0.75, 16000, freq=300.0)[100:-100, 0]).max() < 1e-3


@pytest.mark.parametrize("sr", [16000, 44100, 22050])
def test_excerpt_equals_slice_of_whole_file(tmp_path, write_tone, sr):
    path = write_tone(tmp_path / "a.wav", seconds=1.2, sr=sr, channels=2, subtype="FLOAT")
    whole = load_audio(path, 16000)
    for start in (0, 1, 777, 9000, len(whole) - 300):
        part = load_audio(path, 16000, start, 1000)
        ref = whole[start : start + 1000]
        assert part.shape == ref.shape
        assert torch.allclose(part, ref, atol=1e-5)


def test_peak_normalisation(tmp_path, write_tone):
    path = write_tone(tmp_path / "a.wav", seconds=0.5)
    assert load_audio(path, 16000, peak=0.9).abs().max() == pytest.approx(0.9, abs=1e-6)
    assert torch.equal(normalize_peak(torch.zeros(100), 0.9), torch.zeros(100))  # silence is not blown up


def test_prepare_waveform_downmixes_and_resamples():
    stereo = torch.from_numpy(tone(0.5, 8000, channels=2).T.copy())  # [2, T]
    mono = prepare_waveform(stereo, 8000, 16000)
    assert mono.shape == (8000,)
    assert np.abs(mono.numpy()[100:-100] - tone(0.5, 16000, channels=2).mean(1)[100:-100]).max() < 1e-3


def _nonfinite(value: float) -> np.ndarray:
    x = tone(0.5)
    x[100] = value
    return x


def _truncate(path, x: np.ndarray) -> None:
    """Write x, then cut the file to half its bytes (as an interrupted copy would)."""
    sf.write(path, x, 16000)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


BAD_FILES = {
    "empty.wav": (lambda p: p.write_bytes(b""), "empty file"),
    "noise.flac": (lambda p: p.write_bytes(np.random.default_rng(0).bytes(5000)), "not audio"),
    "text.wav": (lambda p: p.write_text("this is not audio\n" * 50), "not audio"),
    "no_frames.wav": (lambda p: sf.write(p, np.zeros((0, 1), np.float32), 16000), "empty"),
    "truncated.wav": (lambda p: _truncate(p, tone(1.0)), "truncated"),
    "truncated.flac": (lambda p: _truncate(p, tone(1.0)), "undecodable"),
    "silent.flac": (lambda p: sf.write(p, np.zeros((16000, 1), np.float32), 16000), "silent"),
    "nan.wav": (lambda p: sf.write(p, _nonfinite(np.nan), 16000, subtype="FLOAT"), "non-finite"),
    "inf.wav": (lambda p: sf.write(p, _nonfinite(np.inf), 16000, subtype="FLOAT"), "non-finite"),
}


def make_bad_file(directory, name):
    """Write the bad file `name` of BAD_FILES into directory; returns (path, expected reason substring)."""
    make, reason = BAD_FILES[name]
    path = directory / name
    make(path)
    return path, reason


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_scan_names_what_is_wrong(tmp_path, name):
    path, reason = make_bad_file(tmp_path, name)
    with pytest.raises(AudioError, match=reason):
        scan_audio(path)


def test_header_check_is_cheap_but_catches_structural_damage(tmp_path):
    for name in ("empty.wav", "noise.flac", "text.wav", "no_frames.wav", "truncated.wav"):
        with pytest.raises(AudioError):
            audio_info(make_bad_file(tmp_path, name)[0])
    for name in ("silent.flac", "nan.wav", "truncated.flac"):  # only a full decode finds these
        assert audio_info(make_bad_file(tmp_path, name)[0]).frames > 0


def test_save_audio_round_trip_leaves_no_temp_files(tmp_path):
    wav = torch.from_numpy(tone(0.25)[:, 0])
    for name in ("a.wav", "a.flac"):
        save_audio(tmp_path / name, wav.unsqueeze(0), 16000)
        back, sr = sf.read(tmp_path / name, dtype="float32")
        assert sr == 16000 and np.abs(back - wav.numpy()).max() < 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.flac", "a.wav"]


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    path = tmp_path / "f.txt"
    with atomic_write(path) as f:
        f.write("old")
    with pytest.raises(RuntimeError), atomic_write(path) as f:
        f.write("partial new")
        raise RuntimeError("crash mid-write")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]
    with atomic_write(path, "wb") as f:
        f.write(b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"


def test_mu_law_round_trip():
    x = torch.linspace(-1, 1, 1001)
    classes = mu_law_encode(x)
    assert classes.min() == 0 and classes.max() == 255
    assert (mu_law_decode(classes) - x).abs().max() < 0.03


def test_mu_law_maps_non_finite_samples_to_valid_classes():
    classes = mu_law_encode(torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, 2.0]))
    assert classes.tolist() == [128, 255, 0, 128, 255]  # NaN -> silence, inf and out of range -> the end classes


@pytest.mark.parametrize("peak_normalize", [None, 0.9])
def test_one_path_from_a_file_to_model_input(tmp_path, write_tone, peak_normalize):
    """load_model_input (training, validation, evaluation) equals preparing the decoded array in memory (as
    VQVAE.prepare does), an excerpt of it is the same slice, and data.load_wavs reads through it."""
    path = write_tone(tmp_path / "a.wav", seconds=1.0, sr=22050, channels=2, freq=200.0)
    array, sr = sf.read(path, dtype="float32")
    peak = float(np.abs(array).max())  # the gain is set by the file's peak before downmix and resampling
    expected = scale(prepare_waveform(array, sr, 16000), input_gain(peak, peak_normalize))
    whole = load_model_input(path, 16000, peak_normalize)
    torch.testing.assert_close(whole, expected)
    torch.testing.assert_close(load_model_input(path, 16000, peak_normalize, peak, 4000, 3000), whole[4000:7000])
    utt = Utterance("a", str(path), "s", 1.0, peak=peak)
    np.testing.assert_allclose(load_wavs([utt], 16000, 0.5, peak_normalize)["a"], whole[:8000].numpy(), atol=1e-5)
