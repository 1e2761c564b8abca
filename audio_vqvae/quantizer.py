"""Vector quantizer: nearest code, straight-through gradients, losses, EMA codebook, dead-code restart, usage stats.

VQ-VAE (van den Oord et al. 2017) with the EMA codebook update of its appendix (Razavi et al. 2019), codebook
initialisation from the first training batch (random encoder outputs or k-means) and re-seeding of codes that stay
unused (Dhariwal et al. 2020). Codebook maths is float32, even under autocast. Under torch.distributed, training-mode
batch statistics are summed over ranks and every random choice is taken from rank 0, so all buffers stay identical.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

Init = Literal["none", "kmeans", "random"]


def _distributed() -> bool:
    """True when a process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce_sum(x: Tensor) -> Tensor:
    """Sum `x` in place over all ranks (no-op in a single process)."""
    if _distributed():
        dist.all_reduce(x)
    return x


def _all_finite(x: Tensor) -> bool:
    """True when every element of `x` is finite on every rank (so all ranks take the same branch)."""
    flag = torch.isfinite(x).all().to(torch.int32)
    if _distributed():
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag)


def _broadcast(x: Tensor) -> Tensor:
    """Overwrite `x` in place with rank 0's copy (no-op in a single process)."""
    if _distributed():
        dist.broadcast(x, src=0)
    return x


def _flatten(z: Tensor) -> Tensor:
    """[B, D, T] -> [B*T, D]."""
    return z.transpose(1, 2).reshape(-1, z.size(1))


def _counts(codes: Tensor, k: int) -> Tensor:
    """Histogram of code indices: [N] -> [K] float."""
    return torch.bincount(codes, minlength=k).float()


def _cluster_sums(flat: Tensor, codes: Tensor, k: int) -> Tensor:
    """Sum of the vectors assigned to each code: [N, D], [N] -> [K, D]."""
    return flat.new_zeros(k, flat.size(1)).index_add_(0, codes, flat)


@torch.no_grad()
def _nearest(flat: Tensor, codebook: Tensor) -> Tensor:
    """Index of the closest code for each vector: [N, D], [K, D] -> [N] long.

    Expanded squared distance ||z||^2 - 2 z.e + ||e||^2 in one addmm ([N, K] memory, no [N, K, D] difference);
    ||z||^2 is the same for every code of a row, so it is left out of the argmin.
    """
    return torch.addmm(codebook.square().sum(1), flat, codebook.t(), alpha=-2.0).argmin(1)


def _sample_vectors(flat: Tensor, n: int) -> Tensor:
    """`n` random rows of `flat` ([N, D] -> [n, D]): distinct when N >= n, else with replacement. Global RNG."""
    size = flat.size(0)
    if size >= n:
        return flat[torch.randperm(size, device=flat.device)[:n]]
    return flat[torch.randint(size, (n,), device=flat.device)]


@torch.no_grad()
def _kmeans(flat: Tensor, k: int, iters: int, cosine: bool) -> Tensor:
    """Lloyd's k-means seeded from random rows: [N, D] -> [k, D]. Empty clusters keep their previous centre."""
    means = _sample_vectors(flat, k)
    for _ in range(iters):
        codes = _nearest(flat, means)
        counts = _counts(codes, k).unsqueeze(1)                              # [k, 1]
        new = _cluster_sums(flat, codes, k) / counts.clamp(min=1.0)
        if cosine:
            new = F.normalize(new, dim=1)
        means = torch.where(counts > 0, new, means)
    return means


def perplexity(counts: Tensor) -> Tensor:
    """exp(entropy) of a code histogram [K]: the effective number of codes in use (1 = a single code)."""
    p = counts / counts.sum().clamp(min=1.0)
    return torch.special.entr(p).sum().exp()


@dataclass
class QuantizerOutput:
    """What one forward pass returns. Losses are float32 scalars, means over all elements."""

    quantized: Tensor        # [B, D, T] straight-through z_e + sg[e - z_e], in z_e's dtype
    codes: Tensor            # [B, T] long
    codebook_loss: Tensor    # ||sg[z_e] - e||^2; exactly 0 with the EMA codebook
    commitment_loss: Tensor  # ||z_e - sg[e]||^2, unweighted (the model applies beta)
    perplexity: Tensor       # exp(entropy) of the batch code histogram
    usage: Tensor            # fraction of the K codes used in the batch
    counts: Tensor           # [K] float code counts of the batch (summed over ranks in training mode)
    restarted: int           # codes re-seeded by dead-code restart in this step


