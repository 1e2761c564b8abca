"""Prior training app (or under torchrun):

    audio-vqvae-train-prior vqvae=pretrained/demo-units data=demo [overrides]   # units extracted into the run dir
    audio-vqvae-train-prior units.path=units.txt [overrides]                     # units from audio-vqvae-units

Parses the Hydra config tree (audio_vqvae/configs, top config prior.yaml) and calls `prior.training.train_prior`.
"""
from __future__ import annotations

import hydra
import torch.distributed as dist
from omegaconf import DictConfig

from ..config import CONFIG_DIR
from ..prior.training import train_prior


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="prior")
def main(cfg: DictConfig) -> None:
    """Console entry point `audio-vqvae-train-prior`; exits 0 when finished or stopped by SIGTERM."""
    try:
        train_prior(cfg)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
