"""Issue 19, item 3: do the WaveNet's F0 levers make the likelihood decoder speak? For each checkpoint,
self-resynthesis of one validation sentence per training speaker of its corpus (the middle `--seconds` of each) is
sampled at each temperature (and greedily), tracked with the model's pitch tracker and compared with the source's
track (`evaluation.speech.pitch_agreement`, pooled). A WaveNet with an F0 excitation (model.decoder.
excitation_harmonics > 0, optionally trained with decoder.input_dropout) is given the source's contour; for it the
teacher-forced NLL is also reported with the excitation and with it zeroed: equal NLLs mean the network ignores it.

    python benchmarks/wavenet_levers.py                                  # pretrained/demo-units: temperature only
    python benchmarks/wavenet_levers.py --checkpoints A.pt B.pt --temperatures 1.0
    python benchmarks/wavenet_levers.py --quick                          # smoke run
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
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


@torch.no_grad()
def teacher_forced_nll(model: VQVAE, items: list[tuple[str, np.ndarray]], zero_excitation: bool) -> float:
    """Mean NLL (nats per sample) of the items under teacher forcing, with the source's excitation or zeros."""
    total, count = 0.0, 0
    for speaker, wav in items:
        x = torch.from_numpy(wav)
        codes = model.encode_prepared([x])[0]
        T = codes.numel() * model.hop
        target, prev = model.decoder_inputs(x[:T])
        f0, voiced = (torch.from_numpy(a)[None] for a in model.f0_contour(wav))
        e = model.wavenet_excitation(f0, voiced, T)
        spk = model.speaker_embedding(torch.tensor([model.speaker_index(speaker)]))
        logits = model.decoder(prev[None], model.quantizer.lookup(codes[None]), spk, e * 0 if zero_excitation else e)
        total += float(F.cross_entropy(logits, target[None], reduction="sum"))
        count += T
    return total / count


def measure(checkpoint: str, seconds: float, temperatures: list[float]) -> dict[str, Any]:
    """Pooled pitch agreement of the WaveNet's self-resyntheses per setting (+ the NLLs of an excited WaveNet)."""
    model = VQVAE.from_checkpoint(checkpoint)
    track = pitch_tracker(model)
    items = sources(model, seconds)
    refs = [track(w) for _, w in items]
    codes = [model.encode(w, model.sample_rate) for _, w in items]
    excited = model.decoder.takes_f0
    contours = [model.f0_contour(w) for _, w in items] if excited else None
    out: dict[str, Any] = {"checkpoint": checkpoint, "n": len(items), "seconds_each": seconds,
                           "excitation_harmonics": model.decoder.excitation_harmonics,
                           "input_dropout": model.decoder.input_dropout}
    if excited:
        out["nll_with_excitation"] = teacher_forced_nll(model, items, False)
        out["nll_excitation_zeroed"] = teacher_forced_nll(model, items, True)
    for setting in [*temperatures, "greedy"]:
        gen = torch.Generator().manual_seed(0)
        kw = {"greedy": True} if setting == "greedy" else {"temperature": float(setting)}
        wavs = model.decode([torch.as_tensor(c) for c in codes], [s for s, _ in items], decoder="wavenet",
                            generator=gen, f0=contours, **kw)
        rows = [pitch_agreement(*ref, *track(w.numpy())) for ref, w in zip(refs, wavs)]
        out[f"T={setting}"] = summarise(rows)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", nargs="+", default=[str(REPO / "pretrained" / "demo-units")])
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.8, 0.6, 0.4])
    ap.add_argument("--quick", action="store_true", help="smoke run: 0.2 s, T = 1 only")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    seconds, temps = (0.2, [1.0]) if args.quick else (args.seconds, args.temperatures)
    r = {"machine": machine(), "load_average_before": load_average(),
         "runs": [measure(c, seconds, temps) for c in args.checkpoints], "load_average_after": load_average()}
    print(f"{'checkpoint':40s} {'setting':8s} {'voiced recall':>14s} {'voicing agr.':>13s} {'GPE':>6s} "
          f"{'cents':>6s} {'NLL exc / zeroed':>17s}")
    for run in r["runs"]:
        nll = (f"{run['nll_with_excitation']:.3f} / {run['nll_excitation_zeroed']:.3f}"
               if "nll_with_excitation" in run else "-")
        for key, v in run.items():
            if key.startswith("T="):
                print(f"{run['checkpoint'][-40:]:40s} {key:8s} {fmt(v['voiced_recall'], '14.3f')} "
                      f"{fmt(v['voicing_agreement'], '13.3f')} {fmt(v['gpe'], '6.3f')} "
                      f"{fmt(v['median_cents'], '6.0f')} {nll:>17s}")
    write_results(r, args.out or HERE / "results" / f"wavenet_levers-{cpu_slug(r['machine']['cpu'])}-"
                  f"{r['machine']['cores']}c-{r['machine']['date'][:10]}.json")


if __name__ == "__main__":
    main()
