"""VQVAE = encoder + vector quantizer + speaker table + WaveNet decoder; losses, ELBO and the encode/decode API.

VQ-VAE as a VAE (van den Oord et al. 2017): the posterior q(z|x) is one-hot on the nearest code, the prior is
uniform over K codes, so KL(q || p) = log K per latent, a constant. With T_z latents and T samples:

    ELBO = log p(x | z_q(x)) - T_z log K          (nats)

`log p(x | z_q(x))` is minus the decoder's summed cross-entropy (the reconstruction loss), so the training loss
`reconstruction + codebook + beta * commitment` minimises -ELBO up to the constant KL; the codebook and commitment
terms are not part of the ELBO: they train the codebook and keep the encoder close to it, since the
straight-through estimator gives the codebook no gradient from the reconstruction term.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from .audio import input_gain, mu_law_decode, mu_law_encode, prepare_waveform, scale
from .batching import pad_batch
from .encoder import Encoder, num_frames
from .f0 import SINE_AMP, F0Stats, check_contour_length, f0_hop, harmonics, log_f0_stats, map_contour, quantise, track
from .latent_losses import ContrastivePredictor, SpeakerAdversary
from .perturb import perturb_on, perturb_view
from .quantizer import VectorQuantizer
from .source_filter import SpeechDecoder
from .wavenet.model import WaveNet
from .wavenet.sampling import generate

LN2 = math.log(2.0)


def time_jitter(z: torch.Tensor, p: float) -> torch.Tensor:
    """Replace each frame of z [B, D, T] by its left or right neighbour with probability p (Chorowski et al. 2019).

    Vectorised: one uniform draw per frame picks left (u < p/2), right (p/2 <= u < p) or itself; edges clamp.
    """
    if p <= 0.0 or z.shape[-1] < 2:
        return z
    B, D, T = z.shape
    u = torch.rand(B, T, device=z.device)
    shift = (u < p).long() * torch.where(u < p / 2, -1, 1)
    idx = (torch.arange(T, device=z.device) + shift).clamp(0, T - 1)  # [B, T]
    return z.gather(2, idx.unsqueeze(1).expand(B, D, T))


def add_noise(wav: torch.Tensor, snr_db: Sequence[float]) -> torch.Tensor:
    """wav [B, 1, T] plus white noise at an SNR drawn per item uniformly in snr_db = (lo, hi) dB: the encoder's
    view in training when model.noise_augment_snr_db is set. The decoder still predicts the clean wav, so the
    codes must carry what survives the noise."""
    lo, hi = snr_db
    snr = lo + (hi - lo) * torch.rand(wav.shape[0], 1, 1, device=wav.device)
    power = wav.pow(2).mean(-1, keepdim=True).clamp_min(1e-10)
    return wav + torch.randn_like(wav) * (power / 10 ** (snr / 10)).sqrt()


def change_speed(wav: torch.Tensor, bounds: Sequence[float]) -> torch.Tensor:
    """wav [B, 1, T] resampled by a factor r drawn uniformly in bounds = (lo, hi), to 1/100, for the whole batch:
    played at the same rate it is r times slower, with pitch and formants scaled by 1/r (the vocal-tract-length and
    rate differences between speakers). The encoder's view in training when model.speed_augment is set; its
    latents are stretched back onto the clean signal's frames (`VQVAE.forward`)."""
    lo, hi = bounds
    return torchaudio.functional.resample(wav, 100, round(100 * (lo + (hi - lo) * float(torch.rand(())))))


