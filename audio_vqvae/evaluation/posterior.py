"""Posterior probe: the exact conditional posterior of one latent, p(z_t = k | x, z_-t), over all K codes.

With a uniform prior over codes, p(z_t = k | x, z_-t) = p(x | z_-t, z_t = k) / sum_j p(x | z_-t, z_t = j). Changing
z_t changes the decoder's conditioning only on the samples its upsampled frame covers, and a conditioning sample
reaches the logits of the next `receptive_field - 1` samples; every other factor of p(x | z) is the same for all k
and cancels. So each candidate is scored on that window only, with enough left context that every scored logit
sees its whole receptive field, and the K candidates run as one batch (in chunks). z_-t are the encoder's codes.

Comparing this posterior with the VQ-VAE's one-hot q(z_t | x) (the nearest code) shows how far q is from the true
posterior: how often the argmax is q's code, the posterior entropy, and KL(q || p) = -log p(z_t = q's code | ...).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..model import VQVAE
from ..wavenet.model import WaveNet


@dataclass(frozen=True)
class Window:
    """What scoring one latent frame needs: the latent crop [f0, f1) and the samples [s0, s1) whose logits
    depend on that frame (all other logits do not). Crop-relative sample indices start at f0 * hop."""

    f0: int
    f1: int
    s0: int
    s1: int


def probe_window(decoder: WaveNet, frame: int, n_frames: int) -> Window:
    """The window of latent `frame` in a sequence of n_frames latents (n_frames * hop samples).

    Frame t conditions samples [c0, c1) (the decoder's `cond_span`); logit s depends on the conditioning and
    inputs at s - (rf - 1) .. s, so z_t moves the logits [c0, c1 + rf - 1). Those logits need exact conditioning and inputs on
    [c0 - (rf - 1), s1): the crop holds every frame whose upsampled span meets that range, and starts at or before it.
    """
    if not 0 <= frame < n_frames:
        raise ValueError(f"frame {frame} out of range for {n_frames} latent frames")
    kernel, stride, pad = decoder.cond_span
    total, context = n_frames * decoder.hop, decoder.receptive_field - 1
    s0 = max(0, frame * stride - pad)
    s1 = min(total, frame * stride - pad + kernel + context)
    need = max(0, s0 - context)  # first sample the scored logits look at
    f0 = max(0, min((need + pad - kernel) // stride + 1, need // stride))
    f1 = min(n_frames, (s1 - 1 + pad) // stride + 1)
    reach = decoder.cond_reach  # the conditioning stack needs the crop's frames' neighbours too
    return Window(max(0, f0 - reach), min(n_frames, f1 + reach), s0, s1)


@torch.inference_mode()
def candidate_log_likelihoods(
    model: VQVAE, target: Tensor, prev: Tensor, codes: Tensor, speaker: int, frame: int, chunk: int = 64
) -> Tensor:
    """log p(x_window | z_-t, z_t = k) for every code k -> [K], the window being `probe_window`'s.

    target, prev [T] classes (`decoder_inputs`), codes [T_z] the other latents; chunk = candidates per forward.
    Differences between entries equal differences of the full-sequence log p(x | z).
    """
    w = probe_window(model.decoder, frame, codes.numel())
    hop, K = model.hop, model.codebook_size
    latents = model.quantizer.lookup(codes[None, w.f0 : w.f1])  # [1, D, L]
    g = model.speaker_embedding(torch.tensor([speaker], device=codes.device))  # [1, G]
    crop_prev = prev[w.f0 * hop : w.f1 * hop]
    scored = target[w.s0 : w.s1]
    a, b = w.s0 - w.f0 * hop, w.s1 - w.f0 * hop
    out = []
    for k0 in range(0, K, chunk):
        cand = torch.arange(k0, min(K, k0 + chunk), device=codes.device)
        n = cand.numel()
        lat = latents.repeat(n, 1, 1)
        lat[:, :, frame - w.f0] = model.quantizer.codebook[cand]
        logits = model.decoder(crop_prev.expand(n, -1), lat, g.expand(n, -1))[:, :, a:b]  # [n, 256, s1-s0]
        nll = F.cross_entropy(logits.float(), scored.expand(n, -1), reduction="none").sum(1)
        out.append(-nll)
    return torch.cat(out)


@dataclass
class PosteriorProbe:
    """Exact conditional posteriors at some latent positions of one utterance."""

    frames: Tensor  # [N] latent positions t
    codes: Tensor  # [N] the encoder's (nearest) code at t: the mode of the one-hot q(z_t | x)
    log_probs: Tensor  # [N, K] log p(z_t = k | x, z_-t), uniform prior

    @property
    def agreement(self) -> Tensor:
        """[N] bool: the posterior's argmax is the encoder's code."""
        return self.log_probs.argmax(1) == self.codes

    @property
    def entropy(self) -> Tensor:
        """[N] posterior entropy in nats (0 .. log K)."""
        return -(self.log_probs.exp() * self.log_probs).sum(1)

    @property
    def kl(self) -> Tensor:
        """[N] KL(q || p) in nats for the one-hot q: -log p(z_t = q's code | x, z_-t)."""
        return -self.log_probs.gather(1, self.codes[:, None])[:, 0]


@torch.inference_mode()
def conditional_posterior(
    model: VQVAE, wav: Tensor, speaker: int | str, frames: Sequence[int] | None = None, chunk: int = 64
) -> PosteriorProbe:
    """Exact p(z_t = k | x, z_-t) for latent positions `frames` (default: all) of a model-rate mono wav [T].

    z_-t are the encoder's nearest codes; `speaker` is the decoder's speaker (name or index).
    """
    wav = wav.to(model.device)
    codes = model.encode_batch(wav[None, None])[0]  # [T_z]
    if codes.numel() == 0:
        raise ValueError(f"posterior probe: {wav.shape[-1]} samples is shorter than one latent frame ({model.hop})")
    n = wav.shape[-1] // model.hop * model.hop
    target, prev = model.decoder_inputs(wav[:n])
    spk = model.speaker_index(speaker)
    frames_t = torch.arange(codes.numel()) if frames is None else torch.as_tensor(list(frames), dtype=torch.long)
    rows = [candidate_log_likelihoods(model, target, prev, codes, spk, int(t), chunk) for t in frames_t]
    log_lik = torch.stack(rows) if rows else torch.empty(0, model.codebook_size, device=model.device)
    return PosteriorProbe(frames_t.cpu(), codes[frames_t.to(codes.device)].cpu(), log_lik.log_softmax(1).cpu())


def summarize(probes: Sequence[PosteriorProbe], codebook_size: int) -> dict[str, float]:
    """Pooled probe statistics: agreement of argmax and encoder code, mean entropy and mean KL(q || p)."""
    n = sum(p.frames.numel() for p in probes)
    if n == 0:
        raise ValueError("posterior probe: no positions to summarise")
    entropy = float(torch.cat([p.entropy for p in probes]).double().mean())
    kl = float(torch.cat([p.kl for p in probes]).double().mean())
    return {
        "n_positions": n,
        "argmax_agreement": float(torch.cat([p.agreement for p in probes]).double().mean()),
        "entropy_nats": entropy,
        "entropy_bits": entropy / math.log(2),
        "max_entropy_nats": math.log(codebook_size),
        "kl_nats": kl,
        "kl_bits": kl / math.log(2),
    }
