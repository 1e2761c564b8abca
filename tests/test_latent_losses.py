"""Issue 20's auxiliary terms: gradient reversal, the speaker adversary, same-speaker negatives, CPC; and the
units_adv preset, which trains exactly as units while every lever is off."""
import pytest
import torch
from helpers import tiny_model_config
from omegaconf import OmegaConf

from audio_vqvae.latent_losses import ContrastivePredictor, SpeakerAdversary, reverse_gradient, same_speaker_negatives
from audio_vqvae.model import VQVAE
from audio_vqvae.training.runs import run_identity

ADV = {"weight": 0.5, "lambda": 0.3, "hidden": 8, "pool": "utterance"}
CPC = {"weight": 0.5, "target": "z_e", "context": 8, "steps": 2, "negatives": 5}


def test_gradient_reversal_is_identity_forward_and_minus_lambda_backward():
    x = torch.randn(3, 4, requires_grad=True)
    y = reverse_gradient(x, 0.7)
    assert torch.equal(y, x)
    g = torch.randn(3, 4)
    y.backward(g)
    assert torch.equal(x.grad, -0.7 * g)


@pytest.mark.parametrize("pool", ["utterance", "frame"])
def test_speaker_adversary_trains_the_classifier_and_reverses_the_encoder_gradient(pool):
    torch.manual_seed(0)
    adv = SpeakerAdversary(4, 3, 8, lam=2.0, pool=pool)
    z = torch.randn(5, 4, 6, requires_grad=True)
    spk = torch.tensor([0, 1, 2, 0, 1])
    loss, acc = adv(z, spk)
    assert 0 <= float(acc) <= 1
    (g_rev,) = torch.autograd.grad(loss, z, retain_graph=True)
    adv.lam = -1.0  # no reversal, factor 1: the plain gradient
    (g_plain,) = torch.autograd.grad(adv(z, spk)[0], z)
    assert torch.allclose(g_rev, -2.0 * g_plain)


def test_same_speaker_negatives_are_of_the_positives_speaker_and_never_the_positive():
    T, speaker = 7, torch.tensor([0, 1, 0, 2, 0, 1])
    positive = torch.arange(len(speaker) * T)
    neg = same_speaker_negatives(speaker, T, positive, 50, torch.Generator().manual_seed(0))
    assert neg.shape == (len(positive), 50)
    assert torch.equal(speaker[neg // T], speaker[positive // T, None].expand_as(neg))
    assert not (neg == positive[:, None]).any()
    # speaker 2 has one crop: its negatives fall back to that crop's other frames; others reach other crops
    assert set((neg[3 * T : 4 * T] // T).unique().tolist()) == {3}
    assert set((neg[0:T] // T).unique().tolist()) == {0, 2, 4}


def test_contrastive_predictor_loss_is_finite_and_learns_a_predictable_sequence():
    torch.manual_seed(0)
    cpc = ContrastivePredictor(4, 16, steps=2, negatives=4)
    z = torch.randn(4, 4, 12)
    spk = torch.tensor([0, 0, 1, 1])
    loss0 = cpc(z, spk)[0].detach()
    opt = torch.optim.Adam(cpc.parameters(), 1e-2)
    for _ in range(150):
        loss, acc = cpc(z, spk)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < float(loss0) and float(acc) > 0.5


def test_model_logs_auxiliary_terms_outside_the_elbo_and_adds_them_to_the_loss():
    wav, spk = 0.3 * torch.randn(2, 1, 512), torch.tensor([0, 1])
    torch.manual_seed(0)
    plain = VQVAE.from_config(tiny_model_config(), ["a", "b"]).train()
    torch.manual_seed(0)
    model = VQVAE.from_config(tiny_model_config(speaker_adversary=ADV, contrastive=CPC), ["a", "b"]).train()
    torch.manual_seed(1)
    base = plain(wav, spk)
    torch.manual_seed(1)
    out = model(wav, spk)
    assert set(out.auxiliary) == {"speaker_adversary_loss", "speaker_adversary_accuracy", "contrastive_loss",
                                  "contrastive_accuracy"}
    assert torch.allclose(out.negative_elbo, base.negative_elbo)
    extra = 0.5 * out.auxiliary["speaker_adversary_loss"] + 0.5 * out.auxiliary["contrastive_loss"]
    assert torch.allclose(out.loss, base.loss + extra)
    out.loss.backward()
    assert model.adversary.net[0].weight.grad.abs().sum() > 0 and model.contrastive.gru.weight_ih_l0.grad.abs().sum() > 0
    assert model.eval()(wav, spk).auxiliary == {}


def test_units_adv_preset_is_units_with_every_lever_off():
    units = OmegaConf.load("audio_vqvae/configs/model/units.yaml")
    adv = OmegaConf.load("audio_vqvae/configs/model/units_adv.yaml")
    assert adv.defaults == ["units", "_self_"] and adv.speaker_adversary.weight == 0 and adv.contrastive.weight == 0
    assert adv.perturb.formant is None and adv.perturb.equalise_db == 0
    cfg = {**tiny_model_config(), **{k: OmegaConf.to_container(adv[k]) for k in ("speaker_adversary", "contrastive",
                                                                                  "perturb")}}
    torch.manual_seed(0)
    a = VQVAE.from_config(cfg, ["a", "b"])
    torch.manual_seed(0)
    b = VQVAE.from_config(tiny_model_config(), ["a", "b"])
    assert a.state_dict().keys() == b.state_dict().keys() and a.perturb is None
    assert "speaker_adversary" not in run_identity(OmegaConf.create({"model": units, "data": {"name": "d"},
                                                                      "seed": 0}))["model"]


def test_the_default_preset_units_cpc_is_units_cmn_at_66_7_hz_with_the_contrastive_term():
    from hydra import compose, initialize_config_dir

    from audio_vqvae.config import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        default = compose("train").model
        speech = compose("speech_train").speech
    assert default.name == "units_cpc" and default.contrastive.weight == 0.1 and default.perturb.formant is not None
    model = VQVAE.from_config(OmegaConf.to_container(default), ["a", "b"])
    assert model.hop == 240 and model.frame_rate == pytest.approx(200 / 3) and model.codebook_size == 64
    f0_hop = model.sample_rate / speech.frame_rate
    assert f0_hop == int(f0_hop) and model.hop % int(f0_hop) == 0  # 3 F0 frames tile a unit: the speech path fits
    assert model.perturb is not None and model.contrastive is not None
