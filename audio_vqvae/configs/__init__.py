"""Hydra config tree (packaged so that a non-editable install finds it)."""
from pathlib import Path


def config_dir() -> Path:
    """The directory holding train.yaml and the config groups (model/, data/, trainer/)."""
    return Path(__file__).resolve().parent
