"""Encoder: frame counts line up with time, batching is exact, cost is as documented."""
import pytest
import torch
import torchaudio
from omegaconf import OmegaConf

from audio_vqvae.encoder import Encoder, LogMel, num_frames

PAPER = OmegaConf.load("audio_vqvae/configs/model/paper.yaml").encoder
SMALL = OmegaConf.load("audio_vqvae/configs/model/small.yaml").encoder


def tiny(**kw) -> Encoder:
    args = {"channels": [4, 8, 8], "kernel_sizes": [4, 4, 4], "strides": [2, 2, 2], "latent_dim": 3,
            "activation": "relu", "norm": "none"}
    args.update(kw)
    return Encoder(**args)


@pytest.mark.parametrize("cfg", [PAPER, SMALL], ids=["paper", "small"])
@pytest.mark.parametrize("n", [1, 2, 7])
@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_frame_count_is_floor_of_t_over_hop(cfg, n, offset):
    enc = Encoder(**cfg)
    assert enc.hop == 64
    T = 64 * n + offset
    z = enc(torch.randn(2, 1, T))
    assert z.shape == (2, cfg.latent_dim, T // 64) == (2, cfg.latent_dim, num_frames(T, 64))


@pytest.mark.parametrize("strides,kernels", [([2, 4], [4, 8]), ([3, 2], [3, 5]), ([5], [5])])
def test_frame_count_for_other_strides(strides, kernels):
    enc = tiny(channels=[4] * len(strides), kernel_sizes=kernels, strides=strides)
    for T in range(enc.hop - 1, 4 * enc.hop + 2):
        assert enc(torch.randn(1, 1, T)).shape[-1] == T // enc.hop


def test_batched_encoding_with_lengths_equals_each_item_alone():
    torch.manual_seed(0)
    enc = tiny().eval()
    lengths = torch.tensor([200, 131, 64])
    items = [torch.randn(1, 1, int(n)) for n in lengths]
    batch = torch.zeros(3, 1, 200)
    for i, x in enumerate(items):
        batch[i, :, : x.shape[-1]] = x
    z = enc(batch, lengths)
    for i, x in enumerate(items):
        alone = enc(x)
        torch.testing.assert_close(z[i, :, : alone.shape[-1]], alone[0], rtol=0, atol=1e-6)


def test_receptive_field_matches_perturbation():
    torch.manual_seed(0)
    enc = tiny(activation="elu")
    T = 256
    x = torch.randn(1, 1, T)
    t0 = 128
    frame = t0 // enc.hop
    touched = []
    for t in range(T):
        y = x.clone()
        y[..., t] += 1.0
        if not torch.allclose(enc(y)[..., frame], enc(x)[..., frame]):
            touched.append(t)
    assert touched[-1] - touched[0] + 1 == enc.receptive_field


def test_macs_per_second_documented():
    # The numbers quoted in configs/model/*.yaml and docs/model.md.
    assert Encoder(**PAPER).macs_per_second(16000) == pytest.approx(500.7e6, rel=1e-3)
    assert Encoder(**SMALL).macs_per_second(16000) == pytest.approx(75.26e6, rel=1e-3)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="model.encoder.norm"):
        tiny(norm="group")
    with pytest.raises(ValueError, match="model.encoder.activation"):
        tiny(activation="swishy")
    with pytest.raises(ValueError, match="same length"):
        tiny(strides=[2, 2])


