"""audio-vqvae: discrete speech units from raw waveforms with a VQ-VAE."""
__version__ = "0.1.0"

from .model import VQVAE  # noqa: E402  (the public entry point: `from audio_vqvae import VQVAE`)

__all__ = ["VQVAE", "__version__"]
