"""Draw docs/figures/speech_source_resynthesis_conversion.png: log spectrograms of natural speech, its
self-resynthesis and conversions by the shipped model, each with the model's pitch track of that audio drawn on top
(white: voiced frames). Sources: a validation utterance of a training voice, a `demo_heldout` voice and an
`engines_heldout` voice, none of them heard in training.

    python docs/figures/make_speech_figure.py [--model pretrained/demo-units]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import librosa
import matplotlib
import numpy as np
import soundfile as sf
import torch

from audio_vqvae import VQVAE

matplotlib.use("Agg")
import matplotlib.pyplot as plt

REPO = Path(__file__).resolve().parents[2]
ROWS = [("datasets/demo/gb_f/gb_f_040.flac", ["gb_f", "sc_m"]),
        ("datasets/demo_heldout/us_k/us_k_101.flac", ["gb_f", "cb_m"]),
        ("datasets/engines_heldout/fl_slt/fl_slt_201.flac", ["us_m", "sc_f"])]


def panel(ax: plt.Axes, model: VQVAE, wav: np.ndarray, title: str) -> None:
    """Log spectrogram (0-5 kHz) with the model's pitch track of `wav`."""
    spec = librosa.amplitude_to_db(np.abs(librosa.stft(wav, n_fft=1024, hop_length=160)), ref=np.max)
    t = np.arange(spec.shape[1]) * 160 / model.sample_rate
    f = np.linspace(0, model.sample_rate / 2, spec.shape[0])
    ax.pcolormesh(t, f, spec, vmin=-70, vmax=0, shading="auto", cmap="magma")
    f0, voiced = model.f0_contour(wav)
    ft = (np.arange(len(f0)) + 0.5) / model.speech.frame_rate
    ax.plot(ft[voiced], f0[voiced], ".", ms=1.5, color="white")
    ax.set_ylim(0, 5000)
    ax.set_title(f"{title}  ({voiced.mean():.0%} voiced, median F0 {np.median(f0[voiced]) if voiced.any() else 0:.0f} Hz)",
                 fontsize=8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(REPO / "pretrained" / "demo-units"))
    ap.add_argument("--out", default=str(Path(__file__).with_name("speech_source_resynthesis_conversion.png")))
    args = ap.parse_args()
    model = VQVAE.from_checkpoint(args.model)
    fig, axes = plt.subplots(len(ROWS), 3, figsize=(15, 3.2 * len(ROWS)), sharey=True)
    for row, (path, targets) in zip(axes, ROWS):
        wav, sr = sf.read(REPO / path, dtype="float32")
        x = model.prepare(wav, sr).numpy()
        speaker = Path(path).parent.name
        panel(row[0], model, x, f"natural: {Path(path).stem}")
        for ax, target in zip(row[1:], targets):
            out = model.convert(wav, sr, target, generator=torch.Generator().manual_seed(0)).numpy()
            kind = "resynthesis" if target == speaker else "conversion"
            panel(ax, model, out, f"{kind} -> {target} (F0 mapped to {target})")
    for ax in axes[:, 0]:
        ax.set_ylabel("Hz")
    fig.tight_layout()
    fig.savefig(args.out, dpi=70)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
