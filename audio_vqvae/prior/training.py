"""Training the unit prior (stage two) on a units file, or straight from a corpus and a VQ-VAE checkpoint: a sibling
of the VQ-VAE trainer on the same solver base (training/base.py: the LR schedule, AMP, RNG state, SIGTERM handling,
validation cadence, save/restore), with its run directory and resume choice (training/runs.py), atomic checkpoints
(checkpoint.py), DDP (training/distributed.py), TensorBoard and tqdm. From a corpus, rank 0 first writes the units of its training and validation
utterances into <run_dir>/units/ with `extract.write_units` (what `audio-vqvae-units` runs; a rerun resumes it).

Batches are a function of (seed, rank, step) only (`prior.data.training_batch`), so a resumed run draws what an
uninterrupted one would. A run directory holds config.yaml, speakers.json, version.json, tb/ and
checkpoints/{last,best,step-XXXXXXXX}.pt; best.pt is kept by validation NLL per unit.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ..checkpoint import save_checkpoint
from ..data import load_corpus, split_corpus
from ..extract import write_units
from ..model import VQVAE
from ..training.base import RunState, Solver, TrainerConfig, seed_everything, start_run
from ..training.distributed import Distributed
from ..training.runs import write_run_files
from ..unitfile import UnitsSidecar, sidecar_path, write_speaker_map
from .data import UnitSet, load_unit_sets, training_batch, unit_batch
from .model import UnitPrior, length_mask

log = logging.getLogger(__name__)


@dataclass
class PriorState(RunState):
    """What resume restores besides the base's `RunState`."""

    best_nll: float = float("inf")


def nll_metrics(total_nll: float, n_units: int) -> dict[str, float]:
    """Summed NLL (nats) over n_units -> nats and bits per unit, and the unit perplexity exp(nats per unit)."""
    per_unit = total_nll / n_units
    return {"nll_per_unit": per_unit, "bits_per_unit": per_unit / math.log(2), "perplexity": math.exp(per_unit)}


