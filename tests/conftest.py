"""Shared fixtures: generated test audio and data configs built from the shipped YAML files."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import soundfile as sf
from helpers import make_checkpoint, tiny_speech_checkpoint, tone, write_mixed_corpus
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from audio_vqvae.config import CONFIG_DIR


@pytest.fixture
def write_tone() -> Callable[..., Path]:
    """write_tone(path, seconds, sr=16000, channels=1, freq=220, subtype=None) -> path; creates parent dirs."""

    def write(path: Path, seconds: float = 1.0, sr: int = 16000, channels: int = 1, freq: float = 220.0,
              subtype: str | None = None) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, tone(seconds, sr, channels, freq), sr, subtype=subtype)
        return path

    return write


@pytest.fixture
def data_cfg() -> Callable[..., DictConfig]:
    """data_cfg(name, **overrides) -> the `data` node of configs/data/<name>.yaml with overrides (16 kHz model)."""

    def make(name: str, **overrides) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            data = compose("train", overrides=[f"data={name}"]).data  # its defaults (data/base.yaml) applied
        data = OmegaConf.merge(OmegaConf.to_container(data), overrides)
        return OmegaConf.create({"model": {"sample_rate": 16000}, "data": data}).data

    return make


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A tiny VQVAE checkpoint (tests/helpers.make_checkpoint), one per test module."""
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def model(ckpt: Path):
    """The tiny checkpoint loaded as a VQVAE in eval mode."""
    from audio_vqvae.model import VQVAE

    return VQVAE.from_checkpoint(str(ckpt))


@pytest.fixture(scope="module")
def speech_ckpt(tmp_path_factory) -> Path:
    """A tiny checkpoint with an (untrained) speech path (tests/helpers.tiny_speech_checkpoint), one per module."""
    return tiny_speech_checkpoint(tmp_path_factory.mktemp("speech") / "speech.pt")


@pytest.fixture
def corpus(tmp_path) -> Path:
    """tmp_path/wavs holding `helpers.write_mixed_corpus`: good files of several kinds and three unusable ones."""
    return write_mixed_corpus(tmp_path / "wavs")
