"""The VQ-VAE trainer (a `training.base.Solver`): builds the model and the loaders from a run config, trains with
`train_step`, validates with `validate` (plus the unit curves, training.curves), and saves/restores every state an
exact resume needs (the base's, plus the sampler position in TrainState).

A run directory holds: config.yaml (resolved), speakers.json, version.json, train.log, skipped.tsv (bad files),
tb/ (TensorBoard events), checkpoints/{last,best,step-XXXXXXXX}.pt. SIGTERM (preemption) finishes the step in flight,
writes last.pt and returns; with `trainer.resume=auto` the same command continues the run.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, DistributedSampler

from ..checkpoint import save_checkpoint
from ..data import (
    SegmentDataset,
    Split,
    ValidationDataset,
    collate_segments,
    drop_too_short,
    load_corpus,
    split_corpus,
    worker_init_fn,
)
from ..io import write_skip_report
from ..metrics import ELBOAccumulator
from ..model import VQVAE, VQVAEOutput, sample_teacher_forced
from .base import Preemption, RunState, SkipSampler, Solver, TrainerConfig, seed_everything, start_run
from .distributed import Distributed
from .runs import run_identity, write_run_files

log = logging.getLogger(__name__)


@dataclass
class TrainState(RunState):
    """What resume restores besides the base's `RunState`."""

    epoch: int = 0
    batch_in_epoch: int = 0
    best_bits_per_sample: float = float("inf")


def curves_text(curves: dict[str, float]) -> str:
    """The unit curves' part of the validation log line: PNMI (with alignments) and the entropy bitrate."""
    text = f"  PNMI {curves['units/pnmi']:.3f}" if "units/pnmi" in curves else ""
    if "units/entropy_bits_per_second" in curves:
        text += f"  unit bitrate {max(0.0, curves['units/entropy_bits_per_second']):.0f} bits/s"  # no "-0" at collapse
    return text


# ---- the solver ---------------------------------------------------------------------------------------------


