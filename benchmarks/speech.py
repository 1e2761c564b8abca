"""Speed of the speech path against issue 19's targets, side by side in one run: the one-pass decoders
(harmonic_noise and nsf, configs/speech/, untrained weights: the cost does not depend on them) decoding 10 s of units
at batch 1 (target >= 50x real time on 2 cores), F0 extraction with the model's tracker (>= 100x), and the WaveNet's
incremental generation at batch 1 (target: faster than real time), without and with an F0 excitation input
(model.decoder.excitation_harmonics = 8, issue 19's WaveNet lever), each at 1 and 2 torch threads.

    python benchmarks/speech.py             # about a minute on 2 idle cores
    python benchmarks/speech.py --quick     # smoke run (every key, meaningless numbers)
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from measure import cpu_slug, load_average, machine, median_seconds, write_results
from omegaconf import OmegaConf

from audio_vqvae.config import CONFIG_DIR
from audio_vqvae.model import VQVAE

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VQVAE_DIR = REPO / "pretrained" / "demo-units"
SOURCE = REPO / "datasets" / "demo" / "gb_f" / "gb_f_031.flac"


def source(seconds: float, sample_rate: int) -> np.ndarray:
    """`seconds` of demo speech (the file repeated), float32 at the model rate."""
    wav, sr = sf.read(SOURCE, dtype="float32")
    assert sr == sample_rate
    return np.tile(wav, int(np.ceil(seconds * sr / len(wav))))[: int(seconds * sr)]


def measure(seconds: float, repeats: int, wavenet_seconds: float) -> dict[str, Any]:
    """x real time of each job at 1 and 2 threads."""
    model = VQVAE.from_pretrained(str(VQVAE_DIR))
    cfg = model.config["model"]
    excited = VQVAE.from_config({**cfg, "decoder": {**cfg["decoder"], "excitation_harmonics": 8}}, model.speakers)
    excited.load_state_dict(model.state_dict(), strict=False)  # the excitation's projection stays random
    excited.eval()
    wav = source(seconds, model.sample_rate)
    codes = model.encode(wav, model.sample_rate)
    out: dict[str, Any] = {}
    for kind in ("harmonic_noise", "nsf"):
        model.attach_speech(OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "speech" / f"{kind}.yaml")))
        model.speech.log_f0_stats.fill_(1.0)  # stand-in statistics: any speaker may decode
        contour = model.f0_contour(wav)

        def decode(contour: tuple = contour) -> None:
            model.decode(codes, 0, f0=contour)

        for threads in (1, 2):
            torch.set_num_threads(threads)
            out[f"{kind}_decode_x_real_time_{threads}t"] = seconds / median_seconds(decode, repeats)
    out["f0_extraction_x_real_time"] = seconds / median_seconds(lambda: model.f0_contour(wav), repeats)
    torch.set_num_threads(1)
    short_wav = source(wavenet_seconds, model.sample_rate)
    short = model.encode(short_wav, model.sample_rate)
    contour = model.f0_contour(short_wav)
    for name, m, f0 in (("wavenet", model, None), ("wavenet_f0", excited, contour)):
        m.decode(short[:5], 0, decoder="wavenet", f0=None if f0 is None else (f0[0][:15], f0[1][:15]))  # numba
        t = median_seconds(lambda m=m, f0=f0: m.decode(short, 0, decoder="wavenet", f0=f0), max(1, repeats // 2))
        out[f"{name}_x_real_time_1t"] = wavenet_seconds / t
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 s, one repeat")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/speech-CPU-DATE.json)")
    args = ap.parse_args()
    seconds, repeats, wavenet_seconds = (1.0, 1, 0.2) if args.quick else (10.0, 3, 2.0)
    r = {"machine": machine(), "load_average_before": load_average(), "seconds": seconds,
         **measure(seconds, repeats, wavenet_seconds), "load_average_after": load_average()}
    targets = {"harmonic_noise_decode_x_real_time_2t": 50, "nsf_decode_x_real_time_2t": 50,
               "f0_extraction_x_real_time": 100, "wavenet_x_real_time_1t": 1, "wavenet_f0_x_real_time_1t": 1}
    print(f"{'job':42s} {'x real time':>12s} {'target':>8s}")
    for key, value in r.items():
        if key.endswith(("_1t", "_2t", "x_real_time")):
            target = targets.get(key)
            print(f"{key:42s} {value:12.1f} {'' if target is None else f'>= {target}':>8s}")
    r["targets"] = targets
    write_results(r, args.out or HERE / "results" / f"speech-{cpu_slug(r['machine']['cpu'])}-{r['machine']['cores']}c-{r['machine']['date'][:10]}.json")


if __name__ == "__main__":
    main()
