"""The speech path's training (training/speech.py): the VQ-VAE checkpoint's own split, exact resume, the model it
writes (stats, decode with a given or predicted contour, conversion), and its errors."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import make_checkpoint, tiny_model_config, torchrun
from hydra import compose, initialize_config_dir

from audio_vqvae.checkpoint import load_checkpoint, save_checkpoint
from audio_vqvae.config import CONFIG_DIR
from audio_vqvae.data import load_corpus, split_corpus
from audio_vqvae.f0 import F0Stats, log_f0_stats
from audio_vqvae.model import VQVAE, fit_contour, mapped_contour
from audio_vqvae.training.speech import SpeechFeatures, train_speech, vqvae_data

SR = 16000
VOICES = {"low": 110.0, "mid": 160.0, "high": 230.0}


def voice(f0: float, seconds: float, seed: int) -> np.ndarray:
    """A vowel-like harmonic signal at a gliding F0 around f0 (voiced for the tracker), float32 [T]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f = f0 * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(1, 3) * t))
    phase = 2 * np.pi * np.cumsum(f) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 8))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def corpus(root) -> None:
    """Three speakers x 4 utterances of 0.4-0.7 s under root/<speaker>/."""
    for s, (name, f0) in enumerate(VOICES.items()):
        (root / name).mkdir(parents=True)
        for i in range(4):
            sf.write(root / name / f"{name}_{i}.wav", voice(f0, 0.4 + 0.1 * i, 10 * s + i), SR)


def vqvae(tmp_path, seed: int = 7, **data) -> str:
    """A tiny VQ-VAE checkpoint whose config records a folder corpus and the split seed `seed`."""
    root = tmp_path / "wavs"
    if not root.exists():
        corpus(root)
    path = make_checkpoint(tmp_path / "vq.pt", speakers=tuple(VOICES))
    ckpt = load_checkpoint(path)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        node = compose("train", overrides=["data=folder", f"data.root={root}", "data.val_per_speaker=1",
                                           *[f"data.{k}={v}" for k, v in data.items()]]).data
    from omegaconf import OmegaConf

    data_cfg = OmegaConf.to_container(node, resolve=False) | {"sample_rate": SR}
    save_checkpoint(path, ckpt["model"], {"model": tiny_model_config(), "data": data_cfg, "seed": seed},
                    list(VOICES), 0)
    return str(path)


def config(run, ckpt, *overrides):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("speech_train", overrides=[
            f"vqvae={ckpt}", f"run_dir={run}", "device=cpu", "speech=tiny", "segment_frames=160",
            "trainer.batch_size=3", "trainer.val_every=2", "trainer.ckpt_every=2", "trainer.warmup_steps=1",
            "trainer.keep_last=1", "trainer.lr_schedule=constant", "trainer.num_workers=0", *overrides])


def test_features_follow_the_checkpoints_split_not_the_runs_seed(tmp_path):
    ckpt = vqvae(tmp_path, seed=7)
    model = train_speech(config(tmp_path / "run", ckpt, "seed=1234", "trainer.max_steps=1"))
    saved = load_checkpoint(ckpt)["config"]
    split = split_corpus(load_corpus(vqvae_data(saved, {})), vqvae_data(saved, {}), 7)
    feats = {k: SpeechFeatures.load(tmp_path / "run" / "features" / f"{k}.npz") for k in ("train", "val")}
    assert feats["train"].ids == [u.id for u in split.train] and feats["val"].ids == [u.id for u in split.val]
    other = split_corpus(load_corpus(vqvae_data(saved, {})), vqvae_data(saved, {}), 1234)
    assert [u.id for u in other.val] != [u.id for u in split.val]  # the run's own seed would have split otherwise
    for f0, voiced, codes in zip(feats["train"].f0, feats["train"].voiced, feats["train"].codes):
        assert len(f0) == len(voiced) >= len(codes) and voiced.mean() > 0.8  # 1 ms frames, 16-sample units
    stats = model.speech.log_f0_stats
    assert stats[:, 1].gt(0).all()
    assert np.exp(stats[:, 0].numpy()).tolist() == pytest.approx(list(VOICES.values()), rel=0.05)


def test_split_keys_cannot_be_overridden(tmp_path):
    ckpt = vqvae(tmp_path)
    with pytest.raises(ValueError, match="data.val_per_speaker: the speech path trains on the VQ-VAE's own split"):
        train_speech(config(tmp_path / "run", ckpt, "+data.val_per_speaker=2", "trainer.max_steps=1"))


def test_resumed_speech_training_matches_an_uninterrupted_run(tmp_path):
    ckpt = vqvae(tmp_path)
    full = train_speech(config(tmp_path / "a", ckpt, "trainer.max_steps=4"))
    train_speech(config(tmp_path / "b", ckpt, "trainer.max_steps=2"))
    resumed = train_speech(config(tmp_path / "b", ckpt, "trainer.max_steps=4", "trainer.resume=auto"))
    for k, v in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=0, msg=k)
    frozen = VQVAE.from_checkpoint(ckpt).state_dict()
    assert all(torch.equal(full.state_dict()[k], v) for k, v in frozen.items())  # only the speech path trained
    with pytest.raises(ValueError, match="not a resumable checkpoint of this speech run"):
        train_speech(config(tmp_path / "b", ckpt, "trainer.max_steps=6", "trainer.resume=auto", "segment_frames=150"))


