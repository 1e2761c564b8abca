"""Training the speech path (source_filter.SpeechDecoder: F0 predictor + one-pass source-filter decoder) on a
trained VQ-VAE's frozen units, a sibling of the VQ-VAE and prior trainers on the solver base.

The corpus and its split are the VQ-VAE checkpoint's own (its data config and seed; `data.*` overrides only say
where the files are), so the speech path never trains on the utterances the VQ-VAE validated or was tested on.
Before the first step, rank 0 writes the features of the training and validation utterances into
<run_dir>/features/ (whole-utterance units, as `audio-vqvae-units` gives them; F0 and voicing from the model's
tracker; the whole-file peak), and the per-speaker log-F0 statistics go into the model. Batches are a function of
(seed, rank, step, skips so far): random crops of `segment_frames` units read lazily from the files, with their units and F0.
The loss is the multi-resolution STFT loss of the decoded crop plus `f0_loss_weight` times the F0 predictor's loss.
Checkpoints hold the whole VQ-VAE with `model.speech` in its config, so every app loads them as any checkpoint.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ..audio import load_model_input, scan_audio
from ..checkpoint import file_sha256, save_checkpoint
from ..data import Utterance, load_corpus, split_corpus
from ..f0 import speaker_stats
from ..io import atomic_write
from ..model import VQVAE
from ..source_filter import STFT_RESOLUTIONS, SpeechOutput, f0_predictor_loss, stft_loss
from .base import RunState, Solver, TrainerConfig, seed_everything, start_run
from .runs import write_run_files

log = logging.getLogger(__name__)


@dataclass
class SpeechState(RunState):
    """What resume restores besides the base's `RunState`."""

    best_stft: float = float("inf")


@dataclass
class SpeechFeatures:
    """Per utterance of one split: where its audio is (path, whole-file peak), its speaker index, whole-utterance
    units and F0 track. Audio is read lazily, crop by crop, so memory grows with the (small) features only."""

    ids: list[str]
    paths: list[str]
    peaks: list[float]
    speakers: list[int]
    codes: list[np.ndarray]  # [T_z] int
    f0: list[np.ndarray]  # [T_f] Hz, 0 where unvoiced
    voiced: list[np.ndarray]  # [T_f] bool

    def __len__(self) -> int:
        return len(self.ids)

    def save(self, path: Path) -> None:
        """Written atomically as one .npz of plain arrays: each sequence kind concatenated, with its lengths."""
        seqs = {k: getattr(self, k) for k in ("codes", "f0", "voiced")}
        with atomic_write(path, "wb") as f:
            np.savez(f, ids=np.array(self.ids), paths=np.array(self.paths), peaks=np.array(self.peaks),
                     speakers=np.array(self.speakers),
                     **{k: np.concatenate(v) if v else np.zeros(0) for k, v in seqs.items()},
                     **{f"{k}_lengths": np.array([len(x) for x in v], dtype=np.int64) for k, v in seqs.items()})

    @classmethod
    def load(cls, path: Path) -> SpeechFeatures:
        """Read what `save` wrote (no pickle)."""
        z = np.load(path)

        def split(k: str) -> list[np.ndarray]:
            return np.split(z[k], np.cumsum(z[f"{k}_lengths"])[:-1]) if len(z[f"{k}_lengths"]) else []

        return cls(z["ids"].tolist(), z["paths"].tolist(), z["peaks"].tolist(), z["speakers"].tolist(),
                   split("codes"), split("f0"), split("voiced"))


def compute_features(model: VQVAE, utterances: list[Utterance], batch_size: int) -> SpeechFeatures:
    """Units (the batched encode loop, whole utterances), F0 track and whole-file peak of each utterance."""
    peaks = [u.peak if u.peak is not None else scan_audio(u.path).peak for u in utterances]
    wavs = [load_model_input(u.path, model.sample_rate, model.peak_normalize, p) for u, p in zip(utterances, peaks)]
    codes = [c.numpy() for c in model.encode_prepared(wavs, batch_size)]
    tracks = [model.speech.track(w.numpy()) for w in wavs]
    return SpeechFeatures([u.id for u in utterances], [str(u.path) for u in utterances], peaks,
                          [model.speaker_index(u.speaker) for u in utterances], codes, [t[0] for t in tracks],
                          [t[1] for t in tracks])


