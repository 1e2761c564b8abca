"""Analytic FLOP counts per sample, from the model's own configuration (one multiply-add = 2 FLOPs).

The embedding lookup (a one-hot input layer) is free; biases and activations are not counted.
"""
from __future__ import annotations

from audio_vqvae.model import VQVAE
from audio_vqvae.wavenet.model import WaveNet

FWD_BWD = 3  # forward + backward (input and weight gradients) = 3 forwards


def decoder_macs_per_sample(net: WaveNet) -> int:
    """Per-sample multiply-adds of the WaveNet stack and head: per layer the dilated conv (k R G) and the fused
    residual + skip 1x1 ((G/2)(R+S)); the head S*S + S*n_classes. Conditioning is counted by `cond_macs_per_sample`."""
    k, r, g, s = net.kernel_size, net.residual_channels, net.gate_channels, net.skip_channels
    per_layer = k * r * g + (g // 2) * (r + s)
    return len(net.dilations) * per_layer + s * s + s * net.n_classes


def cond_macs_per_sample(net: WaveNet) -> float:
    """Per-sample multiply-adds of the local conditioning (upsampling + projection to every layer's gate); generation
    computes it a chunk at a time, ahead of the sample loop. The global (speaker) projection is per utterance."""
    return net.upsample.weight.numel() / net.hop + net.cond_proj.weight.numel() / net.cond_rate


def training_flops_per_sample(model: VQVAE) -> float:
    """FLOPs per training sample: forward + backward of the decoder (with conditioning) and of the encoder."""
    decoder = decoder_macs_per_sample(model.decoder) + cond_macs_per_sample(model.decoder)
    encoder = model.encoder.macs_per_second(model.sample_rate) / model.sample_rate
    return 2 * FWD_BWD * (decoder + encoder)


def generation_flops_per_sample(net: WaveNet) -> float:
    """FLOPs per generated sample in the step loop (conditioning excluded: see `cond_macs_per_sample`)."""
    return 2.0 * decoder_macs_per_sample(net)


def extraction_flops_per_second(model: VQVAE) -> float:
    """FLOPs per audio second of unit extraction: the encoder, and the nearest-code search (K D per frame)."""
    search = model.codebook_size * model.quantizer.dim * model.frame_rate
    return 2.0 * (model.encoder.macs_per_second(model.sample_rate) + search)
