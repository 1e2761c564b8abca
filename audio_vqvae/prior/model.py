"""Stage two: a learned autoregressive prior over units, p(z) = prod_t p(z_t | z_<t, speaker).

A small causal Transformer (torch.nn.TransformerEncoder under a causal mask) reads [BOS, z_1, ..., z_{T-1}] and
predicts z_1..z_T; an optional speaker embedding is added to every input position. `log_prob` gives nats per
utterance, `unit_log_probs` nats per unit, `sample` draws units. configs/prior/{small,large}.yaml hold the
constructor arguments (one key per argument).

Positions the prior never trained on: training sees windows of at most `max_frames` units (the run's
units.max_frames) at random offsets, whose first input is the unit before the window, BOS only where the window
starts the utterance. Scoring and sampling follow the same rule (`window_start`): a position past max_frames is
predicted inside a window of max_frames that starts hop = max_frames // 2 positions after the previous one's start,
so every prediction sees between max_frames - hop and max_frames - 1 earlier units at positions 0..max_frames - 1.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)


def sinusoidal_positions(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """[length, dim] sine/cosine position encodings (Vaswani et al.)."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return table


def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """[B] lengths -> [B, max_len] bool, True at valid positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def vqvae_mismatch(config: dict[str, Any], sha256: str, frame_rate: float) -> str | None:
    """What differs between the VQ-VAE a prior's units came from (its run config's recorded checkpoint sha256 and
    frame rate) and a VQ-VAE checkpoint with `sha256` and `frame_rate`; None when both match."""
    recorded_sha, recorded_rate = config.get("vqvae_checkpoint_sha256"), config.get("frame_rate")
    problems = []
    if recorded_sha != sha256:
        problems.append(f"VQ-VAE checkpoint sha256 {(recorded_sha or 'not recorded')[:16]}, this one's {sha256[:16]}")
    if recorded_rate is None or not math.isclose(float(recorded_rate), frame_rate, rel_tol=1e-6):
        problems.append(f"frame rate {recorded_rate if recorded_rate is not None else 'not recorded'}, "
                        f"this one's {frame_rate:g}")
    return "; ".join(problems) or None


def check_vqvae(prior: UnitPrior, prior_path: str, sha256: str, frame_rate: float, force: bool = False) -> str | None:
    """Refuse (ValueError, one line) a prior whose units came from another VQ-VAE (`vqvae_mismatch`); with force, log
    the mismatch as a warning and return it (for a report to repeat). None when the prior is this VQ-VAE's."""
    problem = vqvae_mismatch(getattr(prior, "config", {}), sha256, frame_rate)
    if problem is None:
        return None
    message = f"--prior {prior_path} was trained on units of another VQ-VAE ({problem})"
    if not force:
        raise ValueError(f"{message}; retrain it on this VQ-VAE's units, or pass --force to use it anyway")
    log.warning("%s: used anyway (--force)", message)
    return message


