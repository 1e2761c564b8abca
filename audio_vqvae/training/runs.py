"""A training run's directory: which checkpoint a start resumes from, the identity a resume must match, and the
files written beside the checkpoints (config.yaml, speakers.json, version.json)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ..io import atomic_write
from ..version import __version__

RESUME_MODES = ("never", "auto", "always")
RESUME_ALIASES = {"false": "never", "true": "always"}  # the booleans of earlier versions


def resume_mode(value: Any) -> str:
    """trainer.resume -> never | auto | always | a checkpoint path (true/false are aliases of always/never)."""
    text = "never" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return RESUME_ALIASES.get(text, text)


def resume_checkpoint(resume: Any, run_dir: Path) -> Path | None:
    """The checkpoint to resume from, or None to start fresh; refuse to overwrite an existing run.

    never: start, and refuse if run_dir already holds a run; auto: resume run_dir's last.pt when there is one, else
    start (one command safe to re-submit after preemption); always: resume, error if there is none; else a path.
    """
    mode = resume_mode(resume)
    last = run_dir / "checkpoints" / "last.pt"
    if mode == "never":
        if last.exists():
            raise FileExistsError(f"{run_dir} already holds a run ({last}); continue it with trainer.resume=auto "
                                  "(or always), or pick another run_dir=...")
        return None
    if mode == "auto":
        return last if last.exists() else None
    path = last if mode == "always" else Path(mode)
    if not path.exists():
        raise FileNotFoundError(f"trainer.resume={resume}: no checkpoint at {path} (use trainer.resume=auto to start "
                                f"fresh when there is none; modes: {', '.join(RESUME_MODES)} or a path)")
    return path


def run_identity(cfg: DictConfig) -> dict[str, Any]:
    """The part of a config that must match for a resume to be the same run."""
    return {"model": OmegaConf.to_container(cfg.model, resolve=True), "data": cfg.data.name, "seed": cfg.seed}


def code_version() -> dict[str, str]:
    """Package version and, when run from a git checkout, the commit."""
    info = {"audio_vqvae": __version__, "torch": torch.__version__}
    try:
        root = Path(__file__).resolve().parent.parent
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def write_run_files(cfg: DictConfig, run_dir: Path, speakers: list[str]) -> None:
    """config.yaml (resolved), speakers.json and version.json, each written atomically."""
    with atomic_write(run_dir / "config.yaml") as f:
        f.write(OmegaConf.to_yaml(cfg, resolve=True))
    with atomic_write(run_dir / "speakers.json") as f:
        json.dump(speakers, f, indent=1)
    with atomic_write(run_dir / "version.json") as f:
        json.dump(code_version(), f, indent=1)


def keep_step_checkpoints(ckpt_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` step-XXXXXXXX.pt files."""
    for old in sorted(ckpt_dir.glob("step-*.pt"))[:-keep]:
        old.unlink(missing_ok=True)