def test_residual_layers_keep_frames_widen_the_receptive_field_and_batch_exactly():
    torch.manual_seed(0)
    plain, wide = tiny(), tiny(residual_dilations=[1, 2], residual_kernel=3)
    assert wide.receptive_field == plain.receptive_field + 2 * (1 + 2) * plain.hop
    x = torch.randn(2, 1, 203)
    assert wide(x).shape == plain(x).shape
    lengths = torch.tensor([203, 90])
    batch = x * (torch.arange(203) < lengths[:, None, None])
    torch.testing.assert_close(wide(batch, lengths)[1, :, : 90 // wide.hop], wide(x[1:, :, :90])[0], rtol=0, atol=1e-6)


def test_residual_receptive_field_matches_perturbation():
    torch.manual_seed(0)
    enc = tiny(activation="elu", residual_dilations=[1, 3])
    x = torch.randn(1, 1, 512)
    frame = 256 // enc.hop
    touched = [t for t in range(512) if not torch.allclose(enc(x + 1.0 * (torch.arange(512) == t))[..., frame],
                                                            enc(x)[..., frame])]
    assert touched[-1] - touched[0] + 1 == enc.receptive_field


def test_gain_invariant_encoder_ignores_the_input_level_and_the_plain_one_does_not():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 400) * 0.1
    invariant = tiny(gain_invariant=True, residual_dilations=[1])
    for gain in (0.25, 2.0, 10 ** (6 / 20)):
        torch.testing.assert_close(invariant(x * gain), invariant(x), rtol=1e-4, atol=1e-5)
    plain = tiny(residual_dilations=[1])
    assert not torch.allclose(plain(x * 2.0), plain(x), rtol=1e-3, atol=1e-4)


def test_gain_invariance_needs_a_positively_homogeneous_encoder():
    with pytest.raises(ValueError, match="gain_invariant"):
        tiny(gain_invariant=True, activation="gelu")
    with pytest.raises(ValueError, match="gain_invariant"):
        tiny(gain_invariant=True, norm="batch")


MEL = {"n_fft": 16, "hop": 8, "n_mels": 6}  # a small log-mel front end at 1 kHz: hop 8 x 2 = 16
CMN = {**MEL, "cmn_seconds": 0.04, "floor": 1.0}  # mean normalisation over 5 frames (half-width 2); a floor
# high enough that its dependence on the level around the frame shows in the receptive field


def with_mel(frontend: dict = MEL, **kw) -> Encoder:
    return tiny(frontend=frontend, sample_rate=1000, channels=[4], kernel_sizes=[4], strides=[2], **kw)


def test_log_mel_front_end_is_torchaudio_s_mel_spectrogram_minus_each_frame_s_mean():
    torch.manual_seed(0)
    enc, x = with_mel(), torch.randn(1, 1, 203)
    ref = torchaudio.transforms.MelSpectrogram(1000, n_fft=16, hop_length=8, n_mels=6, center=False, power=2.0)(
        torch.nn.functional.pad(x, (4, 4)))[0]  # the conv's padding: (n_fft - hop) / 2 zeros on each side
    ref = (ref + 1e-5 * ref.mean(1, keepdim=True) + torch.finfo(ref.dtype).tiny).log()
    torch.testing.assert_close(enc.frontend(x), ref - ref.mean(1, keepdim=True), rtol=1e-4, atol=1e-4)


def test_cepstral_mean_normalisation_is_the_log_mel_minus_each_band_s_mean_over_its_window():
    torch.manual_seed(0)
    x = torch.randn(1, 1, 203)
    ref = torchaudio.transforms.MelSpectrogram(1000, n_fft=16, hop_length=8, n_mels=6, center=False, power=2.0)(
        torch.nn.functional.pad(x, (4, 4)))[0]
    ref = (ref + torch.finfo(ref.dtype).tiny).log()  # a fixed gain per band (channel, vocal-tract tilt) adds a constant
    whole = LogMel(1000, 16, 8, 6, floor=0.0, cmn_seconds=10.0)  # one window holds every frame: per-utterance CMN
    torch.testing.assert_close(whole(x), ref - ref.mean(-1, keepdim=True), rtol=1e-4, atol=1e-4)
    local = LogMel(1000, 16, 8, 6, floor=0.0, cmn_seconds=0.04)  # 5 frames; the first frame has 3 (2 after it)
    torch.testing.assert_close(local(x)[..., 0], ref[..., 0] - ref[..., :3].mean(-1), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(local(x)[..., 10], ref[..., 10] - ref[..., 8:13].mean(-1), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="cmn_seconds"):
        LogMel(1000, 16, 8, 6, cmn_seconds=0.0)


@pytest.mark.parametrize("frontend", [MEL, CMN], ids=["frame-mean", "cmn"])
@pytest.mark.parametrize("n_samples", [15, 16, 17, 203])
def test_log_mel_encoder_keeps_the_frame_contract_and_ignores_the_input_level(n_samples, frontend):
    torch.manual_seed(0)
    enc, x = with_mel(frontend, residual_dilations=[1]), torch.randn(2, 1, n_samples) * 0.1
    assert enc.hop == 16 and enc(x).shape == (2, 3, n_samples // 16)
    for gain in (1e-3, 0.5, 10 ** (6 / 20), 30.0):
        torch.testing.assert_close(enc(x * gain), enc(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("frontend", [MEL, CMN], ids=["frame-mean", "cmn"])
def test_log_mel_encoder_batches_exactly_and_its_receptive_field_matches_perturbation(frontend):
    torch.manual_seed(0)
    enc, x = with_mel(frontend, activation="elu", residual_dilations=[1, 2]).eval(), torch.randn(2, 1, 400)
    lengths = torch.tensor([400, 150])
    batch = x * (torch.arange(400) < lengths[:, None, None])
    torch.testing.assert_close(enc(batch, lengths)[1, :, : 150 // 16], enc(x[1:, :, :150])[0], rtol=0, atol=1e-5)
    frame = 200 // enc.hop
    touched = [t for t in range(400) if not torch.equal(enc(x[:1] + 100.0 * (torch.arange(400) == t))[..., frame],
                                                         enc(x[:1])[..., frame])]
    assert enc.receptive_field == 16 + 3 * 8 + 2 * 3 * 16 + (2 * 4 * 8 if frontend is CMN else 0)
    assert touched[-1] - touched[0] + 1 == enc.receptive_field - 1  # the periodic Hann window's first tap is 0
    with pytest.raises(ValueError, match="model.encoder.frontend"):
        tiny(frontend={"n_fft": 15, "hop": 8, "n_mels": 6}, sample_rate=1000)
