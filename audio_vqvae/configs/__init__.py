"""Hydra config tree (packaged so that a non-editable install finds it; `config.CONFIG_DIR` points here)."""