@torch.no_grad()
def score_unit_set(prior: UnitPrior, data: UnitSet, batch_size: int = 16) -> dict[str, tuple[int, float]]:
    """log p(z) of each whole utterance under the prior (eval mode) -> {utt_id: (n_units, log_prob nats)}; speakers
    the prior does not know (index -1) are marginalised over its speakers (`UnitPrior.marginal_log_prob`)."""
    was_training, scores = prior.training, {}
    prior.eval()
    order = sorted(range(len(data)), key=lambda i: len(data.units[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        units, lengths = unit_batch([data.units[i] for i in idx])
        speaker = torch.tensor([data.speakers[i] for i in idx])
        logp = prior.marginal_log_prob(units.to(prior.device), lengths.to(prior.device), speaker)
        scores |= {data.ids[i]: (int(n), float(lp)) for i, n, lp in zip(idx, lengths, logp)}
    prior.train(was_training)
    return {u: scores[u] for u in data.ids}


def evaluate_prior(prior: UnitPrior, data: UnitSet, batch_size: int = 16) -> dict[str, float]:
    """NLL of whole utterances under the prior: `nll_metrics` plus the unit count."""
    scores = score_unit_set(prior, data, batch_size).values()
    count = sum(n for n, _ in scores)
    return {**nll_metrics(-sum(lp for _, lp in scores), count), "n_units": count}


class PriorTrainer(Solver):
    """Trains a UnitPrior per a prior run config (configs/prior.yaml); rank 0 validates, logs and checkpoints."""

    def __init__(self, cfg: DictConfig, run_dir: Path, train: UnitSet, val: UnitSet, speakers: list[str],
                 meta: dict[str, Any], ddp: Distributed, device: torch.device) -> None:
        self.cfg, self.tcfg, self.run_dir, self.ckpt_dir = cfg, TrainerConfig.from_config(cfg.trainer), run_dir, run_dir / "checkpoints"
        self.train_set, self.val_set, self.speakers, self.meta = train, val, speakers, meta
        self.ddp, self.device = ddp, device
        t = self.tcfg
        self.setup(UnitPrior.from_config(cfg.prior, meta["codebook_size"], speakers, cfg.units.max_frames).to(device),
                   lambda params: torch.optim.AdamW(params, lr=t.lr, betas=t.adam_betas), PriorState())

    def identity(self) -> dict[str, Any]:
        """What must match for a resume to be the same run."""
        return {"prior": OmegaConf.to_container(self.cfg.prior, resolve=True), "speakers": self.speakers,
                "units": {k: None if v is None else str(v)
                          for k, v in OmegaConf.to_container(self.cfg.units, resolve=True).items()},
                "data": OmegaConf.to_container(self.cfg.data, resolve=True) if "data" in self.cfg else None,
                "seed": self.cfg.seed, "world_size": self.ddp.world_size, "batch_size": self.tcfg.batch_size}

    def save(self, name: str, rng: list[dict[str, Any]], metrics: dict[str, float] | None = None) -> None:
        resume = {**self.opt.state_dict(), "state": dict(self.state.__dict__), "rng": rng, "identity": self.identity()}
        config = {**OmegaConf.to_container(self.cfg, resolve=True), **self.meta}
        save_checkpoint(self.ckpt_dir / name, self.model.state_dict(), config, self.speakers, self.state.step, resume,
                        metrics)

    def check_resumable(self, path: Path, ckpt: dict[str, Any]) -> None:
        """Refuse an export or a checkpoint of another prior run."""
        saved = ckpt["resume"]
        if saved is None:
            raise ValueError(f"{path}: holds no resume state (it is an export); resume from last.pt")
        old, new = saved.get("identity") or {}, self.identity()
        differ = [f"{k}={old.get(k)!r}, this run {new[k]!r}" for k in new if old.get(k) != new[k]]
        if differ:
            raise ValueError(f"{path}: not a resumable checkpoint of this prior run (saved with {'; '.join(differ)}); "
                             "resume needs the same config, units settings, speakers, seed, world_size and batch_size, "
                             "or pick another run_dir=...")

    def batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """This step's batch on the device: a function of seed, rank, step and the steps skipped so far, so that the
        retry of a skipped step draws another batch and a resumed run the same one."""
        s = self.state
        seed = int(np.random.SeedSequence([self.cfg.seed, self.ddp.rank, s.step, s.nonfinite_total]).generate_state(1)[0])
        units, lengths, speaker, previous = training_batch(self.train_set, self.tcfg.batch_size,
                                                           self.cfg.units.max_frames, torch.Generator().manual_seed(seed))
        return (units.to(self.device), lengths.to(self.device),
                speaker.to(self.device) if self.model.speakers else None, previous.to(self.device))

    def train_step(self) -> float | None:
        """One optimisation step; returns the loss (nats per unit), None when non-finite on any rank (skipped)."""
        units, lengths, speaker, previous = self.batch()
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            logits = self.net(units, speaker, previous)
        mask = length_mask(lengths, units.shape[1])
        nll = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), units, reduction="none")
        loss = (nll * mask).sum() / mask.sum()
        self.opt.optimizer.zero_grad(set_to_none=True)
        if not self.ddp.agree(torch.isfinite(loss.detach()), every=True):
            self.count_nonfinite(float(loss.detach()))
            return None
        self.state.nonfinite_consecutive = 0
        self.opt.step(loss, self.model.parameters(), self.tcfg.grad_clip)
        self.state.step += 1
        return float(loss.detach())

    def run_validation(self, rng: list[dict[str, Any]]) -> None:
        """Rank 0: validation NLL, logged; best.pt kept by NLL per unit."""
        if len(self.val_set) == 0:
            return
        metrics = evaluate_prior(self.model, self.val_set, self.tcfg.batch_size)
        log.info("step %d validation: %.4f nats/unit  %.4f bits/unit  perplexity %.2f", self.state.step,
                 metrics["nll_per_unit"], metrics["bits_per_unit"], metrics["perplexity"])
        self.record_validation(metrics, rng, "nll_per_unit", "best_nll")

    def fit(self) -> UnitPrior:
        """Train to trainer.max_steps or until SIGTERM (last.pt written); returns the model."""
        self.model.train()

        def step() -> dict[str, float] | None:
            loss = self.train_step()
            return None if loss is None else {"nll_per_unit": loss}

        self.train_loop("prior", step)
        return self.model


def vqvae_split(data: DictConfig, model: VQVAE, seed: int) -> tuple[DictConfig, int, str]:
    """The data node and seed that split the corpus for the prior: the VQ-VAE checkpoint's own when it was trained on
    this corpus layout (data.name), with the prior's data.root, so that its validation and test utterances stay out
    of the prior's training set; else the prior run's `data` and `seed` (another corpus). -> (data, seed, source)."""
    own = model.config.get("data")
    if not own or own.get("name") != data.name:
        return data, seed, "the prior run's data config and seed (not the corpus the VQ-VAE was trained on)"
    node = OmegaConf.merge(OmegaConf.create(own), {"sample_rate": model.sample_rate},
                           {"root": data.root} if data.get("root") is not None else {})
    return node, int(model.config.get("seed", seed)), "the VQ-VAE checkpoint's data config and seed"


def corpus_units(data: DictConfig, vqvae: str, units_dir: Path, seed: int, batch_size: int,
                 device: torch.device) -> dict[str, str | None]:
    """A data node and a VQ-VAE checkpoint -> units files of the corpus's training and validation utterances (split as
    the VQ-VAE's training run split it, `vqvae_split`; held-out speakers and sentences are left out) and a speaker
    map, written in units_dir with split.yaml (what split it; a rerun resumes them) -> the `units` keys."""
    model = VQVAE.from_checkpoint(vqvae, device)
    data, seed, source = vqvae_split(OmegaConf.merge(data, {"sample_rate": model.sample_rate}), model, seed)
    corpus = load_corpus(data)
    split = split_corpus(corpus, data, seed)
    units_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save({"split_by": source, "seed": seed, "data": data}, units_dir / "split.yaml")
    log.info("units of the %s split by %s (see %s)", data.name, source, units_dir / "split.yaml")
    keys = {"path": units_dir / "train.txt", "val_path": units_dir / "val.txt" if split.val else None,
            "speaker_map": units_dir / "speakers.tsv"}
    write_units(model, split.train, keys["path"], skipped=corpus.skipped, batch_size=batch_size)
    if split.val:
        write_units(model, split.val, keys["val_path"], batch_size=batch_size)
    write_speaker_map(keys["speaker_map"], {u.id: u.speaker for u in split.train + split.val})
    return {k: None if v is None else str(v) for k, v in keys.items()}


def train_prior(cfg: DictConfig) -> UnitPrior:
    """Train a prior per a prior run config (configs/prior.yaml); returns the trained model."""
    run = start_run(cfg, threads=cfg.threads)
    ddp, device, run_dir = run.ddp, run.device, run.run_dir
    from_audio = cfg.vqvae is not None or ("data" in cfg and cfg.units.path is None)
    if (cfg.units.path is None) != from_audio:
        raise ValueError("give units.path=FILE (written by audio-vqvae-units; data=NAME may give its speakers) or "
                         "vqvae=CHECKPOINT with data=NAME (units extracted into the run directory), not both")
    corpus_speakers = None
    if from_audio:
        if cfg.vqvae is None or "data" not in cfg:
            raise ValueError("training from audio needs both vqvae=CHECKPOINT and data=NAME (demo, vctk, ...)")
        keys = ddp.from_main(lambda: corpus_units(cfg.data, cfg.vqvae, run_dir / "units", cfg.seed,
                                                  cfg.extract_batch_size, device))
        for key, value in keys.items():
            cfg.units[key] = value
    elif "data" in cfg:  # a units file of this corpus: its data config names the speakers
        cfg.data.sample_rate = UnitsSidecar.read(sidecar_path(cfg.units.path)).sample_rate
        corpus_speakers = {u.id: u.speaker for u in load_corpus(cfg.data).utterances}
    seed_everything(cfg.seed + ddp.rank)
    train, val, speakers, sidecar = load_unit_sets(cfg.units, corpus_speakers)
    if from_audio:
        cfg.data.sample_rate = sidecar.sample_rate  # the data node's ${model.sample_rate}: the VQ-VAE's
    meta = {"codebook_size": sidecar.codebook_size, "frame_rate": sidecar.frame_rate,
            "vqvae_checkpoint": sidecar.checkpoint, "vqvae_checkpoint_sha256": sidecar.checkpoint_sha256}
    if ddp.is_main:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        write_run_files(cfg, run_dir, speakers)
    log.info("units %s: %d train / %d val utterances, %d speakers, K=%d", cfg.units.path, len(train), len(val),
             len(speakers), sidecar.codebook_size)
    trainer = PriorTrainer(cfg, run_dir, train, val, speakers, meta, ddp, device)
    if run.resume_from is not None:
        trainer.restore(run.resume_from)
    return trainer.fit()
