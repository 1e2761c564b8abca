"""Run by tests/test_train.py under torchrun: train with the given overrides, save this rank's final weights."""
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from hydra import compose, initialize_config_dir

from audio_vqvae.train import train

if __name__ == "__main__":
    out = Path(sys.argv[1])
    configs = Path(__file__).resolve().parents[1] / "audio_vqvae" / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = compose("train", overrides=sys.argv[2:])
    model = train(cfg)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / f"rank{dist.get_rank()}.pt")
    dist.destroy_process_group()
