"""WaveNet's fused gate (GatedActivation): the values and gradients of the plain autograd expression."""
from __future__ import annotations

import pytest
import torch

from audio_vqvae.wavenet.model import GatedActivation


def reference(a: torch.Tensor, cond: torch.Tensor, cond_rate: int) -> torch.Tensor:
    p = (a.unflatten(2, (-1, cond_rate)) + cond[..., None]).flatten(2)
    p_tanh, p_sigmoid = p.chunk(2, 1)
    return torch.tanh(p_tanh) * torch.sigmoid(p_sigmoid)


@pytest.mark.parametrize("cond_rate", [1, 4])
def test_equals_autograd_expression(cond_rate):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 10, 8 * cond_rate, generator=gen, requires_grad=True)
    cond = torch.randn(3, 10, 8, generator=gen, requires_grad=True)
    grad_z = torch.randn(3, 5, 8 * cond_rate, generator=gen)
    got = GatedActivation.apply(a, cond, cond_rate)
    expected = reference(a, cond, cond_rate)
    assert torch.equal(got, expected)
    got_grads = torch.autograd.grad(got, (a, cond), grad_z)
    expected_grads = torch.autograd.grad(expected, (a, cond), grad_z)
    for g, e in zip(got_grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-7)


def test_gradcheck():
    a = torch.randn(2, 6, 6, dtype=torch.float64, requires_grad=True)
    cond = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, c: GatedActivation.apply(x, c, 2), (a, cond))


def test_conditioning_without_gradient():
    a = torch.randn(1, 4, 6, requires_grad=True)
    GatedActivation.apply(a, torch.randn(1, 4, 6), 1).sum().backward()
    assert a.grad is not None and a.grad.shape == a.shape