def sample_teacher_forced(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Logits [n_classes, T] of a teacher-forced pass -> waveform [T], each x_t drawn from p(x_t | true x_<t, z_q(x))
    (a quick resynthesis for validation and evaluation; `VQVAE.decode` samples x_<t from the model instead)."""
    classes = torch.multinomial(logits.float().T.softmax(-1), 1, generator=generator)[:, 0]
    return mu_law_decode(classes, logits.shape[0])


def kl_nats(n_latents: int, codebook_size: int) -> float:
    """KL(q(z|x) || p(z)) for a one-hot posterior and a uniform prior over K codes: T_z log K."""
    return n_latents * math.log(codebook_size)


@dataclass
class VQVAEOutput:
    """Training forward result. Per-batch sums are over all items; means are per sample or per latent element."""

    loss: torch.Tensor  # reconstruction + codebook + beta * commitment (+ the weighted auxiliary terms)
    reconstruction_loss: torch.Tensor  # mean cross-entropy per sample, nats = -log p(x|z_q(x)) / T
    codebook_loss: torch.Tensor  # ||sg[z_e] - e||^2 (0 with EMA codebook updates)
    commitment_loss: torch.Tensor  # ||z_e - sg[e]||^2, unweighted
    nll: torch.Tensor  # -log p(x | z_q(x)), nats, summed over the batch
    kl: float  # T_z log K, nats, summed over the batch
    negative_elbo: torch.Tensor  # nll + kl, nats
    bits_per_sample: torch.Tensor  # -ELBO / (T ln 2)
    n_samples: int  # B * T
    n_latents: int  # B * T_z
    perplexity: torch.Tensor
    usage: torch.Tensor
    counts: torch.Tensor  # [K]
    codes: torch.Tensor  # [B, T_z]
    z_e: torch.Tensor  # [B, D, T_z] continuous encoder outputs
    logits: torch.Tensor  # [B, 256, T]
    restarted: int
    # issue 20's terms outside the ELBO (in `loss` at their weights), training only: speaker_adversary_loss/_accuracy,
    # contrastive_loss/_accuracy, each present when its weight is > 0
    auxiliary: dict[str, torch.Tensor] = field(default_factory=dict)


def _enabled(cfg: Mapping[str, Any] | None) -> bool:
    """Whether an auxiliary-term node (`model.speaker_adversary`, `model.contrastive`) is on: weight > 0."""
    return cfg is not None and float(cfg.get("weight") or 0.0) > 0


class VQVAE(nn.Module):
    """The speech VQ-VAE: wav -> z_e -> (codes, z_q) -> WaveNet(x_<t | upsampled z_q, speaker) -> p(x_t)."""

    def __init__(
        self,
        encoder: Encoder,
        quantizer: VectorQuantizer,
        decoder: WaveNet,
        speakers: Sequence[str],
        speaker_dim: int,
        beta: float,
        jitter: float,
        sample_rate: int,
        noise_augment_snr_db: Sequence[float] | None = None,
        speed_augment: Sequence[float] | None = None,
        speech: Mapping[str, Any] | None = None,
        speaker_adversary: Mapping[str, Any] | None = None,
        contrastive: Mapping[str, Any] | None = None,
        perturb: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not speakers:
            raise ValueError("VQVAE needs at least one speaker name")
        self.encoder = encoder
        self.quantizer = quantizer
        self.decoder = decoder
        self.speaker_embedding = nn.Embedding(len(speakers), speaker_dim)
        self.speakers = list(speakers)
        self.beta = beta
        self.jitter = jitter
        self.noise_augment_snr_db = tuple(noise_augment_snr_db) if noise_augment_snr_db is not None else None
        self.speed_augment = tuple(speed_augment) if speed_augment is not None else None
        self.sample_rate = sample_rate
        self.peak_normalize: float | None = None  # the training data's data.peak_normalize; see `input_gain`
        self.start_class = int(mu_law_encode(torch.zeros(()), decoder.n_classes))
        self.speech: SpeechDecoder | None = None
        if speech is not None:
            self.attach_speech(speech)
        # issue 20's levers, each off (no module, no state-dict key) unless configured
        self.adversary_weight = float(speaker_adversary["weight"]) if _enabled(speaker_adversary) else 0.0
        self.adversary = SpeakerAdversary(encoder.latent_dim, len(speakers), int(speaker_adversary["hidden"]),
                                          float(speaker_adversary["lambda"]), speaker_adversary["pool"]) \
            if self.adversary_weight else None
        self.contrastive_weight = float(contrastive["weight"]) if _enabled(contrastive) else 0.0
        self.contrastive_target = contrastive.get("target", "z_e") if self.contrastive_weight else "z_e"
        if self.contrastive_target not in ("z_e", "z_q"):
            raise ValueError(f"model.contrastive.target: {self.contrastive_target!r} is not one of z_e, z_q")
        self.contrastive = ContrastivePredictor(encoder.latent_dim, int(contrastive["context"]),
                                                int(contrastive["steps"]), int(contrastive["negatives"])) \
            if self.contrastive_weight else None
        self.perturb = dict(perturb) if perturb_on(perturb) else None

    @classmethod
    def from_config(cls, cfg: Any, speakers: Sequence[str]) -> VQVAE:
        """Build from a `model` config node (OmegaConf or plain dict) and the speaker map."""
        enc = Encoder(**cfg["encoder"], sample_rate=cfg["sample_rate"])
        quantizer = VectorQuantizer(dim=enc.latent_dim, **cfg["quantizer"])
        decoder = WaveNet(**cfg["decoder"], latent_dim=enc.latent_dim, hop=enc.hop, global_channels=cfg["speaker_dim"])
        return cls(enc, quantizer, decoder, speakers, cfg["speaker_dim"], cfg["beta"], cfg["jitter"],
                   cfg["sample_rate"], cfg.get("noise_augment_snr_db"), cfg.get("speed_augment"), cfg.get("speech"),
                   cfg.get("speaker_adversary"), cfg.get("contrastive"), cfg.get("perturb"))

    def attach_speech(self, cfg: Mapping[str, Any]) -> SpeechDecoder:
        """A new (untrained) speech path per a `model.speech` node (configs/speech/) beside the WaveNet; it decodes
        these units in one pass given an F0 contour (`training.speech` trains it on the frozen units)."""
        self.speech = SpeechDecoder(cfg, self.encoder.latent_dim, self.hop, self.sample_rate, self.speakers)
        return self.speech.to(self.speaker_embedding.weight.device)

    @classmethod
    def from_checkpoint(cls, path: str, device: str | torch.device = "cpu") -> VQVAE:
        """Load a trained model from a checkpoint file (safe `weights_only` load) or a pretrained directory
        (safetensors + JSON), in eval mode on `device`."""
        from .checkpoint import load_checkpoint
        from .device import resolve_device

        ckpt = load_checkpoint(path)
        model = cls.from_config(ckpt["config"]["model"], ckpt["speakers"])
        model.load_state_dict(ckpt["model"])
        model.checkpoint_path = str(path)
        model.config = ckpt["config"]  # the resolved run config it was trained with
        model.step = ckpt["step"]
        peak = (ckpt["config"].get("data") or {}).get("peak_normalize")
        model.peak_normalize = None if peak is None else float(peak)
        return model.to(resolve_device(str(device))).eval()

    @classmethod
    def from_pretrained(cls, path: str, device: str | torch.device = "cpu") -> VQVAE:
        """Load a pretrained directory (`model.safetensors` + `config.json`, see checkpoint.save_pretrained)."""
        if not Path(path).is_dir():
            raise ValueError(f"{path}: from_pretrained takes a pretrained model directory; use from_checkpoint for .pt")
        return cls.from_checkpoint(path, device)

    @property
    def hop(self) -> int:
        return self.encoder.hop

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def frame_rate(self) -> float:
        """Latent frames (units) per second."""
        return self.sample_rate / self.hop

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def contour_hop(self) -> int:
        """Samples per frame of the F0 contours this model reads and writes (`f0_contour`, `decode`, units files): the
        speech path's, else the tracker's default rate (f0.FRAME_RATE), which a WaveNet with an excitation uses."""
        return self.speech.f0_hop if self.speech is not None else f0_hop(self.sample_rate)

    # ---- training -------------------------------------------------------------------------------------------

    def decoder_inputs(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """wav [..., T] -> (target mu-law classes [..., T], previous-sample classes [..., T]: shifted right by one,
        the start class (mu-law of silence) first) for teacher forcing."""
        target = mu_law_encode(wav, self.decoder.n_classes)
        return target, F.pad(target[..., :-1], (1, 0), value=self.start_class)

    def forward(self, wav: torch.Tensor, speaker: torch.Tensor) -> VQVAEOutput:
        """wav [B, 1, T] in [-1, 1], speaker [B] -> losses, ELBO and stats.

        Frames are those of `encode` (T_z = T // hop, each from the whole input); the decoder models the first
        T_z * hop samples, the ones the frames cover.
        """
        T = num_frames(wav.shape[-1], self.hop) * self.hop
        if T == 0:
            raise ValueError(f"input of {wav.shape[-1]} samples is shorter than one latent frame ({self.hop} samples)")
        view = change_speed(wav, self.speed_augment) if self.training and self.speed_augment is not None else wav
        if self.training and self.perturb is not None:
            view = perturb_view(view, self.perturb, self.sample_rate)
        if self.training and self.noise_augment_snr_db is not None:
            view = add_noise(view, self.noise_augment_snr_db)
        z_e = self.encoder(view)  # [B, D, T_z], or another length when the speed changed: stretched back below
        if z_e.shape[-1] != T // self.hop:
            z_e = F.interpolate(z_e, size=T // self.hop, mode="linear", align_corners=False)
        target, prev = self.decoder_inputs(wav[:, 0, :T])  # [B, T_z * hop] each
        q = self.quantizer(z_e)
        z = time_jitter(q.quantized, self.jitter) if self.training else q.quantized
        excitation = None
        if self.decoder.takes_f0:  # the target's own contour (F0 tracked on the CPU)
            contours = [self.f0_contour(w) for w in wav[:, 0, :T].detach().float().cpu().numpy()]
            excitation = self.wavenet_excitation(*(torch.from_numpy(np.stack(a)).to(wav.device)
                                                   for a in zip(*contours)), T)
        logits = self.decoder(prev, z, self.speaker_embedding(speaker), excitation)  # [B, 256, T]
        nll_per_sample = F.cross_entropy(logits.float(), target, reduction="none")  # [B, T]
        reconstruction = nll_per_sample.mean()
        nll = nll_per_sample.sum()
        n_latents = q.codes.numel()
        kl = kl_nats(n_latents, self.codebook_size)
        negative_elbo = nll + kl
        loss = reconstruction + q.codebook_loss + self.beta * q.commitment_loss
        auxiliary: dict[str, torch.Tensor] = {}
        if self.training and self.adversary is not None:
            auxiliary["speaker_adversary_loss"], auxiliary["speaker_adversary_accuracy"] = self.adversary(z_e, speaker)
            loss = loss + self.adversary_weight * auxiliary["speaker_adversary_loss"]
        if self.training and self.contrastive is not None:
            z_c = z_e if self.contrastive_target == "z_e" else q.quantized
            auxiliary["contrastive_loss"], auxiliary["contrastive_accuracy"] = self.contrastive(z_c, speaker)
            loss = loss + self.contrastive_weight * auxiliary["contrastive_loss"]
        return VQVAEOutput(
            loss=loss,
            reconstruction_loss=reconstruction,
            codebook_loss=q.codebook_loss,
            commitment_loss=q.commitment_loss,
            nll=nll.detach(),
            kl=kl,
            negative_elbo=negative_elbo.detach(),
            bits_per_sample=negative_elbo.detach() / (target.numel() * LN2),
            n_samples=target.numel(),
            n_latents=n_latents,
            perplexity=q.perplexity,
            usage=q.usage,
            counts=q.counts,
            codes=q.codes,
            z_e=z_e,
            logits=logits,
            restarted=q.restarted,
            auxiliary=auxiliary,
        )

    # ---- inference ------------------------------------------------------------------------------------------

    def speaker_index(self, speaker: str | int) -> int:
        """Speaker name (or index) -> index; unknown names raise a ValueError listing the valid ones."""
        if isinstance(speaker, int):
            if not 0 <= speaker < len(self.speakers):
                raise ValueError(f"speaker index {speaker} out of range (0..{len(self.speakers) - 1})")
            return speaker
        if speaker not in self.speakers:
            raise ValueError(f"unknown speaker {speaker!r}; valid speakers: {', '.join(self.speakers)}")
        return self.speakers.index(speaker)

    def input_gain(self, peak: float) -> float:
        """`audio.input_gain` with this model's `peak_normalize` (the training data's)."""
        return input_gain(peak, self.peak_normalize)

    def prepare(self, wav: torch.Tensor | np.ndarray, sr: int, channels_first: bool | None = None) -> torch.Tensor:
        """In-memory audio ([T], [C, T] or [T, C], see `audio.to_mono`) at rate sr -> the model's input [T]: mono, at
        the model rate, scaled by `input_gain` of its peak. Files go through the same steps in `extract`."""
        peak = float(torch.as_tensor(wav).abs().max()) if len(wav) else 0.0
        return scale(prepare_waveform(wav, sr, self.sample_rate, channels_first), self.input_gain(peak))

    @torch.inference_mode()
    def encode_latents(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Model-rate mono batch [B, 1, T] -> continuous encoder outputs z_e [B, D, T // hop] (exact per item)."""
        return self.encoder(wav, lengths)

    @torch.inference_mode()
    def encode_batch(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Prepared, zero-padded batch [B, 1, T] with valid lengths [B] -> codes [B, T // hop]: the one audio -> codes
        step that `encode`, `extract`, the posterior probe and evaluation share. Frame i of an item of n samples
        depends only on that item (zero padding past n); its first n // hop frames are its codes."""
        lengths = None if lengths is None else lengths.to(self.device)
        return self.quantizer.nearest(self.encoder(wav.to(self.device), lengths))

    @torch.inference_mode()
    def encode(
        self,
        wav: torch.Tensor | np.ndarray | Sequence[torch.Tensor | np.ndarray],
        sr: int,
        channels_first: bool | None = None,
    ) -> torch.Tensor | list[torch.Tensor]:
        """Audio [T], [C, T] or [T, C] at rate sr (or a list of them, any lengths) -> codes [T // hop] (or a list).

        The audio is prepared as in training (`prepare`: mono, model rate, peak-normalised as the checkpoint's data
        config says), so the codes equal `audio-vqvae-units`' for the same file. Batched items give exactly the codes
        each gives alone.
        """
        single = isinstance(wav, (torch.Tensor, np.ndarray))
        out = self.encode_prepared([self.prepare(w, sr, channels_first) for w in ([wav] if single else list(wav))])
        return out[0] if single else out

    @torch.inference_mode()
    def encode_prepared(self, wavs: Sequence[torch.Tensor], batch_size: int | None = None) -> list[torch.Tensor]:
        """Model inputs [T_i] (already prepared: `prepare`, `audio.load_model_input`, or a perturbation or decoding
        of them) -> codes [T_i // hop] each (CPU), zero-padded `batch_size` at a time (None: all at once) through
        `encode_batch`: the batched encode loop of `encode`, evaluation, generation and the training curves."""
        step = batch_size or max(1, len(wavs))
        out = []
        for i in range(0, len(wavs), step):
            batch, lengths = pad_batch(list(wavs[i : i + step]))
            codes = self.encode_batch(batch[:, None], lengths)  # [B, T_z]
            out += [c[: num_frames(int(n), self.hop)].cpu() for c, n in zip(codes, lengths)]
        return out

    @torch.inference_mode()
    def decode(
        self,
        codes: torch.Tensor | Sequence[torch.Tensor],
        speaker: str | int | Sequence[str | int],
        temperature: float = 1.0,
        greedy: bool = False,
        progress: Any = None,
        kernel: str = "auto",
        generator: torch.Generator | None = None,
        decoder: str = "auto",
        f0: Contour | Sequence[Contour | None] | None = None,
    ) -> torch.Tensor | list[torch.Tensor]:
        """Codes [T_z] (or a list) -> waveform [T_z * hop] at the model rate (or a list).

        decoder: "source_filter" (the speech path, one pass, given an F0 contour), "wavenet" (incremental sampling
        of the likelihood decoder) or "auto" (the speech path when the model has one). f0: per item an (F0 Hz,
        voiced) pair of arrays at the speech path's frame rate (`SpeechDecoder.track` of the source), or None for
        the F0 predictor's contour; the WaveNet takes none.

        A batch is padded with zero latents (not a code), which is what an item alone sees past its end, so each item
        of a batch decodes as it would alone. WaveNet: kernel, the generation loop, "auto" (compiled numba on CPU,
        torch elsewhere), "torch" or "numba"; temperature and greedy; a WaveNet with an F0 excitation
        (decoder.excitation_harmonics > 0) takes the contours as the speech path does. generator: the random source of the sampling
        or the noise (None = torch's global one), so a seeded generator makes the output reproducible.
        """
        single = isinstance(codes, torch.Tensor)
        seqs = [codes] if single else list(codes)
        speakers = [speaker] * len(seqs) if isinstance(speaker, (str, int)) else list(speaker)
        if len(speakers) != len(seqs):
            raise ValueError(f"decode: {len(seqs)} code sequences but {len(speakers)} speakers")
        for s in seqs:
            if s.numel() and (int(s.min()) < 0 or int(s.max()) >= self.codebook_size):
                raise ValueError(f"decode: codes must lie in 0..{self.codebook_size - 1}")
        padded, n_frames = pad_batch([s.long().cpu() for s in seqs])
        padded, n_frames = padded.to(self.device), n_frames.to(self.device)
        valid = torch.arange(padded.shape[1], device=self.device) < n_frames[:, None]  # [B, T_z]
        latents = self.quantizer.lookup(padded) * valid[:, None]  # [B, D, T_z], zero past each item's end
        spk = torch.tensor([self.speaker_index(s) for s in speakers], device=self.device)
        contours = list(f0 if isinstance(f0, Sequence) and not _is_contour(f0) else [f0] * len(seqs))
        if self.resolve_decoder(decoder) == "source_filter":
            wavs = self.speech.synthesise(latents, spk, *self._contours(latents, spk, n_frames, contours),
                                          n_frames * self.hop, generator)[:, 0]
            out = [w[: int(n) * self.hop] for w, n in zip(wavs, n_frames)]
            return out[0] if single else out
        excitation = None
        if self.decoder.takes_f0:
            excitation = self.wavenet_excitation(*self._contours(latents, spk, n_frames, contours),
                                                 latents.shape[-1] * self.hop)
        elif f0 is not None:
            raise ValueError("decode: decoder=wavenet takes no F0 contour (decoder.excitation_harmonics=0; the "
                             "speech path does)")
        classes = generate(
            self.decoder,
            latents,
            self.speaker_embedding(spk),
            temperature=temperature,
            greedy=greedy,
            lengths=n_frames * self.hop,
            start_class=self.start_class,
            progress=progress,
            kernel=kernel,
            generator=generator,
            excitation=excitation,
        )
        wavs = mu_law_decode(classes, self.decoder.n_classes)
        out = [w[: int(n) * self.hop] for w, n in zip(wavs, n_frames)]
        return out[0] if single else out

    def uses_f0(self, decoder: str) -> bool:
        """Whether decoding with `decoder` ("auto" resolved) takes F0 contours: the speech path does, and so does a
        WaveNet with an F0 excitation input (decoder.excitation_harmonics > 0)."""
        return self.resolve_decoder(decoder) == "source_filter" or self.decoder.takes_f0

    def resolve_decoder(self, decoder: str) -> str:
        """"auto" -> "source_filter" when the model has a speech path, else "wavenet"; a ValueError for unknown names
        or for the speech path on a checkpoint without one."""
        if decoder not in DECODER_CHOICES:
            raise ValueError(f"decoder: {decoder!r} is not one of {', '.join(DECODER_CHOICES)}")
        if decoder == "auto":
            return "source_filter" if self.speech is not None else "wavenet"
        if decoder == "source_filter" and self.speech is None:
            raise ValueError("decoder=source_filter: this checkpoint has no speech path (F0 + source-filter decoder); "
                             "train one with audio-vqvae-train-speech vqvae=CHECKPOINT")
        return decoder

    def _contours(self, latents: torch.Tensor, spk: torch.Tensor, n_frames: torch.Tensor,
                  contours: list[Contour | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """A padded batch's F0 [B, T_f] and voicing [B, T_f] at contour_hop: latents [B, D, T_z] (zero past each
        end), speakers and unit counts [B], one contour per item (None: the speech path's F0 predictor)."""
        if self.hop % self.contour_hop:
            raise ValueError(f"F0 frames of {self.contour_hop} samples do not tile a unit of {self.hop}")
        per_unit = self.hop // self.contour_hop
        n_f0 = latents.shape[-1] * per_unit
        f0 = torch.zeros(len(contours), n_f0, device=self.device)
        voiced = torch.zeros(len(contours), n_f0, dtype=torch.bool, device=self.device)
        if any(c is None for c in contours):
            if self.speech is None:
                raise ValueError("F0: no contour given and this checkpoint has no speech path to predict one "
                                 "(train one with audio-vqvae-train-speech vqvae=CHECKPOINT)")
            f0, voiced = self.speech.predict_f0(latents, spk, n_f0, n_frames * self.hop)
        for i, c in enumerate(contours):
            if c is not None:
                f0[i], voiced[i] = fit_contour(c, int(n_frames[i]) * per_unit, n_f0, self.device, per_unit)
        return f0, voiced

    def wavenet_excitation(self, f0: torch.Tensor, voiced: torch.Tensor, n: int) -> torch.Tensor:
        """F0 [B, T_f] and voicing [B, T_f] at contour_hop -> the WaveNet's excitation [B, H, n]: the sine harmonics,
        zero where unvoiced (`f0.harmonics`), at unit amplitude (on the scale of the embedded input: at the NSF's
        SINE_AMP = 0.1 the trained projection stayed at its initial weights), cut or zero-padded to n samples."""
        e = harmonics(f0.float(), voiced, self.sample_rate, self.contour_hop, self.decoder.excitation_harmonics)
        e = e / SINE_AMP
        return F.pad(e, (0, max(0, n - e.shape[-1])))[..., :n]

    def f0_contour(self, wav: torch.Tensor | np.ndarray) -> Contour:
        """The model-rate input [T] (`prepare`) -> its (F0 Hz, voiced) at contour_hop (the speech path's tracker
        settings, else the tracker's defaults), F0 at the 0.1 Hz resolution units files store (`f0.quantise`), so
        units + F0 from a file decode as from the audio."""
        wav = np.asarray(wav, dtype=np.float32)
        if self.speech is not None:
            f0, voiced = self.speech.track(wav)
        elif self.decoder.takes_f0:
            f0, voiced = track(wav, self.sample_rate)
        else:
            raise ValueError("F0: this checkpoint has no speech path (its F0 frame rate and tracker settings)")
        return quantise(f0), voiced

    @torch.inference_mode()
    def convert(
        self,
        wav: torch.Tensor | np.ndarray,
        sr: int,
        target_speaker: str | int,
        temperature: float = 1.0,
        greedy: bool = False,
        decoder: str = "auto",
        f0: str = "mapped",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Voice conversion: encode the source utterance, decode its units with the target speaker's embedding.

        With the speech path, f0 picks the contour: "mapped" (the source's, its log-F0 mean and std moved to the
        target speaker's: the field's usual conversion), "source" (unchanged) or "predicted" (the F0 predictor's,
        in the target's register)."""
        if f0 not in F0_CHOICES:
            raise ValueError(f"f0: {f0!r} is not one of {', '.join(F0_CHOICES)}")
        x = self.prepare(wav, sr)
        codes = self.encode_prepared([x])[0]
        decoder = self.resolve_decoder(decoder)
        if not self.uses_f0(decoder):
            return self.decode(codes, target_speaker, temperature, greedy, decoder="wavenet", generator=generator)
        if f0 == "mapped" and self.speech is None:
            raise ValueError("f0=mapped needs the speakers' log-F0 statistics of a speech path; use f0=source or "
                             "train one with audio-vqvae-train-speech vqvae=CHECKPOINT")
        contour = None if f0 == "predicted" else self.f0_contour(x.numpy())
        if f0 == "mapped":
            contour = mapped_contour(contour, self.speech.speaker_stats(self.speaker_index(target_speaker)))
        return self.decode(codes, target_speaker, temperature, greedy, decoder=decoder, f0=contour,
                           generator=generator)


Contour = tuple[np.ndarray, np.ndarray]
"""An F0 contour: (F0 in Hz [T_f] float, voiced [T_f] bool) at the speech path's frame rate."""

DECODER_CHOICES = ("auto", "source_filter", "wavenet")
F0_CHOICES = ("mapped", "source", "predicted")


def _is_contour(x: Any) -> bool:
    return isinstance(x, tuple) and len(x) == 2 and all(isinstance(a, np.ndarray) for a in x)


def fit_contour(contour: Contour, n: int, size: int, device: torch.device, per_unit: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """A contour for n F0 frames (the units' own, per_unit to a unit), cropped from at most per_unit more,
    zero-padded to size; a ValueError when its length disagrees with the units' (`f0.check_contour_length`)."""
    f0, voiced = (np.asarray(a).reshape(-1) for a in contour)
    if len(f0) != len(voiced):
        raise ValueError(f"F0 contour of {len(f0)} frames has {len(voiced)} voicing flags")
    check_contour_length(len(f0), n, per_unit)

    def pad(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return F.pad(torch.as_tensor(a[:n], dtype=dtype, device=device), (0, size - n))

    return pad(np.nan_to_num(f0.astype(np.float32)), torch.float32), pad(voiced.astype(bool), torch.bool)


def mapped_contour(contour: Contour, target: F0Stats) -> Contour:
    """The source contour with its own log-F0 mean and std (over its voiced frames) moved to the target's; a
    contour without a voiced frame stays as it is."""
    f0, voiced = contour
    source = log_f0_stats([contour])
    if source is None:
        return contour
    mapped = map_contour(torch.from_numpy(f0), torch.from_numpy(voiced), source, target)
    return mapped.numpy().astype(np.float32), voiced


UNITS_BATCH = 16
"""Utterances encoded per `encode_batch` call by `units_of`."""


def units_of(model: VQVAE, wavs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Codes [T // hop] of numpy audio already at the model's input (`data.load_wavs` with the model's
    peak_normalize, or a perturbation or decoding of it): `VQVAE.encode_prepared`, no second peak normalisation."""
    tensors = [torch.from_numpy(np.asarray(w, dtype=np.float32)) for w in wavs]
    return [c.numpy() for c in model.encode_prepared(tensors, UNITS_BATCH)]
