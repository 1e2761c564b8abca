"""Training app (Hydra): `audio-vqvae-train [overrides]` or `torchrun --nproc_per_node=N -m audio_vqvae.train ...`.

A run directory holds: config.yaml (resolved), speakers.json, version.json, train.log, skipped.tsv (bad files),
tb/ (TensorBoard events), checkpoints/{last,best,step-XXXXXXXX}.pt. A killed run continues exactly where its last
checkpoint stopped with `trainer.resume=true` (same run_dir); a run directory that already holds a run is never
overwritten silently.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import hydra
import numpy as np
import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Sampler
from tqdm import tqdm

from . import __version__
from .checkpoint import load_checkpoint, save_checkpoint
from .data import (
    SegmentDataset,
    ValidationDataset,
    collate_segments,
    load_corpus,
    split_corpus,
    worker_init_fn,
    write_skip_report,
)
from .device import resolve_device, retain_freed_memory
from .io import atomic_write
from .model import VQVAE, VQVAEOutput, sample_teacher_forced
from .quantizer import perplexity

log = logging.getLogger("audio_vqvae.train")

# ---- small helpers ------------------------------------------------------------------------------------------


def lr_lambda(step: int, warmup: int, max_steps: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the base learning rate: linear warm-up, then constant or cosine decay to min_ratio."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"trainer.lr_schedule: unknown schedule {schedule!r} (use constant or cosine)")


def autocast_dtype(precision: str) -> torch.dtype | None:
    """trainer.precision -> autocast dtype (None = plain float32)."""
    table = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in table:
        raise ValueError(f"trainer.precision: unknown {precision!r} (use fp32, bf16 or fp16)")
    return table[precision]


def rng_state() -> dict[str, Any]:
    """All RNG states as weights_only-loadable containers."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [x.tolist() if isinstance(x, np.ndarray) else x for x in np.random.get_state()],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def code_version() -> dict[str, str]:
    """Package version and, when run from a git checkout, the commit."""
    info = {"audio_vqvae": __version__, "torch": torch.__version__}
    try:
        root = Path(__file__).resolve().parent.parent
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


class SkipSampler(Sampler[int]):
    """Wraps the per-epoch sampler (and its dataset's epoch) and drops its first `skip` indices: resume lands on the
    same batch an uninterrupted run would draw next."""

    def __init__(self, base: DistributedSampler) -> None:
        self.base = base
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.base.set_epoch(epoch)
        self.base.dataset.set_epoch(epoch)  # segment offsets are a function of (seed, epoch, index)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.base)[self.skip :])

    def __len__(self) -> int:
        return len(self.base) - self.skip


@dataclass
class Distributed:
    """torchrun environment (world size 1 when launched directly)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "Distributed":
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))


@dataclass
class TrainState:
    """What resume restores besides the model/optimizer/scheduler/scaler state dicts."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_bits_per_sample: float = float("inf")
    nonfinite_total: int = 0
    nonfinite_consecutive: int = 0
    finished: bool = False
    history: list[dict[str, float]] = field(default_factory=list)


# ---- run directory ------------------------------------------------------------------------------------------


def run_identity(cfg: DictConfig) -> dict[str, Any]:
    """The part of a config that must match for a resume to be the same run."""
    return {"model": OmegaConf.to_container(cfg.model, resolve=True), "data": cfg.data.name, "seed": cfg.seed}


def prepare_run_dir(cfg: DictConfig, run_dir: Path) -> Path | None:
    """Return the checkpoint to resume from (or None); refuse to overwrite an existing run."""
    last = run_dir / "checkpoints" / "last.pt"
    resume = cfg.trainer.resume
    if resume in (False, None, "false", ""):
        if last.exists():
            raise FileExistsError(
                f"{run_dir} already holds a run ({last}); continue it with trainer.resume=true or pick another run_dir=..."
            )
        return None
    path = last if resume in (True, "true") else Path(str(resume))
    if not path.exists():
        raise FileNotFoundError(f"trainer.resume={resume}: no checkpoint at {path}")
    return path


def write_run_files(cfg: DictConfig, run_dir: Path, speakers: list[str]) -> None:
    with atomic_write(run_dir / "config.yaml") as f:
        f.write(OmegaConf.to_yaml(cfg, resolve=True))
    with atomic_write(run_dir / "speakers.json") as f:
        json.dump(speakers, f, indent=1)
    with atomic_write(run_dir / "version.json") as f:
        json.dump(code_version(), f, indent=1)


