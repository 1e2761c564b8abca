"""Auxiliary training terms on the encoder's latents (issue 20), outside the ELBO: a speaker adversary behind a
gradient-reversal layer (Ganin & Lempitsky 2015), and a CPC-style contrastive term whose negatives come from the same
speaker (van Niekerk et al. 2020, VQ-CPC), so that speaker identity cannot tell the positive from a negative.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class GradientReversal(torch.autograd.Function):
    """Identity forward; backward multiplies the incoming gradient by -lambda."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lam: float) -> torch.Tensor:
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.lam * grad, None


def reverse_gradient(x: torch.Tensor, lam: float) -> torch.Tensor:
    """x unchanged; its gradient flows back times -lam."""
    return GradientReversal.apply(x, lam)


class SpeakerAdversary(nn.Module):
    """A small speaker classifier on z_e [B, D, T_z] behind gradient reversal: the classifier learns the speaker, the
    encoder learns to hide it. pool="utterance" classifies the mean over the crop's frames, "frame" every frame."""

    def __init__(self, latent_dim: int, n_speakers: int, hidden: int, lam: float, pool: str) -> None:
        super().__init__()
        if pool not in ("utterance", "frame"):
            raise ValueError(f"model.speaker_adversary.pool: {pool!r} is not one of utterance, frame")
        self.lam, self.pool = lam, pool
        self.net = nn.Sequential(nn.Conv1d(latent_dim, hidden, 1), nn.ReLU(), nn.Conv1d(hidden, n_speakers, 1))

    def forward(self, z_e: torch.Tensor, speaker: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (cross-entropy, accuracy) of the speaker [B] from z_e; the gradient into z_e is reversed."""
        z = reverse_gradient(z_e.float(), self.lam)
        if self.pool == "utterance":
            z = z.mean(-1, keepdim=True)
        logits = self.net(z)  # [B, S, T_z or 1]
        target = speaker[:, None].expand(-1, logits.shape[-1])
        return F.cross_entropy(logits, target), (logits.argmax(1) == target).float().mean()


def same_speaker_negatives(speaker: torch.Tensor, T: int, positive: torch.Tensor, n: int,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """Negatives for InfoNCE over frames of a [B, T] batch, flat index b * T + t: for each positive (flat indices
    [P]), n indices drawn uniformly from the frames of the batch items with the positive's speaker, the positive
    itself excluded -> [P, n]. An item whose speaker has no other item in the batch draws from its own frames."""
    out = torch.empty(len(positive), n, dtype=torch.long, device=positive.device)
    item = positive // T
    for s in speaker.unique():
        members = (speaker == s).nonzero()[:, 0]  # batch items of speaker s
        rows = (speaker[item] == s).nonzero()[:, 0]  # positives of speaker s
        if len(rows) == 0:
            continue
        rank = (members[None, :] == item[rows, None]).long().argmax(1)  # position of the positive's item
        local = rank * T + positive[rows] % T  # the positive in the speaker's pool [len(members) * T]
        r = torch.randint(0, len(members) * T - 1, (len(rows), n), generator=generator, device=positive.device)
        r = r + (r >= local[:, None]).long()  # skip the positive
        out[rows] = members[r // T] * T + r % T
    return out


class ContrastivePredictor(nn.Module):
    """CPC on latents z [B, D, T_z]: a causal GRU context c_t predicts z_{t+k} for k = 1..steps through one linear map
    per k; InfoNCE against `same_speaker_negatives`."""

    def __init__(self, latent_dim: int, context: int, steps: int, negatives: int) -> None:
        super().__init__()
        self.steps, self.negatives = steps, negatives
        self.gru = nn.GRU(latent_dim, context, batch_first=True)
        self.predict = nn.ModuleList(nn.Linear(context, latent_dim) for _ in range(steps))

    def forward(self, z: torch.Tensor, speaker: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (InfoNCE loss, accuracy: the positive scored above every negative), averaged over k and positions."""
        B, D, T = z.shape
        frames = z.float().transpose(1, 2)  # [B, T, D]
        flat = frames.reshape(B * T, D)
        c, _ = self.gru(frames)  # [B, T, H], causal
        losses, hits = [], []
        for k, head in enumerate(self.predict, start=1):
            if T <= k:
                break
            pred = head(c[:, : T - k]).reshape(-1, D)  # [B * (T - k), D]
            t = torch.arange(T - k, device=z.device)
            positive = (torch.arange(B, device=z.device)[:, None] * T + t + k).reshape(-1)
            candidates = torch.cat([positive[:, None], same_speaker_negatives(speaker, T, positive, self.negatives)], 1)
            scores = torch.einsum("pd,pnd->pn", pred, flat[candidates])  # positive first
            zero = torch.zeros(len(scores), dtype=torch.long, device=z.device)
            losses.append(F.cross_entropy(scores, zero))
            hits.append((scores.argmax(1) == 0).float().mean())
        if not losses:
            raise ValueError(f"model.contrastive: {T} latent frames leave nothing to predict {self.steps} steps ahead")
        return torch.stack(losses).mean(), torch.stack(hits).mean()