def test_the_checkpoint_decodes_with_given_and_predicted_contours_and_converts(tmp_path):
    ckpt = vqvae(tmp_path)
    train_speech(config(tmp_path / "run", ckpt, "trainer.max_steps=2"))
    model = VQVAE.from_checkpoint(str(tmp_path / "run" / "checkpoints" / "last.pt"))
    wav = voice(160.0, 0.5, 99)
    codes = model.encode(wav, SR)
    contour = model.f0_contour(model.prepare(wav, SR).numpy())
    gen = lambda: torch.Generator().manual_seed(0)
    given = model.decode(codes, "mid", f0=contour, generator=gen())
    assert given.shape == (len(codes) * model.hop,) and torch.isfinite(given).all()
    assert torch.equal(given, model.decode([codes], ["mid"], f0=[contour], generator=gen())[0])
    assert model.decode(codes, "mid", generator=gen()).shape == given.shape  # predicted contour
    converted = model.convert(wav, SR, "low", f0="source", generator=gen())
    assert torch.equal(converted, model.decode(codes, "low", f0=contour, generator=gen()))
    assert model.decode(codes, "mid", decoder="wavenet").shape == given.shape
    with pytest.raises(ValueError, match="does not fit its units"):
        model.decode(codes, "mid", f0=(contour[0][:-30], contour[1][:-30]))
    with pytest.raises(ValueError, match="decoder=wavenet takes no F0 contour"):
        model.decode(codes, "mid", decoder="wavenet", f0=contour)
    model.speech.log_f0_stats[0] = 0.0  # as for a speaker without voiced training frames
    with pytest.raises(ValueError, match="speaker 'low' has no voiced training frames"):
        model.convert(wav, SR, "low")


def test_a_checkpoint_without_a_speech_path_refuses_the_source_filter_decoder(tmp_path):
    model = VQVAE.from_checkpoint(str(make_checkpoint(tmp_path / "vq.pt")))
    assert model.resolve_decoder("auto") == "wavenet"
    with pytest.raises(ValueError, match="decoder=source_filter: this checkpoint has no speech path"):
        model.decode(torch.zeros(4, dtype=torch.long), "p225", decoder="source_filter")
    with pytest.raises(ValueError, match="F0: this checkpoint has no speech path"):
        model.f0_contour(np.zeros(1600, np.float32))


def test_mapped_contour_takes_the_targets_statistics_and_keeps_voicing():
    rng = np.random.default_rng(0)
    f0 = np.exp(rng.normal(np.log(120), 0.1, 200)).astype(np.float32)
    voiced = rng.random(200) > 0.3
    f0[~voiced] = 0
    target = F0Stats(np.log(220.0), 0.2)
    mapped, v = mapped_contour((f0, voiced), target)
    stats = log_f0_stats([(mapped, v)])
    assert stats.mean == pytest.approx(target.mean, abs=1e-4) and stats.std == pytest.approx(target.std, abs=1e-4)
    assert (v == voiced).all() and (mapped[~voiced] == 0).all()
    silent = (np.zeros(10, np.float32), np.zeros(10, bool))
    assert mapped_contour(silent, target) is silent


def test_fit_contour_crops_pads_and_refuses_other_lengths():
    f0, voiced = np.full(43, 100.0, np.float32), np.ones(43, bool)
    a, b = fit_contour((f0, voiced), 40, 48, torch.device("cpu"), 4)
    assert a.shape == b.shape == (48,) and a[:40].eq(100).all() and not a[40:].any() and not b[40:].any()
    with pytest.raises(ValueError, match="expected 36 to 40 frames"):
        fit_contour((f0, voiced), 36, 48, torch.device("cpu"), 4)


def test_torchrun_two_processes_train_one_speech_path(tmp_path):
    """DDP with 2 gloo ranks over the speech path only: both end with the same weights, the frozen VQ-VAE untouched;
    rank 0 writes the features and the checkpoints."""
    ckpt = vqvae(tmp_path)
    a, b = torchrun(tmp_path / "ranks", "speech_train", [
        f"vqvae={ckpt}", f"run_dir={tmp_path / 'run'}", "device=cpu", "speech=tiny", "segment_frames=160",
        "trainer.batch_size=2", "trainer.max_steps=3", "trainer.val_every=3", "trainer.ckpt_every=3"])
    assert a.keys() == b.keys() and all(torch.equal(v, b[k]) for k, v in a.items())
    frozen = VQVAE.from_checkpoint(ckpt).state_dict()
    assert all(torch.equal(a[k], v) for k, v in frozen.items())
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert saved["step"] == 3 and saved["resume"]["identity"]["world_size"] == 2