# ---- validation ---------------------------------------------------------------------------------------------


@torch.no_grad()
def validate(
    model: VQVAE, loader: DataLoader, device: torch.device, n_examples: int, seed: int
) -> tuple[dict[str, float], dict]:
    """Whole-set validation: reconstruction loss, -ELBO bits/sample, perplexity and used codes over all frames.

    Returns the metrics and, for the first n_examples utterances, (original, teacher-forced resynthesis, speaker)
    waveforms; the resynthesis samples each x_t from p(x_t | true x_<t, z_q(x)) with its own generator, so
    validation leaves the training RNG streams (and hence exact resume) untouched.
    """
    model.eval()
    generator = torch.Generator(device).manual_seed(seed)
    nll = kl = 0.0
    n_samples = 0
    counts = torch.zeros(model.codebook_size, device=device)
    examples: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for wav, speaker, utt_ids in loader:
        wav, speaker = wav.to(device), speaker.to(device)
        out: VQVAEOutput = model(wav, speaker)
        nll += float(out.nll)
        kl += out.kl
        n_samples += out.n_samples
        counts += out.counts.to(device)
        if len(examples) < n_examples:
            resynthesis = sample_teacher_forced(out.logits[0], generator)
            examples[utt_ids[0]] = (wav[0, 0, : out.n_samples].cpu(), resynthesis.cpu())
    model.train()
    metrics = {
        "reconstruction_loss": nll / max(n_samples, 1),
        "bits_per_sample": (nll + kl) / (max(n_samples, 1) * math.log(2)),
        "perplexity": float(perplexity(counts)),
        "used_codes": int((counts > 0).sum()),
    }
    return metrics, {"counts": counts.cpu(), "examples": examples}


def log_validation(writer: Any, step: int, metrics: dict[str, float], extra: dict, sample_rate: int) -> None:
    """Scalars, the codebook-usage histogram, spectrogram images and audio to TensorBoard."""
    from .plots import spectrogram_figure

    for k, v in metrics.items():
        writer.add_scalar(f"val/{k}", v, step)
    counts = extra["counts"]
    writer.add_histogram("val/code_usage", torch.repeat_interleave(torch.arange(len(counts)), counts.long()), step)
    for utt_id, (orig, resyn) in extra["examples"].items():
        writer.add_audio(f"val_audio/{utt_id}/original", orig.unsqueeze(0), step, sample_rate)
        writer.add_audio(f"val_audio/{utt_id}/teacher_forced", resyn.unsqueeze(0), step, sample_rate)
        writer.add_figure(f"val_spec/{utt_id}", spectrogram_figure([orig, resyn], ["original", "teacher-forced"], sample_rate), step)


# ---- the loop -----------------------------------------------------------------------------------------------


