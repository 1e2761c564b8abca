"""Encoder layout: parameter names are stable (checkpoints load) and the conv's own padding equals the explicit
zero padding of the frame-alignment rule."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from audio_vqvae.encoder import Encoder


def make(kernel_sizes: list[int], strides: list[int], norm: str = "none", activation: str = "relu") -> Encoder:
    torch.manual_seed(0)
    return Encoder([6] * len(strides), kernel_sizes, strides, 3, activation, norm)


@pytest.mark.parametrize("norm,conv_slot", [("none", "1"), ("batch", "1"), ("weight", "1.parametrizations")])
def test_parameter_names(norm, conv_slot):
    names = [n for n in make([4, 3], [2, 2], norm).state_dict() if n.startswith("blocks.") and "weight" in n]
    assert names[0].startswith(f"blocks.0.0.{conv_slot}.weight")  # even padding (4 - 2): slot 0 is an Identity
    assert any(n.startswith(f"blocks.1.0.{conv_slot}.weight") for n in names)  # odd padding: slot 0 pads


@pytest.mark.parametrize("kernel_sizes,strides", [([4, 4], [2, 2]), ([3, 5], [2, 2]), ([5, 6], [2, 3])])
@pytest.mark.parametrize("activation", ["relu", "elu"])
def test_blocks_equal_explicit_padding(kernel_sizes, strides, activation):
    enc = make(kernel_sizes, strides, activation=activation)
    x = torch.randn(2, 1, 97)
    for block, k, s in zip(enc.blocks, kernel_sizes, strides):
        conv = block[0][1]
        pad = k - s
        expected = F.conv1d(F.pad(x, (pad // 2, pad - pad // 2)), conv.weight, conv.bias, stride=s)
        expected = F.relu(expected) if activation == "relu" else F.elu(expected)
        x_before = x.clone()
        y = block(x)
        assert torch.equal(x, x_before)  # the in-place activation leaves the block's input alone
        torch.testing.assert_close(y, expected, rtol=1e-6, atol=1e-6)
        x = y
