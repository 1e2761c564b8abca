"""Speech-path training app (or under torchrun): F0 predictor + one-pass source-filter decoder on a trained VQ-VAE's
frozen units, on the corpus and split that VQ-VAE was trained on:

    audio-vqvae-train-speech vqvae=runs/demo/checkpoints/best.pt [overrides]
    audio-vqvae-train-speech vqvae=pretrained/demo-units speech=nsf run_dir=runs/speech-nsf

Parses the Hydra config tree (audio_vqvae/configs, top config speech_train.yaml) and calls
`training.speech.train_speech`; its checkpoints are whole VQ-VAE checkpoints with the speech path.
"""
from __future__ import annotations

import hydra
import torch.distributed as dist
from omegaconf import DictConfig

from ..config import CONFIG_DIR
from ..training.speech import train_speech


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="speech_train")
def main(cfg: DictConfig) -> None:
    """Console entry point `audio-vqvae-train-speech`; exits 0 when finished or stopped by SIGTERM."""
    try:
        train_speech(cfg)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
