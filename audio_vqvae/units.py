"""Transitional: the names evaluate.py still imports from here. Remove once evaluate.py imports
`collect_utterances` from `audio_vqvae.extract` and `load_data_config` from `audio_vqvae.config`."""
from .config import load_data_config
from .extract import collect_utterances

__all__ = ["collect_utterances", "load_data_config"]