@dataclass(frozen=True)
class SpeechBatch:
    """Training crops: audio [B, 1, T], units [B, T_z], F0 (Hz) and voicing [B, T_f], speakers [B], valid samples
    [B] (a crop of a short utterance is zero-padded)."""

    wav: torch.Tensor
    codes: torch.Tensor
    f0: torch.Tensor
    voiced: torch.Tensor
    speaker: torch.Tensor
    lengths: torch.Tensor

    def to(self, device: torch.device) -> SpeechBatch:
        return SpeechBatch(*(t.to(device) for t in (self.wav, self.codes, self.f0, self.voiced, self.speaker,
                                                    self.lengths)))


def _crop(x: np.ndarray, start: int, n: int) -> np.ndarray:
    """x[start : start + n], zero-padded to n."""
    part = x[start: start + n]
    return np.pad(part, (0, n - len(part)))


def training_batch(feats: SpeechFeatures, batch_size: int, segment_frames: int, sample_rate: int,
                   peak_normalize: float | None, unit_hop: int, f0_hop: int, gen: np.random.Generator) -> SpeechBatch:
    """batch_size random crops of segment_frames units (shorter utterances zero-padded), drawn with gen; the audio,
    units and F0 of a crop cover the same samples [s * unit_hop, (s + segment_frames) * unit_hop)."""
    per_unit = unit_hop // f0_hop
    wavs, codes, f0s, voiced, speakers, lengths = [], [], [], [], [], []
    for i in gen.integers(len(feats), size=batch_size):
        n_units = len(feats.codes[i])
        s = int(gen.integers(max(1, n_units - segment_frames + 1)))
        take = min(segment_frames, n_units - s) * unit_hop
        wav = load_model_input(feats.paths[i], sample_rate, peak_normalize, feats.peaks[i], s * unit_hop, take)
        wavs.append(_crop(wav.numpy(), 0, segment_frames * unit_hop))
        codes.append(_crop(feats.codes[i], s, segment_frames))
        f0s.append(_crop(feats.f0[i], s * per_unit, segment_frames * per_unit))
        voiced.append(_crop(feats.voiced[i], s * per_unit, segment_frames * per_unit))
        speakers.append(feats.speakers[i])
        lengths.append(take)
    return SpeechBatch(torch.from_numpy(np.stack(wavs))[:, None], torch.from_numpy(np.stack(codes)).long(),
                       torch.from_numpy(np.stack(f0s)), torch.from_numpy(np.stack(voiced)), torch.tensor(speakers),
                       torch.tensor(lengths))


def utterance_batch(feats: SpeechFeatures, idx: Sequence[int], model: VQVAE) -> SpeechBatch:
    """Whole utterances idx of feats (their units' samples), zero-padded to the longest: validation's batch."""
    per_unit = model.hop // model.speech.f0_hop
    n = max(len(feats.codes[i]) for i in idx)
    wavs = [load_model_input(feats.paths[i], model.sample_rate, model.peak_normalize, feats.peaks[i], 0,
                             len(feats.codes[i]) * model.hop).numpy() for i in idx]
    return SpeechBatch(torch.from_numpy(np.stack([_crop(w, 0, n * model.hop) for w in wavs]))[:, None],
                       torch.from_numpy(np.stack([_crop(feats.codes[i], 0, n) for i in idx])).long(),
                       torch.from_numpy(np.stack([_crop(feats.f0[i], 0, n * per_unit) for i in idx])),
                       torch.from_numpy(np.stack([_crop(feats.voiced[i], 0, n * per_unit) for i in idx])),
                       torch.tensor([feats.speakers[i] for i in idx]),
                       torch.tensor([len(feats.codes[i]) * model.hop for i in idx]))


