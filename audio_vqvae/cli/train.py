"""Training app: `audio-vqvae-train [overrides]` or `torchrun --nproc_per_node=N -m audio_vqvae.cli.train ...`.

Parses the Hydra config tree (audio_vqvae/configs) and calls the library's `trainer.train`.
"""
from __future__ import annotations

import hydra
import torch.distributed as dist
from omegaconf import DictConfig

from ..config import CONFIG_DIR
from ..device import retain_freed_memory
from ..training.vqvae import train


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> None:
    """Console entry point `audio-vqvae-train`; exits 0 when finished or stopped by SIGTERM (last.pt written)."""
    retain_freed_memory()
    try:
        train(cfg)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
