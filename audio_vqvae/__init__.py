"""audio-vqvae: discrete speech units from raw waveforms with a VQ-VAE.

The public entry points: `from audio_vqvae import VQVAE, extract_units`.
"""
from .extract import extract_units
from .model import VQVAE
from .version import __version__

__all__ = ["VQVAE", "__version__", "extract_units"]
