"""Run under torchrun by `helpers.torchrun`: `ddp_worker.py OUT CONFIG overrides...` trains config `train` (the VQ-VAE),
`prior` (the unit prior) or `speech_train` (the speech path) and saves this rank's final weights as OUT/rank<r>.pt.

With NAN_ON_RANK=r, rank r's third training loss is NaN (only that rank sees a non-finite loss). A NaN input sample
would not do: the decoder's mu-law classes of NaN are out of range (an IndexError before any loss).
"""
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from hydra import compose, initialize_config_dir

from audio_vqvae.config import CONFIG_DIR
from audio_vqvae.model import VQVAE
from audio_vqvae.prior.training import train_prior
from audio_vqvae.training.speech import train_speech
from audio_vqvae.training.vqvae import train


def poison_one_batch(rank: int) -> None:
    """Make this rank's third training loss NaN."""
    forward, calls = VQVAE.forward, {"n": 0}

    def forward_with_nan(self, wav, speaker):
        out = forward(self, wav, speaker)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 3:
                out.loss = out.loss * float("nan")
        return out

    if rank == int(os.environ.get("NAN_ON_RANK", "-1")):
        VQVAE.forward = forward_with_nan


if __name__ == "__main__":
    poison_one_batch(int(os.environ["RANK"]))
    out, config = Path(sys.argv[1]), sys.argv[2]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config, overrides=sys.argv[3:])
    model = {"train": train, "prior": train_prior, "speech_train": train_speech}[config](cfg)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / f"rank{dist.get_rank()}.pt")
    dist.destroy_process_group()
