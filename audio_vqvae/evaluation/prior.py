"""Stage two in the report: the scored units under a learned unit prior (KL to it, unit perplexity, ELBO under
both priors)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .. import metrics as M
from ..model import VQVAE
from ..prior.model import UnitPrior

if TYPE_CHECKING:
    from .scoring import Totals  # the pass that produces them; imported for the annotation only


@torch.inference_mode()
def prior_log_prob(prior: UnitPrior, codes: np.ndarray, speaker: str) -> float:
    """log p(z) in nats of one utterance's units under the prior; a speaker the prior does not know is marginalised
    over the prior's speakers (the mixture prior: logsumexp_s log p(z | s) - log S)."""
    z = torch.as_tensor(codes, dtype=torch.long, device=prior.device)[None]
    n = torch.tensor([z.shape[1]], device=prior.device)
    index = prior.speakers.index(speaker) if speaker in prior.speakers else -1
    return float(prior.marginal_log_prob(z, n, torch.tensor([index]))[0])


def prior_metrics(prior: UnitPrior, model: VQVAE, totals: Totals, warning: str | None = None) -> dict[str, Any]:
    """Stage two in metrics.json: KL(q || p) = -log p(z_q(x)) of the scored units under the learned prior next to the
    uniform prior's T_z log K, in bits per second; unit perplexity; and, for the decoder-known speakers, -ELBO in bits
    per sample under both priors (metrics.elbo_with_prior). `warning` (a prior of another VQ-VAE used with --force)
    is kept as `vqvae_mismatch`."""
    if prior.codebook_size != model.codebook_size:
        raise ValueError(f"--prior models {prior.codebook_size} units but the VQ-VAE has {model.codebook_size} codes")
    log_p = {u: prior_log_prob(prior, c, totals.utterances[u].speaker) for u, c in totals.codes.items()}
    n_units = sum(c.size for c in totals.codes.values())
    out: dict[str, Any] = {
        "n_units": n_units,
        "unit_perplexity": math.exp(-sum(log_p.values()) / n_units),
        "kl_bits_per_second_uniform": model.frame_rate * math.log2(model.codebook_size),
        "kl_bits_per_second_prior": -sum(log_p.values()) / math.log(2) / totals.seconds,
        "unknown_speakers": "marginalised over the prior's speakers" if prior.speakers else "unconditional prior",
        "elbo": None,
        "vqvae_mismatch": warning,
    }
    acc = totals.elbo
    if acc.n_samples:
        out["elbo"] = M.elbo_with_prior(acc.nll, sum(log_p[u] for u in totals.elbo_utterances), acc.n_samples,
                                        acc.n_latents, model.codebook_size, model.sample_rate)
    return out
