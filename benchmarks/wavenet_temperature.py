"""Issue 19, item 3, the sampling-time lever: does the WaveNet (the VQ-VAE's likelihood decoder, which takes no F0)
give voiced speech at a lower sampling temperature? Self-resynthesis of one validation sentence per training speaker
of the demo corpus (the middle `--seconds` of each), sampled at each temperature and greedily, tracked with the
model's pitch tracker and compared with the source's track (`evaluation.speech.pitch_agreement`, pooled).

    python benchmarks/wavenet_temperature.py                 # pretrained/demo-units, about a minute on 2 cores
    python benchmarks/wavenet_temperature.py --quick         # smoke run
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
from measure import cpu_slug, load_average, machine, write_results

from audio_vqvae.audio import load_model_input
from audio_vqvae.evaluation.resynthesis import middle, pitch_tracker
from audio_vqvae.evaluation.sets import corpus_set, data_config
from audio_vqvae.evaluation.speech import pitch_agreement, summarise
from audio_vqvae.model import VQVAE

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def sources(model: VQVAE, seconds: float) -> list[tuple[str, np.ndarray]]:
    """(speaker, the middle `seconds` of its first validation utterance) per training speaker."""
    val = corpus_set(data_config(model.config, None, []), "val", model.config["seed"]).utterances
    first = {u.speaker: u for u in reversed(val)}
    return [(s, middle(load_model_input(first[s].path, model.sample_rate, model.peak_normalize).numpy(),
                       int(seconds * model.sample_rate), model.hop)) for s in model.speakers if s in first]


def fmt(x: float | None, spec: str) -> str:
    """A table cell: the number in `spec`, or "-" where the measure has no frames."""
    return "-" if x is None else format(x, spec)


def measure(checkpoint: str, seconds: float, temperatures: list[float]) -> dict[str, Any]:
    """Pooled pitch agreement of the WaveNet's self-resyntheses per setting."""
    model = VQVAE.from_checkpoint(checkpoint)
    track = pitch_tracker(model)
    items = sources(model, seconds)
    refs = [track(w) for _, w in items]
    codes = [model.encode(w, model.sample_rate) for _, w in items]
    out: dict[str, Any] = {"n": len(items), "seconds_each": seconds}
    for setting in [*temperatures, "greedy"]:
        gen = torch.Generator().manual_seed(0)
        kw = {"greedy": True} if setting == "greedy" else {"temperature": float(setting)}
        wavs = model.decode([torch.as_tensor(c) for c in codes], [s for s, _ in items], decoder="wavenet",
                            generator=gen, **kw)
        rows = [pitch_agreement(*ref, *track(w.numpy())) for ref, w in zip(refs, wavs)]
        out[f"T={setting}"] = summarise(rows)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(REPO / "pretrained" / "demo-units"))
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--quick", action="store_true", help="smoke run: 0.2 s, two settings")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    seconds, temps = (0.2, [1.0]) if args.quick else (args.seconds, [1.0, 0.8, 0.6, 0.4])
    r = {"machine": machine(), "load_average_before": load_average(), "checkpoint": args.checkpoint,
         **measure(args.checkpoint, seconds, temps), "load_average_after": load_average()}
    print(f"{'setting':10s} {'voiced recall':>14s} {'voicing agreement':>18s} {'GPE':>6s} {'median cents':>13s}")
    for key, v in r.items():
        if key.startswith("T="):
            print(f"{key:10s} {fmt(v['voiced_recall'], '14.3f')} {fmt(v['voicing_agreement'], '18.3f')} "
                  f"{fmt(v['gpe'], '6.3f')} {fmt(v['median_cents'], '13.0f')}")
    write_results(r, args.out or HERE / "results" / f"wavenet_temperature-{cpu_slug(r['machine']['cpu'])}-"
                  f"{r['machine']['cores']}c-{r['machine']['date'][:10]}.json")


if __name__ == "__main__":
    main()
