"""Vector quantizer: nearest code, straight-through, losses, EMA, init, dead-code restart, cosine, stats, DDP."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from omegaconf import OmegaConf

from audio_vqvae.quantizer import VectorQuantizer

MODEL_CONFIGS = Path(__file__).resolve().parents[1] / "audio_vqvae" / "configs" / "model"


def make(**overrides) -> VectorQuantizer:
    """A tiny quantizer; every constructor argument explicit, as the model passes them from the config."""
    args = {"dim": 2, "codebook_size": 4, "ema": True, "decay": 0.9, "epsilon": 1e-5, "init": "none",
            "kmeans_iters": 5, "restart_after": 0, "cosine": False}
    return VectorQuantizer(**{**args, **overrides})


def set_codebook(vq: VectorQuantizer, codebook: torch.Tensor) -> None:
    """Force known code vectors (EMA state: one-vector clusters, as after initialisation)."""
    with torch.no_grad():
        vq.embed.copy_(codebook)
        if vq.ema:
            vq.ema_cluster_size.fill_(1.0)
            vq.ema_embed_sum.copy_(codebook)


def as_latents(vectors: torch.Tensor) -> torch.Tensor:
    """Vectors [T, D] -> z_e [1, D, T]."""
    return vectors.t().unsqueeze(0).contiguous()


@pytest.mark.parametrize("name", ["small", "paper"])
def test_builds_from_model_config(name):
    cfg = OmegaConf.load(MODEL_CONFIGS / f"{name}.yaml")
    vq = VectorQuantizer(dim=cfg.encoder.latent_dim, **cfg.quantizer)
    out = vq(torch.randn(2, cfg.encoder.latent_dim, 5))
    assert out.codes.shape == (2, 5) and out.quantized.shape == (2, cfg.encoder.latent_dim, 5)
    assert vq.codebook.shape == (cfg.quantizer.codebook_size, cfg.encoder.latent_dim)


def test_nearest_matches_brute_force_and_quantized_is_codebook_rows():
    torch.manual_seed(0)
    vq = make(dim=8, codebook_size=16).eval()
    z_e = torch.randn(3, 8, 11)
    out = vq(z_e)
    flat = z_e.transpose(1, 2).reshape(-1, 8)
    expected = torch.cdist(flat, vq.codebook).argmin(1).view(3, 11)
    assert out.codes.dtype == torch.long and out.codes.shape == (3, 11)
    assert torch.equal(out.codes, expected)
    assert torch.equal(vq.nearest(z_e), expected)
    torch.testing.assert_close(out.quantized, vq.codebook[expected].permute(0, 2, 1))
    torch.testing.assert_close(vq.lookup(expected), vq.codebook[expected].permute(0, 2, 1))


def test_straight_through_gradient_is_identity():
    torch.manual_seed(0)
    vq = make(dim=4, codebook_size=8)
    z_e = torch.randn(2, 4, 6, requires_grad=True)
    weight = torch.randn(2, 4, 6)
    (vq(z_e).quantized * weight).sum().backward()
    assert torch.equal(z_e.grad, weight)


def test_codebook_loss_moves_codes_to_latents_and_not_z_e():
    torch.manual_seed(0)
    vq = make(dim=4, codebook_size=8, ema=False)
    z_e = torch.randn(2, 4, 10, requires_grad=True)
    out = vq(z_e)
    out.codebook_loss.backward()
    assert z_e.grad is None
    before = (vq.lookup(out.codes) - z_e).square().sum().item()
    torch.optim.SGD(vq.parameters(), lr=1.0).step()
    assert (vq.lookup(out.codes) - z_e).square().sum().item() < before


def test_commitment_loss_reaches_z_e_and_not_codebook():
    torch.manual_seed(0)
    vq = make(dim=4, codebook_size=8, ema=False)
    z_e = torch.randn(2, 4, 10, requires_grad=True)
    out = vq(z_e)
    out.commitment_loss.backward()
    assert vq.embed.grad is None
    torch.testing.assert_close(z_e.grad, 2 * (z_e - out.quantized).detach() / z_e.numel())


def test_ema_codebook_loss_is_a_zero_tensor():
    out = make()(torch.randn(1, 2, 5))
    assert isinstance(out.codebook_loss, torch.Tensor) and out.codebook_loss.item() == 0.0
    assert not isinstance(make().embed, torch.nn.Parameter)
    assert isinstance(make(ema=False).embed, torch.nn.Parameter)


def test_ema_update_matches_hand_computation():
    vq = make(codebook_size=3, decay=0.9, epsilon=0.1)
    set_codebook(vq, torch.tensor([[0.0, 0.0], [1.0, 1.0], [-1.0, 1.0]]))
    z_e = as_latents(torch.tensor([[0.1, 0.0], [0.0, -0.1], [0.9, 1.2]]))
    out = vq(z_e)
    assert out.codes.tolist() == [[0, 0, 1]]
    torch.testing.assert_close(out.quantized, as_latents(torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])))
    # n = [2, 1, 0]; N = 0.9 * 1 + 0.1 * n = [1.1, 1.0, 0.9]; sum N = 3
    # Laplace: N' = (N + 0.1) / (3 + 3 * 0.1) * 3 = [12/11, 1, 10/11]
    # m = 0.9 * e + 0.1 * sum z = [[0.01, -0.01], [0.99, 1.02], [-0.9, 0.9]]; e = m / N'
    torch.testing.assert_close(vq.ema_cluster_size, torch.tensor([1.1, 1.0, 0.9]))
    torch.testing.assert_close(vq.ema_embed_sum, torch.tensor([[0.01, -0.01], [0.99, 1.02], [-0.9, 0.9]]))
    torch.testing.assert_close(vq.codebook, torch.tensor([[0.11 / 12, -0.11 / 12], [0.99, 1.02], [-0.99, 0.99]]))


def test_eval_mode_changes_nothing():
    torch.manual_seed(0)
    vq = make(init="kmeans", restart_after=1).eval()
    state = {k: v.clone() for k, v in vq.state_dict().items()}
    out = vq(torch.randn(2, 2, 7))
    assert out.restarted == 0
    assert all(torch.equal(state[k], v) for k, v in vq.state_dict().items())


def test_dead_code_restart_revives_code_and_resets_its_ema_stats():
    torch.manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [50.0, 50.0]])
    vq = make(restart_after=2)
    set_codebook(vq, centres)
    batch = as_latents(centres[:3].repeat(4, 1) + 0.05 * torch.randn(12, 2))
    assert vq(batch).restarted == 0 and vq.unused_steps.tolist() == [0, 0, 0, 1]
    out = vq(batch)
    assert out.restarted == 1 and out.counts[3] == 0 and vq.unused_steps.tolist() == [0, 0, 0, 0]
    # Re-seeded before this step's EMA update, which then saw it unused: stats (1, v) -> (0.9, 0.9 v).
    revived = vq.ema_embed_sum[3] / 0.9
    assert torch.cdist(revived[None], batch[0].t()).min() < 1e-6        # an encoder output of this batch
    torch.testing.assert_close(vq.ema_cluster_size[3], torch.tensor(0.9))
    torch.testing.assert_close(vq.codebook[3], revived, atol=1e-4, rtol=1e-4)
    # Next EMA step with code 3 unused: without the reset, it would jump back towards (50, 50).
    out = vq(as_latents(centres[:3]))
    assert out.counts.tolist() == [1.0, 1.0, 1.0, 0.0] and out.restarted == 0
    torch.testing.assert_close(vq.codebook[3], revived, atol=1e-4, rtol=1e-4)


def test_restart_keeps_backward_working_for_a_cosine_parameter_codebook():
    torch.manual_seed(0)
    vq = make(dim=3, codebook_size=16, ema=False, init="random", restart_after=1, cosine=True)
    for _ in range(2):
        z_e = torch.randn(2, 3, 4, requires_grad=True)
        out = vq(z_e)
        (out.codebook_loss + out.commitment_loss + out.quantized.sum()).backward()
    assert out.restarted > 0 and z_e.grad is not None and vq.embed.grad.abs().sum() > 0


def test_restart_is_reproducible_with_the_global_seed():
    def run() -> torch.Tensor:
        torch.manual_seed(1)
        vq = make(codebook_size=8, init="random", restart_after=1)
        for _ in range(3):
            vq(torch.randn(1, 2, 3) + 5.0)
        return vq.codebook
    assert torch.equal(run(), run())


def test_random_init_uses_first_batch_vectors():
    torch.manual_seed(0)
    for steps in (20, 3):                                                # more and fewer vectors than codes
        vq = make(codebook_size=8, ema=False, init="random")
        assert not vq.initialized
        z_e = torch.randn(1, 2, steps)
        vq(z_e)
        assert vq.initialized
        assert (torch.cdist(vq.codebook, z_e[0].t()).min(1).values == 0).all()
        if steps >= 8:
            assert len(set(map(tuple, vq.codebook.tolist()))) == 8        # distinct rows


def test_kmeans_init_gives_converged_centroids_and_survives_state_dict():
    torch.manual_seed(0)
    centres = torch.tensor([[-5.0, 0.0], [5.0, 0.0], [0.0, 5.0], [0.0, -5.0]])
    z_e = as_latents(centres.repeat(25, 1) + 0.3 * torch.randn(100, 2))
    vq = make(ema=False, init="kmeans", kmeans_iters=10).train()
    vq(z_e)
    assert vq.initialized
    # Lloyd fixed point: every used centroid is the mean of the vectors assigned to it.
    flat, codes = z_e[0].t(), vq.nearest(z_e)[0]
    for k in codes.unique():
        torch.testing.assert_close(vq.codebook[k], flat[codes == k].mean(0))
    fresh = make(ema=False, init="kmeans", kmeans_iters=10)
    assert not fresh.initialized
    fresh.load_state_dict(vq.state_dict())
    assert fresh.initialized
    fresh(torch.randn(1, 2, 50))                                         # no second initialisation
    assert torch.equal(fresh.codebook, vq.codebook)


def test_ema_init_stats_are_consistent():
    torch.manual_seed(0)
    vq = make(codebook_size=4, init="random")
    vq(torch.randn(1, 2, 4))
    assert vq.ema_cluster_size.shape == (4,)
    torch.testing.assert_close(vq.ema_embed_sum, vq.codebook * vq.ema_cluster_size[:, None])


def test_autocast_bfloat16_distances_are_float32():
    torch.manual_seed(0)
    vq = make(dim=16, codebook_size=64).eval()
    with torch.no_grad():                                                # near-ties: bfloat16 would get them wrong
        vq.embed.copy_(torch.randn(1, 16) + 1e-3 * torch.randn(64, 16))
    z_e = torch.randn(4, 16, 32) + vq.embed[0, :, None]
    reference = vq.nearest(z_e)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = torch.addmm(vq.embed.square().sum(1), z_e[0].t(), vq.embed.t(), alpha=-2.0).argmin(1)
        out = vq(z_e)
        codes = vq.nearest(z_e)
    assert not torch.equal(bf16, reference[0])                          # the test can tell the difference
    assert torch.equal(out.codes, reference) and torch.equal(codes, reference)
    assert out.quantized.dtype == torch.float32
    assert vq(z_e.bfloat16()).quantized.dtype == torch.bfloat16


def test_cosine_mode_uses_unit_vectors():
    torch.manual_seed(0)
    vq = make(dim=3, codebook_size=6, cosine=True, init="random")
    z_e = 4.0 * torch.randn(2, 3, 9)
    vq(z_e)
    torch.testing.assert_close(vq.codebook.norm(dim=1), torch.ones(6))
    out = vq.eval()(z_e)
    torch.testing.assert_close(out.quantized.norm(dim=1), torch.ones(2, 9))
    flat = z_e.transpose(1, 2).reshape(-1, 3)
    assert torch.equal(out.codes.flatten(), (flat @ vq.codebook.t()).argmax(1))


def test_perplexity_and_usage():
    vq = make(codebook_size=4).eval()
    codebook = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    set_codebook(vq, codebook)
    out = vq(as_latents(codebook[[2] * 6]))
    assert out.perplexity.item() == pytest.approx(1.0) and out.usage.item() == 0.25
    assert out.counts.tolist() == [0.0, 0.0, 6.0, 0.0]
    out = vq(as_latents(codebook[[0, 1] * 3]))
    assert out.perplexity.item() == pytest.approx(2.0) and out.usage.item() == 0.5
    out = vq(as_latents(codebook))
    assert out.perplexity.item() == pytest.approx(4.0) and out.usage.item() == 1.0


@pytest.mark.parametrize("bad, match", [
    ({"init": "pca"}, "init must be one of none, kmeans, random, got 'pca'"),
    ({"decay": 1.0}, "decay must be in"),
    ({"epsilon": 0.0}, "epsilon must be positive"),
    ({"codebook_size": 0}, "codebook_size"),
    ({"restart_after": -1}, "restart_after"),
    ({"kmeans_iters": -1}, "kmeans_iters"),
])
def test_bad_options_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        make(**bad)


def test_bad_inputs_raise():
    vq = make()
    with pytest.raises(ValueError, match=r"z_e must have shape \[B, 2, T\], got \(1, 3, 4\)"):
        vq(torch.randn(1, 3, 4))
    with pytest.raises(ValueError, match=r"z_e must have shape"):
        vq.nearest(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"codes must be in \[0, 4\), got values in \[0, 4\]"):
        vq.lookup(torch.tensor([[0, 4]]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(rank)                                              # different data and RNG per rank
    quantizers = {
        "kmeans_ema_restart": make(dim=3, codebook_size=16, init="kmeans", restart_after=1),
        "random_cosine_restart": make(dim=3, codebook_size=16, init="random", restart_after=2, cosine=True),
    }
    restarted = 0
    for _ in range(4):
        z_e = torch.randn(2, 3, 8) + 3.0 * rank
        for vq in quantizers.values():
            restarted += vq(z_e).restarted
    torch.save({"restarted": restarted, **{f"{name}.{k}": v for name, vq in quantizers.items()
                                          for k, v in vq.state_dict().items()}},
               os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_distributed_buffers_stay_identical(tmp_path):
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert rank0["restarted"] > 0 and rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(torch.as_tensor(rank0[key]), torch.as_tensor(rank1[key])), key


def test_non_finite_batch_leaves_the_codebook_untouched():
    torch.manual_seed(0)
    vq = make(dim=2, codebook_size=4, ema=True, init="random", restart_after=1)
    vq.train()
    vq(torch.randn(1, 2, 16))
    before = {k: v.clone() for k, v in vq.state_dict().items()}
    z = torch.randn(1, 2, 16)
    z[0, 0, 3] = float("nan")
    vq(z)
    for k, v in vq.state_dict().items():
        assert torch.equal(v, before[k]), k