def train(cfg: DictConfig) -> VQVAE:
    """Train per cfg (checkpoints in run_dir/checkpoints); returns the trained model (every rank's own copy)."""
    tcfg = cfg.trainer
    ddp = Distributed.from_env()
    device = resolve_device(cfg.device, ddp.local_rank)
    if ddp.world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    run_dir = Path(cfg.run_dir)
    if ddp.world_size > 1:  # every rank uses rank 0's run_dir (its ${now:} may differ by a second)
        holder = [str(run_dir)]
        dist.broadcast_object_list(holder, src=0)
        run_dir = Path(holder[0])
    ckpt_dir = run_dir / "checkpoints"
    resume_from = prepare_run_dir(cfg, run_dir)
    if tcfg.deterministic:
        torch.use_deterministic_algorithms(True)
    seed_everything(cfg.seed + ddp.rank)

    corpus = load_corpus(cfg.data)
    train_utts, val_utts, _ = split_corpus(corpus, cfg.data, cfg.seed)
    skip_report = run_dir / "skipped.tsv"
    if ddp.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        write_run_files(cfg, run_dir, corpus.speakers)
        write_skip_report(skip_report, corpus.skipped)
    log.info("corpus %s: %d train / %d val utterances, %d speakers, %d skipped files (see %s)",
             corpus.root, len(train_utts), len(val_utts), len(corpus.speakers), len(corpus.skipped), skip_report)

    model = VQVAE.from_config(cfg.model, corpus.speakers).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=tcfg.lr, betas=tuple(tcfg.adam_betas))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_lambda(s, tcfg.warmup_steps, tcfg.max_steps, tcfg.lr_schedule, tcfg.lr_min_ratio)
    )
    amp_dtype = autocast_dtype(tcfg.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=tcfg.precision == "fp16")
    state = TrainState()
    if resume_from is not None:
        ckpt = load_checkpoint(resume_from)
        if ckpt["resume"] is None:
            raise ValueError(f"{resume_from}: holds no resume state (it is an export); resume from last.pt")
        saved_identity = ckpt["resume"]["identity"]
        if saved_identity != run_identity(cfg):
            raise ValueError(f"{resume_from}: was trained with a different model/data/seed config; refusing to resume "
                             "it as this run (pick another run_dir=...)")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["resume"]["optimizer"])
        scheduler.load_state_dict(ckpt["resume"]["scheduler"])
        scaler.load_state_dict(ckpt["resume"]["scaler"])
        state = TrainState(**ckpt["resume"]["state"])
        set_rng_state(ckpt["resume"]["rng"][ddp.rank] if ddp.rank < len(ckpt["resume"]["rng"]) else ckpt["resume"]["rng"][0])
        log.info("resumed from %s at step %d", resume_from, state.step)
        if state.step >= tcfg.max_steps:
            log.info("run already finished at step %d (trainer.max_steps=%d); nothing to do", state.step, tcfg.max_steps)
            return model

    train_set = SegmentDataset(
        train_utts, corpus.speakers, cfg.data.segment_length, cfg.data.sample_rate, cfg.data.short,
        cfg.data.peak_normalize, str(skip_report), cfg.seed,
    )
    sampler = SkipSampler(DistributedSampler(train_set, ddp.world_size, ddp.rank, shuffle=True, seed=cfg.seed, drop_last=True))
    loader_generator = torch.Generator().manual_seed(cfg.seed)  # keeps the global RNG free of DataLoader draws
    train_loader = DataLoader(
        train_set, batch_size=tcfg.batch_size, sampler=sampler, num_workers=tcfg.num_workers, drop_last=True,
        collate_fn=collate_segments, worker_init_fn=worker_init_fn, generator=loader_generator,
        persistent_workers=False, pin_memory=device.type == "cuda",
    )
    if len(train_set) < tcfg.batch_size * ddp.world_size:
        raise ValueError(f"trainer.batch_size={tcfg.batch_size}: only {len(train_set)} training utterances")
    val_set = ValidationDataset(val_utts, corpus.speakers, cfg.data.sample_rate, cfg.data.val_max_seconds,
                                cfg.data.peak_normalize, str(skip_report))
    val_loader = DataLoader(val_set, batch_size=1)

    net: torch.nn.Module = model
    if tcfg.compile:
        net = torch.compile(net)
    if ddp.world_size > 1:
        net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None,
                                      broadcast_buffers=False)

    writer = None
    if ddp.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tb"))

    def checkpoint(name: str, rng: list[dict[str, Any]], metrics: dict[str, float] | None = None) -> None:
        """Rank 0 writes ckpt_dir/name with everything resume needs (rng: every rank's state, from gather_rng)."""
        resume = {
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "state": dict(state.__dict__), "rng": rng, "identity": run_identity(cfg),
        }
        save_checkpoint(ckpt_dir / name, model.state_dict(), OmegaConf.to_container(cfg, resolve=True),
                        corpus.speakers, state.step, resume, metrics)

    def run_validation(rng: list[dict[str, Any]]) -> None:
        """Rank 0 validates, logs, and keeps `best.pt` by validation -ELBO."""
        metrics, extra = validate(model, val_loader, device, tcfg.val_examples, cfg.seed)
        state.history.append({"step": state.step, **metrics})
        log.info("step %d validation: recon %.4f nats  -ELBO %.4f bits/sample  perplexity %.1f  used codes %d",
                 state.step, metrics["reconstruction_loss"], metrics["bits_per_sample"], metrics["perplexity"],
                 metrics["used_codes"])
        log_validation(writer, state.step, metrics, extra, cfg.data.sample_rate)
        if state.step > 0 and metrics["bits_per_sample"] < state.best_bits_per_sample:
            state.best_bits_per_sample = metrics["bits_per_sample"]
            checkpoint("best.pt", rng, metrics)

    if state.step == 0 and ddp.is_main:
        run_validation(rng=[])  # the initial losses, for comparison; no checkpoint at step 0
    sampler.set_epoch(state.epoch, state.batch_in_epoch * tcfg.batch_size)
    batches = iter(train_loader)
    bar = tqdm(total=tcfg.max_steps, initial=state.step, disable=not ddp.is_main, dynamic_ncols=True, desc="train")
    t_last, samples_since = time.perf_counter(), 0
    model.train()
    while state.step < tcfg.max_steps:
        batch = next(batches, None)
        if batch is None:  # epoch end
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
            sampler.set_epoch(state.epoch)
            batches = iter(train_loader)
            continue
        state.batch_in_epoch += 1
        wav, speaker = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            out: VQVAEOutput = net(wav, speaker)
        if not torch.isfinite(out.loss):
            state.nonfinite_total += 1
            state.nonfinite_consecutive += 1
            optimizer.zero_grad(set_to_none=True)
            log.warning("step %d: non-finite loss (%s), step skipped (%d in a row, %d in all)", state.step,
                        float(out.loss.detach()), state.nonfinite_consecutive, state.nonfinite_total)
            if state.nonfinite_consecutive >= tcfg.max_nonfinite:
                raise RuntimeError(f"{state.nonfinite_consecutive} non-finite losses in a row at step {state.step} "
                                   f"(trainer.max_nonfinite={tcfg.max_nonfinite}); lower trainer.lr or check the data")
            continue
        state.nonfinite_consecutive = 0
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(out.loss).backward()
        if tcfg.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        state.step += 1
        samples_since += wav.numel() * ddp.world_size
        bar.update(1)
        if state.step % tcfg.log_every == 0 or state.step == tcfg.max_steps:
            now = time.perf_counter()
            throughput = samples_since / cfg.data.sample_rate / max(now - t_last, 1e-9)
            t_last, samples_since = now, 0
            scalars = {
                "loss": float(out.loss.detach()), "reconstruction_loss": float(out.reconstruction_loss.detach()),
                "codebook_loss": float(out.codebook_loss.detach()), "commitment_loss": float(out.commitment_loss.detach()),
                "bits_per_sample": float(out.bits_per_sample), "perplexity": float(out.perplexity),
                "used_codes": float(out.usage) * model.codebook_size, "restarted_codes": out.restarted,
                "lr": scheduler.get_last_lr()[0], "audio_seconds_per_second": throughput,
                "nonfinite_steps": state.nonfinite_total,
            }
            if writer is not None:
                for k, v in scalars.items():
                    writer.add_scalar(f"train/{k}", v, state.step)
            bar.set_postfix(recon=f"{scalars['reconstruction_loss']:.3f}", bps=f"{scalars['bits_per_sample']:.3f}",
                            ppl=f"{scalars['perplexity']:.1f}", sps=f"{throughput:.1f}")
        final = state.step == tcfg.max_steps
        if state.step % tcfg.val_every == 0 or final:
            rng = gather_rng(ddp)  # collective: every rank
            if ddp.is_main:
                run_validation(rng)
        if state.step % tcfg.ckpt_every == 0 or final:
            state.finished = final
            rng = gather_rng(ddp)
            if ddp.is_main:
                checkpoint("last.pt", rng)
                if tcfg.keep_last > 0:
                    checkpoint(f"step-{state.step:08d}.pt", rng)
                    keep_step_checkpoints(ckpt_dir, tcfg.keep_last)
    bar.close()
    if writer is not None:
        writer.close()
    if ddp.world_size > 1:
        dist.barrier()
    if ddp.is_main:
        log.info("finished at step %d; checkpoints: %s (last.pt, best.pt)", state.step, ckpt_dir)
    return model


def gather_rng(ddp: Distributed) -> list[dict[str, Any]]:
    """Every rank's RNG state (index = rank), so a resumed DDP run continues each rank's random stream."""
    mine = rng_state()
    if ddp.world_size == 1:
        return [mine]
    states: list[Any] = [None] * ddp.world_size
    dist.all_gather_object(states, mine)
    return states


def keep_step_checkpoints(ckpt_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` step-XXXXXXXX.pt files."""
    for old in sorted(ckpt_dir.glob("step-*.pt"))[:-keep]:
        old.unlink(missing_ok=True)


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> None:
    """Console entry point `audio-vqvae-train`."""
    retain_freed_memory()
    try:
        train(cfg)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
