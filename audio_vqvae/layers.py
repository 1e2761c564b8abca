"""Layers shared by the encoder and the decoder."""
from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU}


class Residual(nn.Module):
    """x + conv1x1(act(dilated conv(x))) at the frame rate: widens each latent's view of the signal (its receptive
    field grows by (kernel - 1) * dilation frames) without changing the frame count; zero padding on both sides."""

    def __init__(self, channels: int, kernel: int, dilation: int, activation: str, bias: bool = True) -> None:
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"model.encoder.residual_kernel must be odd (centred context), got {kernel}")
        self.conv = nn.Conv1d(channels, channels, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2,
                              bias=bias)
        self.act = ACTIVATIONS[activation]()
        self.mix = nn.Conv1d(channels, channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mix(self.act(self.conv(x)))