class VectorQuantizer(nn.Module):
    """Maps each latent vector of z_e [B, D, T] to the nearest of K codes.

    ema=False: the codebook is a parameter trained by the codebook loss. ema=True: it is a buffer set to
    (EMA of assigned-vector sums) / (Laplace-smoothed EMA of counts) after every training step.
    init: "none" keeps the random start; "random"/"kmeans" seed the codebook from the first training batch.
    restart_after > 0: codes unused for that many training steps are re-seeded from current encoder outputs.
    cosine: latents and codes are l2-normalised, so distances, losses and outputs live on the unit sphere.
    Training-mode forwards are collective under torch.distributed (every rank must call them); eval mode is local.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        ema: bool,
        decay: float,
        epsilon: float,
        init: Init,
        kmeans_iters: int,
        restart_after: int,
        cosine: bool,
    ) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim}")
        if codebook_size < 1:
            raise ValueError(f"codebook_size must be a positive integer, got {codebook_size}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        if epsilon <= 0.0:
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        if init not in get_args(Init):
            raise ValueError(f"init must be one of {', '.join(get_args(Init))}, got {init!r}")
        if kmeans_iters < 0:
            raise ValueError(f"kmeans_iters must be >= 0, got {kmeans_iters}")
        if restart_after < 0:
            raise ValueError(f"restart_after must be >= 0 (0 = off), got {restart_after}")
        self.dim, self.codebook_size = dim, codebook_size
        self.ema, self.decay, self.epsilon = ema, decay, epsilon
        self.init, self.kmeans_iters = init, kmeans_iters
        self.restart_after, self.cosine = restart_after, cosine

        embed = torch.empty(codebook_size, dim).uniform_(-1.0 / codebook_size, 1.0 / codebook_size)  # [K, D]
        if ema:
            # Start as K one-vector clusters, the same state _set_codes gives re-seeded codes.
            self.register_buffer("embed", embed)
            self.register_buffer("ema_cluster_size", torch.ones(codebook_size))   # [K]
            self.register_buffer("ema_embed_sum", embed.clone())                  # [K, D]
        else:
            self.embed = nn.Parameter(embed)
        self.register_buffer("initialized", torch.tensor(init == "none"))
        if restart_after > 0:
            self.register_buffer("unused_steps", torch.zeros(codebook_size, dtype=torch.long))  # [K]

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, codebook_size={self.codebook_size}, ema={self.ema}, init={self.init}, "
                f"restart_after={self.restart_after}, cosine={self.cosine}")

    @property
    def codebook(self) -> Tensor:
        """The code vectors in use, [K, D] float32 (unit norm when cosine)."""
        embed = self.embed.float()
        return F.normalize(embed, dim=1) if self.cosine else embed

    def forward(self, z_e: Tensor) -> QuantizerOutput:
        """Quantise z_e [B, D, T]. In training mode also initialise, restart dead codes and update the EMA codebook."""
        with torch.autocast(z_e.device.type, enabled=False):
            z = self._prepare(z_e)                                 # [B, D, T] float32
            batch, _, steps = z.shape
            flat = _flatten(z).detach()                            # [N, D]
            # A non-finite batch (a diverging step, which the training loop then skips) must not touch the codebook.
            update = self.training and _all_finite(flat)
            if update and not self.initialized:
                self._initialize(flat)
            codes = _nearest(flat, self.codebook)                  # [N]
            counts = _counts(codes, self.codebook_size)            # [K]
            restarted = 0
            if update:
                _all_reduce_sum(counts)
                if self.restart_after > 0:
                    # Before the lookup: dead codes are unused in this batch, so the output does not change, and a
                    # codebook parameter must not change in place after the graph has used it.
                    restarted = self._restart_dead_codes(flat, counts)
            e = F.embedding(codes, self.codebook).view(batch, steps, self.dim).transpose(1, 2)  # [B, D, T]
            if update and self.ema:
                self._ema_update(flat, codes, counts)              # after the lookup: e is the code that was chosen
            codebook_loss = z.new_zeros(()) if self.ema else F.mse_loss(e, z.detach())
            commitment_loss = F.mse_loss(z, e.detach())
        return QuantizerOutput(
            quantized=(z + (e - z).detach()).to(z_e.dtype),
            codes=codes.view(batch, steps),
            codebook_loss=codebook_loss,
            commitment_loss=commitment_loss,
            perplexity=perplexity(counts),
            usage=(counts > 0).float().mean(),
            counts=counts,
            restarted=restarted,
        )

    def nearest(self, z_e: Tensor) -> Tensor:
        """Codes [B, T] of the nearest code vectors for z_e [B, D, T]; no side effects, any mode."""
        with torch.autocast(z_e.device.type, enabled=False):
            z = self._prepare(z_e)
            return _nearest(_flatten(z), self.codebook).view(z.size(0), z.size(2))

    def lookup(self, codes: Tensor) -> Tensor:
        """Code vectors for codes [B, T] -> [B, D, T] float32."""
        if codes.dtype.is_floating_point or codes.dim() != 2:
            raise ValueError(f"codes must be an integer tensor [B, T], got {codes.dtype} of shape {tuple(codes.shape)}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(f"codes must be in [0, {self.codebook_size}), got values in "
                             f"[{int(codes.min())}, {int(codes.max())}]")
        return F.embedding(codes, self.codebook).transpose(1, 2)

    def _prepare(self, z_e: Tensor) -> Tensor:
        """Check the shape; z_e [B, D, T] -> float32 (l2-normalised over D when cosine)."""
        if z_e.dim() != 3 or z_e.size(1) != self.dim:
            raise ValueError(f"z_e must have shape [B, {self.dim}, T], got {tuple(z_e.shape)}")
        z = z_e.float()
        return F.normalize(z, dim=1) if self.cosine else z

    @torch.no_grad()
    def _set_codes(self, rows: Tensor, vectors: Tensor) -> None:
        """Overwrite codebook rows (bool mask [K]) with vectors [n, D]; their EMA state becomes a one-vector cluster."""
        self.embed[rows] = vectors
        if self.ema:
            self.ema_cluster_size[rows] = 1.0
            self.ema_embed_sum[rows] = vectors

    @torch.no_grad()
    def _initialize(self, flat: Tensor) -> None:
        """Seed the whole codebook from the first training batch [N, D] (rank 0's choice on every rank)."""
        if self.init == "kmeans":
            vectors = _kmeans(flat, self.codebook_size, self.kmeans_iters, self.cosine)
        else:
            vectors = _sample_vectors(flat, self.codebook_size)
        every = torch.ones(self.codebook_size, dtype=torch.bool, device=flat.device)
        self._set_codes(every, _broadcast(vectors))
        self.initialized.fill_(True)

    @torch.no_grad()
    def _restart_dead_codes(self, flat: Tensor, counts: Tensor) -> int:
        """Count unused steps per code; re-seed codes unused for restart_after steps from random rows of flat."""
        self.unused_steps.add_(1).masked_fill_(counts > 0, 0)
        dead = self.unused_steps >= self.restart_after                          # [K], identical on all ranks
        n_dead = int(dead.sum())
        if n_dead:
            self._set_codes(dead, _broadcast(_sample_vectors(flat, n_dead)))
            self.unused_steps.masked_fill_(dead, 0)
        return n_dead

    @torch.no_grad()
    def _ema_update(self, flat: Tensor, codes: Tensor, counts: Tensor) -> None:
        """N <- decay N + (1-decay) n;  m <- decay m + (1-decay) sum z;  e = m / Laplace-smoothed N."""
        sums = _all_reduce_sum(_cluster_sums(flat, codes, self.codebook_size))  # [K, D]
        self.ema_cluster_size.mul_(self.decay).add_(counts, alpha=1.0 - self.decay)
        self.ema_embed_sum.mul_(self.decay).add_(sums, alpha=1.0 - self.decay)
        total = self.ema_cluster_size.sum()
        size = (self.ema_cluster_size + self.epsilon) / (total + self.codebook_size * self.epsilon) * total
        self.embed.copy_(self.ema_embed_sum / size.unsqueeze(1))
