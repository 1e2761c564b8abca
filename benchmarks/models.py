"""The benchmarked models, built from the shipped model configs (configs/model/<name>.yaml, composed by Hydra)."""
from __future__ import annotations

from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from audio_vqvae.config import CONFIG_DIR
from audio_vqvae.model import VQVAE

SPEAKERS = ("s0", "s1", "s2", "s3")


def model_config(name: str) -> dict[str, Any]:
    """The resolved `model` node of configs/model/<name>.yaml (its Hydra defaults applied)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={name}"])
    return OmegaConf.to_container(cfg.model, resolve=True)


def build(name: str, seed: int = 0, **decoder: Any) -> VQVAE:
    """A randomly initialised VQVAE of config `name` (decoder keys overridden by `decoder`), float32 on the CPU."""
    cfg = model_config(name)
    cfg["decoder"].update(decoder)
    torch.manual_seed(seed)
    return VQVAE.from_config(cfg, list(SPEAKERS))