def window_start(position: int, max_frames: int | None) -> int:
    """Where the window that predicts unit `position` of an utterance starts (the module docstring's rule): 0 below
    max_frames (or with None: unbounded), else hop-spaced starts with hop = max_frames // 2, so that the window
    ends at or before position + hop."""
    if max_frames is None or position < max_frames:
        return 0
    hop = max(1, max_frames // 2)
    return ((position - max_frames) // hop + 1) * hop


class UnitPrior(nn.Module):
    """Causal Transformer prior over K units, optionally conditioned on a speaker; windows of at most max_frames
    units (None: whole utterances)."""

    def __init__(self, codebook_size: int, speakers: Sequence[str] = (), d_model: int = 128, n_layers: int = 3,
                 n_heads: int = 4, d_ff: int = 512, dropout: float = 0.1, speaker_conditioning: bool = True,
                 max_frames: int | None = None) -> None:
        super().__init__()
        self.codebook_size, self.bos, self.max_frames = codebook_size, codebook_size, max_frames
        self.speakers = list(speakers) if speaker_conditioning else []
        self.embed = nn.Embedding(codebook_size + 1, d_model)  # the K codes and BOS
        self.speaker_embed = nn.Embedding(len(self.speakers), d_model) if self.speakers else None
        layer = nn.TransformerEncoderLayer(d_model, n_heads, d_ff, dropout, batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, n_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False)
        self.head = nn.Linear(d_model, codebook_size)
        self.scale = math.sqrt(d_model)

    @classmethod
    def from_config(cls, cfg: Any, codebook_size: int, speakers: Sequence[str],
                    max_frames: int | None = None) -> UnitPrior:
        """A `prior` config node (configs/prior/*.yaml) and the run's units.max_frames -> model."""
        return cls(codebook_size, speakers, **dict(cfg), max_frames=max_frames)

    @classmethod
    def from_checkpoint(cls, path: str, device: str | torch.device = "cpu") -> UnitPrior:
        """A prior checkpoint written by the prior trainer -> model in eval mode; `config` holds its run config."""
        from ..checkpoint import load_checkpoint

        ckpt = load_checkpoint(path)
        cfg = ckpt["config"]
        if "prior" not in cfg:
            raise ValueError(f"{path}: not a prior checkpoint (no `prior` config); train one with audio-vqvae-train-prior")
        model = cls.from_config(cfg["prior"], cfg["codebook_size"], ckpt["speakers"],
                                cfg.get("units", {}).get("max_frames"))
        model.load_state_dict(ckpt["model"])
        model.config = cfg
        return model.to(device).eval()

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def speaker_index(self, speaker: str) -> int:
        """Speaker name -> index; a ValueError lists the valid ones (or says the prior is unconditional)."""
        if speaker not in self.speakers:
            valid = ", ".join(self.speakers) or "none: this prior is not speaker-conditioned"
            raise ValueError(f"unknown speaker {speaker!r} for the prior; valid speakers: {valid}")
        return self.speakers.index(speaker)

    def forward(self, units: torch.Tensor, speaker: torch.Tensor | None = None,
                previous: torch.Tensor | None = None) -> torch.Tensor:
        """A window units [B, T] -> logits [B, T, K] of p(z_t | z_<t, speaker); position t sees only the window's
        z_<t and its first input: previous [B], the unit before the window, or BOS where it is < 0 or None (the
        window starts the utterance)."""
        b, t = units.shape
        first = torch.full((b,), self.bos, dtype=torch.long, device=units.device)
        if previous is not None:
            previous = previous.to(units.device)
            first = torch.where(previous < 0, first, previous)
        x = self._embed(torch.cat([first[:, None], units[:, :-1]], 1), 0, speaker)
        mask = nn.Transformer.generate_square_subsequent_mask(t, device=units.device, dtype=x.dtype)
        return self.head(self.transformer(x, mask=mask, is_causal=True))

    def _window_log_probs(self, units: torch.Tensor, speaker: torch.Tensor | None,
                          previous: torch.Tensor | None) -> torch.Tensor:
        logp = self(units, speaker, previous).float().log_softmax(-1)
        return logp.gather(-1, units[..., None])[..., 0]

    def unit_log_probs(self, units: torch.Tensor, speaker: torch.Tensor | None = None) -> torch.Tensor:
        """Whole utterances units [B, T] -> log p(z_t | z_<t, speaker) [B, T] in nats (padding positions hold garbage:
        mask them), each position predicted in its window (`window_start`), as training saw it."""
        t, w = units.shape[1], self.max_frames
        if w is None or t <= w:
            return self._window_log_probs(units, speaker, None)
        pieces, done = [self._window_log_probs(units[:, :w], speaker, None)], w
        while done < t:
            s = window_start(done, w)
            pieces.append(self._window_log_probs(units[:, s : s + w], speaker, units[:, s - 1])[:, done - s :])
            done = s + w
        return torch.cat(pieces, 1)[:, :t]

    def log_prob(self, units: torch.Tensor, lengths: torch.Tensor, speaker: torch.Tensor | None = None) -> torch.Tensor:
        """log p(z) in nats per utterance [B], summed over the first lengths[b] units of each row."""
        return (self.unit_log_probs(units, speaker) * length_mask(lengths, units.shape[1])).sum(1)

    def marginal_log_prob(self, units: torch.Tensor, lengths: torch.Tensor, speaker: torch.Tensor) -> torch.Tensor:
        """`log_prob` [B] where speaker [B] holds the prior's speaker indices and -1 for a speaker it does not know:
        those rows get the mixture over its S speakers, log (1/S) sum_s p(z | s) (log-mean-exp). The one rule for
        unknown speakers in evaluation, `score-units` and the trainer's validation. An unconditional prior ignores
        `speaker`."""
        if not self.speakers:
            return self.log_prob(units, lengths)
        speaker = speaker.to(units.device)
        out = self.log_prob(units, lengths, speaker.clamp(min=0))
        unknown = speaker < 0
        if unknown.any():
            z, n, s = units[unknown], lengths[unknown], len(self.speakers)
            every = torch.stack([self.log_prob(z, n, torch.full((len(z),), i, device=z.device)) for i in range(s)])
            out[unknown] = torch.logsumexp(every, 0) - math.log(s)
        return out

    def _embed(self, units: torch.Tensor, start: int, speaker: torch.Tensor | None) -> torch.Tensor:
        """Input tokens [B, T] (BOS or codes) at positions start.. -> the Transformer's input [B, T, D]."""
        x = self.embed(units) * self.scale
        x = x + sinusoidal_positions(start + units.shape[1], x.shape[-1], x.device)[start:]
        if self.speaker_embed is not None:
            if speaker is None:
                raise ValueError("this prior is speaker-conditioned: pass a speaker")
            x = x + self.speaker_embed(speaker)[:, None, :]
        return x

    def _step(self, x: torch.Tensor, cache: list[torch.Tensor]) -> torch.Tensor:
        """One new position through the stack in eval mode, x [B, 1, D] -> logits [B, K]. cache[i] holds layer i's
        normalised inputs of the earlier positions and gets this one's; attention from the new position to all of
        them is what the causal mask allows it in `forward`, so the logits are the same."""
        for i, layer in enumerate(self.transformer.layers):
            h = layer.norm1(x)
            cache[i] = torch.cat([cache[i], h], 1)
            x = x + layer.self_attn(h, cache[i], cache[i], need_weights=False)[0]
            x = x + layer.linear2(layer.activation(layer.linear1(layer.norm2(x))))
        return self.head(self.transformer.norm(x))[:, -1]

    @torch.no_grad()
    def sample(self, n: int, steps: int, speaker: torch.Tensor | None = None, temperature: float = 1.0,
               top_k: int | None = None, generator: torch.Generator | None = None,
               prompt: torch.Tensor | None = None) -> torch.Tensor:
        """Draw `steps` units after `prompt` ([P] codes, shared by all n) -> [n, P + steps] (the prompt included).

        Each unit comes from softmax(logits / temperature), restricted to the top_k most likely when given; unit p is
        predicted in the window `window_start(p, max_frames)` starts, as in training and scoring. Runs in eval mode,
        one position per step: each layer keeps the window's earlier positions' normalised inputs, so a step costs
        attention over them rather than a pass of the whole stack; a new window refills that cache from its start.
        """
        if temperature <= 0:
            raise ValueError(f"temperature {temperature}: must be > 0")
        was_training = self.training
        self.eval()
        units = torch.zeros(n, 0, dtype=torch.long, device=self.device)
        if prompt is not None:
            units = prompt.to(self.device, torch.long)[None, :].expand(n, -1).clone()
        start, cache, logits = -1, [], None
        for pos in range(units.shape[1], units.shape[1] + steps):
            if window_start(pos, self.max_frames) != start:  # a new window: its first input, then its units so far
                start = window_start(pos, self.max_frames)
                cache = [torch.zeros(n, 0, self.embed.embedding_dim, device=self.device) for _ in self.transformer.layers]
                first = units[:, start - 1 : start] if start else torch.full((n, 1), self.bos, device=self.device)
                tokens = torch.cat([first, units[:, start:pos]], 1)
                for i in range(tokens.shape[1]):
                    logits = self._step(self._embed(tokens[:, i : i + 1], i, speaker), cache)
            logits = logits.float() / temperature
            if top_k is not None:
                kth = logits.topk(min(top_k, logits.shape[-1]), -1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = torch.multinomial(logits.softmax(-1), 1, generator=generator)
            units = torch.cat([units, nxt], 1)
            if window_start(pos + 1, self.max_frames) == start:
                logits = self._step(self._embed(nxt, pos + 1 - start, speaker), cache)
        self.train(was_training)
        return units