class Trainer(Solver):
    """Trains a VQVAE on a corpus split per a run config; rank 0 validates, logs and writes checkpoints."""

    def __init__(self, cfg: DictConfig, run_dir: Path, speakers: list[str], split: Split, ddp: Distributed,
                 device: torch.device) -> None:
        self.cfg, self.tcfg = cfg, TrainerConfig.from_config(cfg.trainer)
        self.run_dir, self.ckpt_dir, self.skip_report = run_dir, run_dir / "checkpoints", run_dir / "skipped.tsv"
        self.speakers, self.ddp, self.device = speakers, ddp, device
        t = self.tcfg
        self.setup(VQVAE.from_config(cfg.model, speakers).to(device),
                   lambda params: torch.optim.Adam(params, lr=t.lr, betas=t.adam_betas), TrainState(),
                   broadcast_buffers=False)
        self.sampler, self.train_loader, self.val_loader = self._loaders(split)
        self.curve_items = self._curve_items() if t.unit_curves and ddp.is_main else None

    def _loaders(self, split: Split) -> tuple[SkipSampler, DataLoader, DataLoader]:
        """Training loader (distributed, resumable sampler) and validation loader; too-short files are reported."""
        data, t, sr = self.cfg.data, self.tcfg, self.cfg.data.sample_rate
        train_utts, short_train = drop_too_short(split.train, sr, self.model.hop)
        val_utts, short_val = drop_too_short(split.val, sr, self.model.hop)
        if self.ddp.is_main and (short_train or short_val):
            for path, reason in short_train + short_val:
                log.warning("skipping %s: %s", path, reason)
            write_skip_report(self.skip_report, short_train + short_val)
        train_set = SegmentDataset(train_utts, self.speakers, data.segment_length, sr, data.short,
                                   data.peak_normalize, str(self.skip_report), self.cfg.seed)
        if len(train_set) < t.batch_size * self.ddp.world_size:
            raise ValueError(f"trainer.batch_size={t.batch_size}: only {len(train_set)} training utterances")
        sampler = SkipSampler(DistributedSampler(train_set, self.ddp.world_size, self.ddp.rank, shuffle=True,
                                                 seed=self.cfg.seed, drop_last=True))
        train_loader = DataLoader(
            train_set, batch_size=t.batch_size, sampler=sampler, num_workers=t.num_workers, drop_last=True,
            collate_fn=collate_segments, worker_init_fn=worker_init_fn,
            generator=torch.Generator().manual_seed(self.cfg.seed),  # keeps the global RNG free of DataLoader draws
            persistent_workers=t.num_workers > 0,  # workers follow set_epoch through the dataset's shared epoch
            pin_memory=self.device.type == "cuda",
        )
        val_set = ValidationDataset(val_utts, self.speakers, sr, data.val_max_seconds, data.peak_normalize,
                                    str(self.skip_report))
        # One utterance per forward: zero padding to a common length would enter the NLL and the code counts.
        return sampler, train_loader, DataLoader(val_set, batch_size=1)

    def _curve_items(self) -> list[Any]:
        """The unit learning curves' set (curves.curve_items), read once from the validation utterances as
        validation reads them, with the phone alignments of <data.root>/alignments when that folder exists."""
        from ..alignments import load_alignments
        from .curves import curve_items

        data = self.cfg.data
        folder = Path(data.root) / "alignments" if data.get("root") else None
        alignments = load_alignments(folder) if folder is not None and folder.is_dir() else None
        return curve_items(self.val_loader.dataset.utterances, data.sample_rate, data.peak_normalize, alignments)

    # ---- save / restore ---------------------------------------------------------------------------------------

    def save(self, name: str, rng: list[dict[str, Any]], metrics: dict[str, float] | None = None) -> None:
        """Rank 0 writes ckpt_dir/name with everything resume needs (rng: every rank's state, from ddp.gather)."""
        resume = {
            **self.opt.state_dict(), "state": dict(self.state.__dict__), "rng": rng,
            "identity": run_identity(self.cfg), "world_size": self.ddp.world_size, "batch_size": self.tcfg.batch_size,
        }
        save_checkpoint(self.ckpt_dir / name, self.model.state_dict(), OmegaConf.to_container(self.cfg, resolve=True),
                        self.speakers, self.state.step, resume, metrics)

    def check_resumable(self, path: Path, ckpt: dict[str, Any]) -> None:
        """Refuse an export, a checkpoint of another run, or one of another batch layout."""
        saved = ckpt["resume"]
        if saved is None:
            raise ValueError(f"{path}: holds no resume state (it is an export); resume from last.pt")
        if saved["identity"] != run_identity(self.cfg):
            raise ValueError(f"{path}: was trained with a different model/data/seed config; refusing to resume "
                             "it as this run (pick another run_dir=...)")
        # Checkpoints from before these keys were stored hold one RNG state per rank and their resolved config.
        old = (saved.get("world_size", len(saved["rng"])), saved.get("batch_size", ckpt["config"]["trainer"]["batch_size"]))
        new = (self.ddp.world_size, self.tcfg.batch_size)
        if old != new:
            raise ValueError(f"{path}: was trained with world_size={old[0]} trainer.batch_size={old[1]}, this run has "
                             f"world_size={new[0]} trainer.batch_size={new[1]}; resume needs the same values (the "
                             "position in the epoch and the effective batch depend on them) or a new run_dir")

    # ---- steps ------------------------------------------------------------------------------------------------

    def train_step(self, wav: torch.Tensor, speaker: torch.Tensor) -> VQVAEOutput | None:
        """One optimisation step on a batch; None when the loss is non-finite on any rank: then every rank skips the
        step together (one rank skipping alone would leave the others waiting in the gradient all-reduce)."""
        t, state = self.tcfg, self.state
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            out: VQVAEOutput = self.net(wav, speaker)
        self.opt.optimizer.zero_grad(set_to_none=True)
        if not self.ddp.agree(torch.isfinite(out.loss.detach()), every=True):
            self.count_nonfinite(float(out.loss.detach()))
            return None
        state.nonfinite_consecutive = 0
        self.opt.step(out.loss, self.model.parameters(), t.grad_clip)
        state.step += 1
        return out

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Training batches on the device from the resumed position on, epoch after epoch (TrainState tracks both)."""
        self.sampler.set_epoch(self.state.epoch, self.state.batch_in_epoch * self.tcfg.batch_size)
        while True:
            for wav, speaker in self.train_loader:
                self.state.batch_in_epoch += 1
                yield wav.to(self.device, non_blocking=True), speaker.to(self.device, non_blocking=True)
            self.state.epoch, self.state.batch_in_epoch = self.state.epoch + 1, 0
            self.sampler.set_epoch(self.state.epoch)

    @torch.no_grad()
    def validate(self) -> tuple[dict[str, float], dict[str, Any]]:
        """Whole-set validation: reconstruction loss, -ELBO bits/sample, perplexity and used codes over all frames.

        Also returns the code counts and, for the first val_examples utterances, (original, teacher-forced
        resynthesis) waveforms; the resynthesis samples with its own generator, so validation leaves the training
        RNG streams (and hence exact resume) untouched.
        """
        self.model.eval()
        generator = torch.Generator(self.device).manual_seed(self.cfg.seed)
        total = ELBOAccumulator()
        examples: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for wav, speaker, utt_ids in self.val_loader:
            wav, speaker = wav.to(self.device), speaker.to(self.device)
            out: VQVAEOutput = self.model(wav, speaker)
            total.add(out)
            if len(examples) < self.tcfg.val_examples:
                resynthesis = sample_teacher_forced(out.logits[0], generator)
                examples[utt_ids[0]] = (wav[0, 0, : out.n_samples].cpu(), resynthesis.cpu())
        self.model.train()
        metrics = total.result(self.model.codebook_size, self.cfg.data.sample_rate)
        return metrics, {"counts": total.counts, "examples": examples}

    def run_validation(self, rng: list[dict[str, Any]]) -> None:
        """Rank 0 validates, logs, and keeps `best.pt` by validation -ELBO (rng: every rank's, for that file)."""
        if len(self.val_loader) == 0:
            log.info("step %d: no validation utterances (data.val_per_speaker=0); validation skipped", self.state.step)
            return
        metrics, extra = self.validate()
        self.state.history.append({"step": self.state.step, **metrics})
        curves = self.unit_curves()
        log.info("step %d validation: recon %.4f nats  -ELBO %.4f bits/sample  perplexity %.1f  used codes %d%s",
                 self.state.step, metrics["reconstruction_loss"], metrics["bits_per_sample"], metrics["perplexity"],
                 metrics["used_codes"], curves_text(curves))
        self.log_validation(metrics, extra)
        for k, v in curves.items():
            self.writer.add_scalar(k, v, self.state.step)
        if self.state.step > 0 and metrics["bits_per_sample"] < self.state.best_bits_per_sample:
            self.state.best_bits_per_sample = metrics["bits_per_sample"]
            self.save("best.pt", rng, metrics)

    def unit_curves(self) -> dict[str, float]:
        """curves.unit_curves on the curve set ({} when trainer.unit_curves is off): encoder passes only, no
        random draws, so the training RNG streams are untouched."""
        if self.curve_items is None:
            return {}
        from .curves import unit_curves

        return unit_curves(self.model, self.curve_items)

    # ---- logging ----------------------------------------------------------------------------------------------

    def log_validation(self, metrics: dict[str, float], extra: dict[str, Any]) -> None:
        """Scalars, the codebook-usage histogram, spectrogram images and audio to TensorBoard."""
        from ..plots import spectrogram_figure

        writer, step, sr = self.writer, self.state.step, self.cfg.data.sample_rate
        for k, v in metrics.items():
            writer.add_scalar(f"val/{k}", v, step)
        counts = extra["counts"]
        writer.add_histogram("val/code_usage", torch.repeat_interleave(torch.arange(len(counts)), counts.long()), step)
        for utt_id, (orig, resyn) in extra["examples"].items():
            writer.add_audio(f"val_audio/{utt_id}/original", orig.unsqueeze(0), step, sr)
            writer.add_audio(f"val_audio/{utt_id}/teacher_forced", resyn.unsqueeze(0), step, sr)
            writer.add_figure(f"val_spec/{utt_id}",
                              spectrogram_figure([orig, resyn], ["original", "teacher-forced"], sr), step)

    def log_step(self, out: VQVAEOutput, seconds_per_second: float) -> dict[str, float]:
        """Training scalars of the last step to TensorBoard; returns them."""
        scalars = {
            "loss": float(out.loss.detach()), "reconstruction_loss": float(out.reconstruction_loss.detach()),
            "codebook_loss": float(out.codebook_loss.detach()), "commitment_loss": float(out.commitment_loss.detach()),
            "bits_per_sample": float(out.bits_per_sample), "perplexity": float(out.perplexity),
            "used_codes": float(out.usage) * self.model.codebook_size, "restarted_codes": out.restarted,
            "lr": self.opt.scheduler.get_last_lr()[0], "audio_seconds_per_second": seconds_per_second,
            "nonfinite_steps": self.state.nonfinite_total,
            **{k: float(v.detach()) for k, v in out.auxiliary.items()},  # issue 20's terms, when on
        }
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(f"train/{k}", v, self.state.step)
        return scalars

    # ---- the loop ---------------------------------------------------------------------------------------------

    def fit(self) -> VQVAE:
        """Train to trainer.max_steps or until SIGTERM (then last.pt is written at the current step); returns the
        model (every rank's own copy)."""
        from tqdm import tqdm

        t, state = self.tcfg, self.state
        if state.step >= t.max_steps:
            log.info("run already finished at step %d (trainer.max_steps=%d); nothing to do", state.step, t.max_steps)
            return self.model
        if state.step == 0 and self.ddp.is_main:
            self.run_validation(rng=[])  # the initial losses, for comparison; no checkpoint at step 0
        bar = tqdm(total=t.max_steps, initial=state.step, disable=not self.ddp.is_main, dynamic_ncols=True, desc="train")
        t_last, samples_since = time.perf_counter(), 0
        self.model.train()
        with Preemption() as preemption:
            for wav, speaker in self.batches():
                out = self.train_step(wav, speaker)
                if out is not None:
                    samples_since += wav.numel() * self.ddp.world_size
                    bar.update(1)
                    if state.step % t.log_every == 0 or state.step == t.max_steps:
                        now = time.perf_counter()
                        throughput = samples_since / self.cfg.data.sample_rate / max(now - t_last, 1e-9)
                        t_last, samples_since = now, 0
                        s = self.log_step(out, throughput)
                        bar.set_postfix(recon=f"{s['reconstruction_loss']:.3f}", bps=f"{s['bits_per_sample']:.3f}",
                                        ppl=f"{s['perplexity']:.1f}", sps=f"{throughput:.1f}")
                if self.after_step(preemption, stepped=out is not None) or state.step >= t.max_steps:
                    break
        bar.close()
        if self.writer is not None:
            self.writer.close()
        if self.ddp.world_size > 1:
            torch.distributed.barrier()
        if self.ddp.is_main and state.step >= t.max_steps:
            log.info("finished at step %d; checkpoints: %s (last.pt, best.pt)", state.step, self.ckpt_dir)
        return self.model



def train(cfg: DictConfig) -> VQVAE:
    """Train per a run config (checkpoints in run_dir/checkpoints); returns the trained model (every rank's copy).

    Under torchrun the corpus is indexed once, on rank 0, and broadcast.
    """
    run = start_run(cfg)
    ddp, device, run_dir = run.ddp, run.device, run.run_dir
    seed_everything(cfg.seed + ddp.rank)
    corpus = ddp.from_main(lambda: load_corpus(cfg.data))
    split = split_corpus(corpus, cfg.data, cfg.seed)
    skip_report = run_dir / "skipped.tsv"
    if ddp.is_main:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        write_run_files(cfg, run_dir, corpus.speakers)
        write_skip_report(skip_report, corpus.skipped)
    log.info("corpus %s: %d train / %d val utterances, %d speakers, %d skipped files (see %s)", corpus.root,
             len(split.train), len(split.val), len(corpus.speakers), len(corpus.skipped), skip_report)
    trainer = Trainer(cfg, run_dir, corpus.speakers, split, ddp, device)
    if run.resume_from is not None:
        trainer.restore(run.resume_from)
    return trainer.fit()