def speech_loss(out: SpeechOutput, batch: SpeechBatch, f0_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Multi-resolution STFT loss of the decoded crops + f0_weight x the F0 predictor's loss on the valid frames."""
    stft, parts = stft_loss(out.wav, batch.wav)
    n_f0 = batch.f0.shape[-1]
    valid = torch.arange(n_f0, device=batch.f0.device)[None] < (batch.lengths // (batch.wav.shape[-1] // n_f0))[:, None]
    f0, f0_parts = f0_predictor_loss(out.voicing_logit, out.f0_norm_pred, batch.voiced, out.f0_norm, valid)
    return stft + f0_weight * f0, {**parts, **f0_parts}


class SpeechTrainer(Solver):
    """Trains a VQ-VAE's speech path per a speech run config (configs/speech_train.yaml); the VQ-VAE stays frozen.
    Rank 0 validates, logs and checkpoints."""

    def __init__(self, cfg: DictConfig, run_dir: Path, model: VQVAE, train: SpeechFeatures, val: SpeechFeatures,
                 meta: dict[str, Any], ddp: Any, device: torch.device) -> None:
        self.cfg, self.tcfg, self.run_dir, self.ckpt_dir = cfg, TrainerConfig.from_config(cfg.trainer), run_dir, run_dir / "checkpoints"
        self.train_set, self.val_set, self.meta, self.ddp, self.device = train, val, meta, ddp, device
        shortest = max(STFT_RESOLUTIONS["fft_sizes"]) // 2 + 1
        if cfg.segment_frames * model.hop < shortest:
            raise ValueError(f"segment_frames: {cfg.segment_frames} units ({cfg.segment_frames * model.hop} samples) "
                             f"are shorter than the STFT loss's longest frame needs ({shortest} samples)")
        model.requires_grad_(False)
        model.speech.requires_grad_(True)
        t = self.tcfg
        self.setup(model.to(device), lambda _: torch.optim.AdamW(model.speech.parameters(), lr=t.lr,
                                                                 betas=t.adam_betas), SpeechState(),
                   runs=model.speech)

    def identity(self) -> dict[str, Any]:
        """What must match for a resume to be the same run."""
        return {"speech": OmegaConf.to_container(self.cfg.speech, resolve=True), "vqvae": self.meta["vqvae_sha256"],
                "data": OmegaConf.to_container(self.cfg.data, resolve=True), "seed": self.cfg.seed,
                "segment_frames": self.cfg.segment_frames, "f0_loss_weight": self.cfg.f0_loss_weight,
                "world_size": self.ddp.world_size, "batch_size": self.tcfg.batch_size}

    def save(self, name: str, rng: list[dict[str, Any]], metrics: dict[str, float] | None = None) -> None:
        resume = {**self.opt.state_dict(), "state": dict(self.state.__dict__), "rng": rng, "identity": self.identity()}
        config = dict(self.meta["vqvae_config"])
        config["model"] = {**config["model"], "speech": OmegaConf.to_container(self.cfg.speech, resolve=True)}
        config["speech_training"] = {k: v for k, v in OmegaConf.to_container(self.cfg, resolve=True).items()
                                     if k != "speech"} | {"vqvae_sha256": self.meta["vqvae_sha256"]}
        save_checkpoint(self.ckpt_dir / name, self.model.state_dict(), config, self.model.speakers, self.state.step,
                        resume, metrics)

    def check_resumable(self, path: Path, ckpt: dict[str, Any]) -> None:
        saved = ckpt["resume"]
        if saved is None or saved.get("identity") != self.identity():
            raise ValueError(f"{path}: not a resumable checkpoint of this speech run (other speech config, VQ-VAE, "
                             "data, seed, crop, world size or batch size); pick another run_dir=...")

    def batch(self) -> SpeechBatch:
        """This step's batch (a function of seed, rank, step and the skips so far: a retry draws another) on the
        device."""
        m = self.model
        gen = np.random.default_rng([self.cfg.seed, self.ddp.rank, self.state.step, self.state.nonfinite_total])
        return training_batch(self.train_set, self.tcfg.batch_size, self.cfg.segment_frames, m.sample_rate,
                              m.peak_normalize, m.hop, m.speech.f0_hop, gen).to(self.device)

    def train_step(self) -> dict[str, float] | None:
        """One optimisation step; its loss terms, or None when non-finite on any rank (skipped and counted)."""
        b = self.batch()
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            out = self.net(self.model.quantizer.lookup(b.codes), b.speaker, b.f0, b.voiced, b.lengths)
        loss, parts = speech_loss(out, b, self.cfg.f0_loss_weight)
        self.opt.optimizer.zero_grad(set_to_none=True)
        if not self.ddp.agree(torch.isfinite(loss.detach()), every=True):
            self.count_nonfinite(float(loss.detach()))
            return None
        self.state.nonfinite_consecutive = 0
        self.opt.step(loss, self.model.speech.parameters(), self.tcfg.grad_clip)
        self.state.step += 1
        return parts

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean loss terms over the validation utterances (whole, true F0), decoded in batches."""
        m, feats, totals, n = self.model, self.val_set, {}, 0
        m.speech.eval()
        for start in range(0, len(feats), self.tcfg.batch_size):
            idx = range(start, min(start + self.tcfg.batch_size, len(feats)))
            b = utterance_batch(feats, idx, m).to(self.device)
            out = m.speech(m.quantizer.lookup(b.codes), b.speaker, b.f0, b.voiced, b.lengths)
            _, parts = speech_loss(out, b, self.cfg.f0_loss_weight)
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + v * len(idx)
            n += len(idx)
        m.speech.train()
        return {k: v / n for k, v in totals.items()}

    def run_validation(self, rng: list[dict[str, Any]]) -> None:
        """Rank 0: validation losses, logged; best.pt kept by the STFT loss."""
        if len(self.val_set) == 0:
            return
        metrics = self.validate()
        log.info("step %d validation: stft %.4f  f0 %.4f", self.state.step, metrics["stft"], metrics["f0_total"])
        self.record_validation(metrics, rng, "stft", "best_stft")

    def fit(self) -> VQVAE:
        """Train to trainer.max_steps or until SIGTERM (last.pt written); returns the model."""
        self.model.speech.train()
        self.train_loop("speech", self.train_step)
        return self.model


def write_features(model: VQVAE, data: DictConfig, seed: int, features_dir: Path, batch_size: int
                   ) -> dict[str, Path]:
    """The VQ-VAE's training and validation utterances (its split: its data config and seed) -> their features,
    computed once into features_dir (a rerun finds them) -> {"train": path, "val": path}."""
    paths = {"train": features_dir / "train.npz", "val": features_dir / "val.npz"}
    if not all(p.exists() for p in paths.values()):
        split = split_corpus(load_corpus(data), data, seed)
        features_dir.mkdir(parents=True, exist_ok=True)
        for name, utts in (("train", split.train), ("val", split.val)):
            log.info("features of %d %s utterances (units, F0) -> %s", len(utts), name, paths[name])
            compute_features(model, utts, batch_size).save(paths[name])
    return paths


def vqvae_data(ckpt_config: dict[str, Any], overrides: DictConfig) -> DictConfig:
    """The VQ-VAE checkpoint's data config with the run's `data.*` overrides (where the files are); the split keys
    (seed, held-out speakers and sentences, val_per_speaker) stay the checkpoint's."""
    if not ckpt_config.get("data"):
        raise ValueError("vqvae: the checkpoint records no data config (a corpus and split) to train the speech path on")
    data = OmegaConf.create(ckpt_config["data"])
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    fixed = {"held_out_speakers", "held_out_sentences", "val_per_speaker", "sentence_key", "name"}
    changed = sorted(fixed & set(overrides))
    if changed:
        raise ValueError(f"data.{changed[0]}: the speech path trains on the VQ-VAE's own split; only where its files "
                         "are (data.root, data.manifest ...) may be overridden")
    return OmegaConf.merge(data, overrides)


def train_speech(cfg: DictConfig) -> VQVAE:
    """Train a VQ-VAE's speech path per a speech run config (configs/speech_train.yaml); returns the model."""
    run = start_run(cfg, cfg.threads or 0)
    ddp, device = run.ddp, run.device
    if cfg.vqvae is None:
        raise ValueError("vqvae: give the trained VQ-VAE, vqvae=CHECKPOINT (.pt or a pretrained directory)")
    model = VQVAE.from_checkpoint(cfg.vqvae, device)
    ckpt_config = model.config
    seed_everything(cfg.seed + ddp.rank)
    model.attach_speech(OmegaConf.to_container(cfg.speech, resolve=True))
    data = vqvae_data(ckpt_config, cfg.data)
    paths = ddp.from_main(lambda: write_features(model, data, ckpt_config["seed"], run.run_dir / "features",
                                                 cfg.extract_batch_size))
    train, val = SpeechFeatures.load(paths["train"]), SpeechFeatures.load(paths["val"])
    model.speech.set_stats(speaker_stats({s: [(f, v) for f, v, k in zip(train.f0, train.voiced, train.speakers)
                                              if model.speakers[k] == s] for s in model.speakers}))
    cfg.data = data
    if ddp.is_main:
        (run.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        write_run_files(cfg, run.run_dir, model.speakers)
    log.info("speech path on %s: %d train / %d val utterances, %d speakers", cfg.vqvae, len(train), len(val),
             len(model.speakers))
    meta = {"vqvae_config": ckpt_config, "vqvae_sha256": file_sha256(cfg.vqvae)}
    trainer = SpeechTrainer(cfg, run.run_dir, model, train, val, meta, ddp, device)
    if run.resume_from is not None:
        trainer.restore(run.resume_from)
    return trainer.fit()
