"""WaveNet decoder: causal dilated gated convolutions over mu-law classes, conditioned locally on upsampled latents
and globally on a speaker vector, and optionally per sample on an F0 excitation (issue 19's levers: sine harmonics
added to the input where voiced, and corrupted teacher forcing, past samples dropped in training). Parallel
teacher-forced `forward` for training; sampling one step at a time is `wavenet.sampling.generate`, over the same
parameters.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import Residual

UPSAMPLE_MODES = ("repeat", "transposed")


def dilations(layers_per_cycle: int, cycles: int) -> list[int]:
    """1, 2, ..., 2^(layers_per_cycle-1), repeated `cycles` times."""
    return [2**i for i in range(layers_per_cycle)] * cycles


class GatedActivation(torch.autograd.Function):
    """tanh(p_1) * sigmoid(p_2) of p = a + cond ([B, G, T] + [B, G, T / cond_rate], each conditioning column
    repeated over cond_rate samples; p_1 | p_2 = the halves of the G channels) -> [B, G/2, T].

    The values and gradients of the plain autograd graph (the same ops), without its copies: the gradient of `a`
    is written into one buffer (no cat of the halves) and nothing is modified in place on a view.
    """

    @staticmethod
    def forward(ctx, a: Tensor, cond: Tensor, cond_rate: int) -> Tensor:
        p_tanh, p_sigmoid = (a.unflatten(2, (-1, cond_rate)) + cond[..., None]).flatten(2).chunk(2, 1)
        t, s = torch.tanh(p_tanh), torch.sigmoid(p_sigmoid)
        ctx.save_for_backward(t, s)
        ctx.cond_rate = cond_rate
        return t * s

    @staticmethod
    def backward(ctx, grad_z: Tensor) -> tuple[Tensor, Tensor | None, None]:
        t, s = ctx.saved_tensors
        grad = grad_z.new_empty(t.shape[0], 2 * t.shape[1], t.shape[2])
        grad_tanh, grad_sigmoid = grad.chunk(2, 1)
        torch.ops.aten.tanh_backward.grad_input(grad_z * s, t, grad_input=grad_tanh)
        torch.ops.aten.sigmoid_backward.grad_input(grad_z * t, s, grad_input=grad_sigmoid)
        grad_cond = grad.unflatten(2, (-1, ctx.cond_rate)).sum(-1) if ctx.needs_input_grad[1] else None
        return grad, grad_cond, None


@dataclass(frozen=True)
class HeadWeights:
    """The output head relu -> hidden 1x1 -> relu -> logit 1x1 by name, as the incremental samplers read it."""

    hidden_w: Tensor  # [S, S] (out, in)
    hidden_b: Tensor  # [S]
    logit_w: Tensor  # [n_classes, S] (out, in)
    logit_b: Tensor  # [n_classes]


class WaveNet(nn.Module):
    """p(x_t | x_<t, latents, g) over `n_classes` mu-law classes; logit t sees inputs t-receptive_field .. t-1."""

    def __init__(
        self,
        n_classes: int,
        residual_channels: int,
        gate_channels: int,
        skip_channels: int,
        kernel_size: int,
        layers_per_cycle: int,
        cycles: int,
        cond_channels: int,
        upsample: str,
        latent_dim: int,
        hop: int,
        global_channels: int,
        cond_layers: int = 0,
        excitation_harmonics: int = 0,
        input_dropout: float = 0.0,
    ):
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"decoder.upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        if gate_channels % 2:
            raise ValueError(f"decoder.gate_channels must be even (tanh and sigmoid halves), got {gate_channels}")
        if kernel_size < 2:
            raise ValueError(f"decoder.kernel_size must be >= 2, got {kernel_size}")
        if hop < 1:
            raise ValueError(f"decoder hop must be >= 1, got {hop}")
        if excitation_harmonics < 0 or not 0.0 <= input_dropout < 1.0:
            raise ValueError(f"decoder.excitation_harmonics must be >= 0 and decoder.input_dropout in [0, 1), got "
                             f"{excitation_harmonics}, {input_dropout}")
        self.n_classes, self.hop, self.kernel_size = n_classes, hop, kernel_size
        self.residual_channels, self.gate_channels, self.skip_channels = residual_channels, gate_channels, skip_channels
        self.global_channels = global_channels
        self.excitation_harmonics, self.input_dropout = excitation_harmonics, input_dropout
        self.dilations = dilations(layers_per_cycle, cycles)
        # samples per conditioning column: repeat keeps the conditioning at frame rate and broadcasts it over the hop
        self.cond_rate = hop if upsample == "repeat" else 1
        self.upsample_mode = upsample
        # latent frame i drives the conditioning of samples [i * stride - padding, i * stride - padding + kernel)
        self.upsample_span = (hop, hop, 0) if upsample == "repeat" else (2 * hop, hop, hop // 2)
        n, r, g2, s = len(self.dilations), residual_channels, gate_channels // 2, skip_channels

        self.embed = nn.Embedding(n_classes, r)  # = a one-hot input layer
        # the excitation of sample t enters at input t (beside the class of sample t-1): sines only where voiced
        self.excitation_proj = nn.Conv1d(excitation_harmonics, r, 1, bias=False) if excitation_harmonics else None
        self.dilated = nn.ModuleList(
            nn.Conv1d(r, gate_channels, kernel_size, dilation=d, bias=False) for d in self.dilations
        )
        # residual and skip 1x1 convs fused; the last layer has no residual output
        self.out = nn.ModuleList(nn.Conv1d(g2, (r if i < n - 1 else 0) + s, 1) for i in range(n))
        # the conditioning stack: residual convs over the latents at frame rate, so each frame's conditioning sees
        # its neighbours (kernel 3: one frame more on each side per layer)
        self.cond_stack = nn.Sequential(*(Residual(latent_dim, 3, 1, "relu") for _ in range(cond_layers)))
        self.cond_reach = cond_layers
        # with the stack, frame i drives the conditioning of the samples its neighbours' upsampled spans cover
        kernel, stride, padding = self.upsample_span
        self.cond_span = (kernel + 2 * cond_layers * stride, stride, padding + cond_layers * stride)
        if upsample == "repeat":
            self.upsample = nn.Conv1d(latent_dim, cond_channels, 1)
        else:
            self.upsample = nn.ConvTranspose1d(latent_dim, cond_channels, *self.upsample_span[:2],
                                               padding=self.upsample_span[2])
        self.cond_proj = nn.Conv1d(cond_channels, n * gate_channels, 1)  # its bias is the dilated convs' bias
        self.global_proj = nn.Linear(global_channels, n * gate_channels, bias=False) if global_channels else None
        self.head = nn.Sequential(nn.ReLU(), nn.Conv1d(s, s, 1), nn.ReLU(), nn.Conv1d(s, n_classes, 1))

    @property
    def takes_f0(self) -> bool:
        """Whether the net has an F0 excitation input (excitation_harmonics > 0): forward and generation need one."""
        return self.excitation_proj is not None

    @property
    def receptive_field(self) -> int:
        """Logit t depends on the samples t-receptive_field .. t-1."""
        return (self.kernel_size - 1) * sum(self.dilations) + 1

    # ---- conditioning ---------------------------------------------------------------------------------------------

    def conditioning(self, latents: Tensor, g: Tensor | None, valid: Tensor | None = None) -> Tensor:
        """Every layer's gate conditioning (local + global + bias): [B, D, T_z] -> [B, L, G, T_z*hop/cond_rate].
        valid [B, T_z] (bool): frames inside each item; the stack's outputs past an item's end are zeroed after every
        layer, as the zero padding of an item alone (so a batch of different lengths conditions each item exactly)."""
        x = latents
        for block in self.cond_stack:
            x = block(x) if valid is None else block(x) * valid[:, None]
        c = self.cond_proj(self.upsample(x))  # [B, L*G, T_z] (repeat) or [B, L*G, T_z*hop + hop % 2]
        c = c[..., : latents.shape[-1] * self.hop // self.cond_rate]
        if g is not None:
            c = c + self.global_proj(g)[:, :, None]
        return c.unflatten(1, (len(self.dilations), self.gate_channels))

    def conditioning_window(self, latents: Tensor, g: Tensor | None, f0: int, f1: int,
                            frames: Tensor | None = None) -> Tensor:
        """`conditioning` restricted to frames f0..f1-1, computed from those frames plus the neighbours it needs;
        frames [B]: each item's number of frames in a padded batch (None: all)."""
        per_frame = self.hop // self.cond_rate
        # the stack's outputs see cond_reach frames on each side, the transposed conv's see their frame and a neighbour
        margin = self.cond_reach + int(self.upsample_mode == "transposed")
        a, b = max(0, f0 - margin), min(latents.shape[-1], f1 + margin)
        valid = None if frames is None else torch.arange(a, b, device=latents.device) < frames[:, None]
        return self.conditioning(latents[..., a:b], g, valid)[..., (f0 - a) * per_frame : (f1 - a) * per_frame]

    def _check(self, latents: Tensor, g: Tensor | None, excitation: Tensor | None = None) -> None:
        if latents.dim() != 3:
            raise ValueError(f"latents must be [B, D, T_z], got shape {tuple(latents.shape)}")
        if (excitation is None) != (self.excitation_proj is None):
            raise ValueError(f"an F0 excitation must be given iff decoder.excitation_harmonics > 0 "
                             f"(excitation_harmonics={self.excitation_harmonics})")
        want = (latents.shape[0], self.excitation_harmonics, latents.shape[-1] * self.hop)
        if excitation is not None and excitation.shape != want:
            raise ValueError(f"excitation must be [B, H, T_z*hop] = {list(want)}, got {list(excitation.shape)}")
        if (g is None) != (self.global_proj is None):
            raise ValueError(f"g must be given iff global_channels > 0 (global_channels={self.global_channels})")
        if g is not None and g.shape != (latents.shape[0], self.global_channels):
            raise ValueError(f"g must be [B, {self.global_channels}], got shape {tuple(g.shape)}")

    # ---- training: parallel, teacher-forced ------------------------------------------------------------------------

    def inputs(self, prev: Tensor, excitation: Tensor | None) -> Tensor:
        """The first layer's input [B, R, T]: the embedded previous samples (in training a fraction input_dropout of
        them zeroed, the rest scaled up: corrupted teacher forcing) plus the projected excitation."""
        x = self.embed(prev).transpose(1, 2)  # [B, R, T]
        if self.training and self.input_dropout > 0:
            x = x * F.dropout(x.new_ones(x.shape[0], 1, x.shape[2]), self.input_dropout)
        if excitation is not None:
            x = x + self.excitation_proj(excitation)
        return x.contiguous()

    def forward(self, prev: Tensor, latents: Tensor, g: Tensor | None, excitation: Tensor | None = None) -> Tensor:
        """prev [B, T] classes of the previous samples, latents [B, D, T_z], g [B, G_s], excitation [B, H, T] (the
        F0 harmonics of the samples predicted; iff excitation_harmonics > 0) -> logits [B, n_classes, T]."""
        self._check(latents, g, excitation)
        if prev.shape != (latents.shape[0], latents.shape[-1] * self.hop):
            raise ValueError(f"prev must be [B, T_z*hop] = {[latents.shape[0], latents.shape[-1] * self.hop]}, "
                             f"got {list(prev.shape)}")
        cond = self.conditioning(latents, g)  # [B, L, G, T/cond_rate]
        k, n, s = self.kernel_size, len(self.dilations), self.skip_channels
        x = self.inputs(prev, excitation)  # [B, R, T]
        skip = x.new_zeros(x.shape[0], s, x.shape[2])  # [B, S, T]
        # the running sums are updated in place (nothing saves them for backward): less memory traffic
        for i, (conv, out, d) in enumerate(zip(self.dilated, self.out, self.dilations)):
            a = conv(F.pad(x, ((k - 1) * d, 0)))  # [B, G, T]
            y = out(GatedActivation.apply(a, cond[:, i], self.cond_rate))  # [B, R+S, T]; last layer [B, S, T]
            res, y_skip = y.split([y.shape[1] - s, s], 1)
            skip.add_(y_skip)
            if i < n - 1:
                x.add_(res)
        return self.head(skip)

    # ---- what the incremental samplers read ----------------------------------------------------------------------

    def head_weights(self) -> HeadWeights:
        """The head's two 1x1 convs by name. The head stays one nn.Sequential (its state-dict keys head.1.* and
        head.3.* are in every checkpoint); a change to its layout fails here, not silently in the samplers."""
        layers = list(self.head)
        kinds = [type(m) for m in layers]
        if kinds != [nn.ReLU, nn.Conv1d, nn.ReLU, nn.Conv1d]:
            raise TypeError(f"WaveNet.head must be ReLU, Conv1d, ReLU, Conv1d for the samplers, got "
                            f"{[k.__name__ for k in kinds]}")
        hidden, logit = layers[1], layers[3]
        return HeadWeights(hidden.weight[:, :, 0], hidden.bias, logit.weight[:, :, 0], logit.bias)
