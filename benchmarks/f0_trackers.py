"""F0 trackers compared, to choose the one `audio_vqvae.f0.track` uses: pyworld DIO (+ StoneMask refinement) and
Harvest, Praat's autocorrelation (to_pitch_ac) and cross-correlation (to_pitch_cc) methods through parselmouth.

- Accuracy on synthetic speech of known F0: glottal-pulse-like harmonic sources (spectral tilt -9 dB/octave) with
  declination and 5.5 Hz vibrato, through three formant resonators, with noise-excited unvoiced segments and
  silences, at four F0 registers (90-280 Hz) and three SNRs (clean, 20 dB, 10 dB white noise). Scored at the frame
  contract's frame centres: voicing decision error (VDE, frames within 30 ms (half a Praat window at 60 Hz) of a voicing boundary not scored),
  false-voiced and missed-voiced rates, gross pitch error (GPE: > 20 % off, over frames voiced in both) and the
  median error in cents of the rest.
- Robustness: the voiced fraction found in white noise, clipped noise, quiet dither and digital zeros (should be 0).
- Agreement on the demo corpus (one file per speaker; no ground truth): each tracker's voiced fraction, and its
  voicing agreement and GPE against Harvest, the slowest and most careful tracker.
- Speed: x real time on one core (total audio / total wall time, after a warm-up), and the same per CPU second of
  this process (what a dedicated core gives when other work shares the machine).

    OMP_NUM_THREADS=1 python benchmarks/f0_trackers.py          # about a minute
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import parselmouth
import pyworld
import scipy.signal
from measure import cpu_slug, load_average, machine, write_results

from audio_vqvae.audio import load_audio
from audio_vqvae.f0 import F0_MAX, F0_MIN, f0_hop, frame_times, num_f0_frames, resample_contour, track

HERE = Path(__file__).resolve().parent
DEMO = HERE.parent / "datasets" / "demo"
SR = 16000
FRAME_RATE = 200.0
EDGE_S = 0.03
"""Frames this close to a voicing boundary are not scored for voicing (the truth is ambiguous there)."""

Tracker = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def _on_contract(f0: np.ndarray, times: np.ndarray, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """A tracker's raw output at its own times -> the frame contract's frames."""
    hop = f0_hop(SR, FRAME_RATE)
    f0 = np.where(np.isfinite(f0) & (f0 > 0), f0, 0.0)
    return resample_contour(f0, f0 > 0, times, frame_times(num_f0_frames(n_samples, hop), hop, SR))


def dio(wav: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    x = wav.astype(np.float64)
    f0, t = pyworld.dio(x, sr, f0_floor=F0_MIN, f0_ceil=F0_MAX, frame_period=1000 / FRAME_RATE)
    return _on_contract(pyworld.stonemask(x, f0, t, sr), t, len(x))


def harvest(wav: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    f0, t = pyworld.harvest(wav.astype(np.float64), sr, f0_floor=F0_MIN, f0_ceil=F0_MAX, frame_period=1000 / FRAME_RATE)
    return _on_contract(f0, t, len(wav))


def praat(method: str) -> Tracker:
    def run(wav: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
        sound = parselmouth.Sound(wav.astype(np.float64), sr)
        pitch = getattr(sound, method)(time_step=1 / FRAME_RATE, pitch_floor=F0_MIN, pitch_ceiling=F0_MAX)
        return _on_contract(pitch.selected_array["frequency"], pitch.xs(), len(wav))

    return run


TRACKERS: dict[str, Tracker] = {
    "dio+stonemask": dio,
    "harvest": harvest,
    "praat_ac": praat("to_pitch_ac"),
    "praat_cc": praat("to_pitch_cc"),
    "f0.track": lambda wav, sr: track(wav, sr, FRAME_RATE),
}

# (kind, seconds): v = voiced, u = unvoiced fricative-like noise, s = silence
SEGMENTS = [("s", 0.15), ("v", 0.5), ("u", 0.12), ("v", 0.6), ("s", 0.1), ("v", 0.4), ("u", 0.1), ("v", 0.5),
            ("s", 0.15)]


def synthetic(f0_base: float, snr_db: float | None, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A speech-like signal [T] with its true per-sample F0 [T] (Hz) and voicing [T] (bool)."""
    rng = np.random.default_rng(seed)
    kinds = np.concatenate([np.full(round(d * SR), k) for k, d in SEGMENTS])
    n = len(kinds)
    t = np.arange(n) / SR
    f0 = f0_base * (1.1 - 0.2 * t / t[-1]) * (1 + 0.03 * np.sin(2 * np.pi * 5.5 * t + rng.uniform(0, 6.3)))
    phase = 2 * np.pi * np.cumsum(f0 / SR)
    k = np.arange(1, int(SR / 2 / f0.max()) + 1)
    source = (np.sin(phase[:, None] * k) * k**-1.5).sum(1)  # -9 dB/octave: a glottal pulse train's tilt
    voiced = kinds == "v"
    x = np.where(voiced, source, 0.0) + np.where(kinds == "u", 0.3 * rng.standard_normal(n), 0.0)
    for fc, bw in zip(rng.uniform([400, 1100, 2300], [800, 1800, 3000]), [80, 100, 140]):
        r = np.exp(-np.pi * bw / SR)
        x = scipy.signal.lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * fc / SR), r * r], x)
    x = x / np.abs(x).max() * 0.5
    if snr_db is not None:
        x = x + rng.standard_normal(n) * np.sqrt(np.mean(x[voiced] ** 2) / 10 ** (snr_db / 10))
    return x.astype(np.float32), np.where(voiced, f0, 0.0), voiced


def truth_frames(f0: np.ndarray, voiced: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-sample truth -> frame-contract truth: (F0 [T_f], voiced [T_f], scored-for-voicing [T_f])."""
    hop = f0_hop(SR, FRAME_RATE)
    centres = (np.arange(num_f0_frames(len(f0), hop)) * hop + hop // 2)
    change = np.flatnonzero(np.diff(voiced.astype(np.int8))) / SR
    near = np.abs(centres[:, None] / SR - change[None]).min(1) < EDGE_S if len(change) else np.zeros(len(centres), bool)
    return f0[centres], voiced[centres], ~near


def scores(est: tuple[np.ndarray, np.ndarray], ref: tuple[np.ndarray, np.ndarray], scored: np.ndarray) -> dict:
    """Voicing errors over `scored` frames, pitch errors over frames voiced in both."""
    (f_e, v_e), (f_r, v_r) = est, ref
    both = v_e & v_r
    ratio = f_e[both] / f_r[both]
    cents = 1200 * np.abs(np.log2(ratio))
    fine = cents[np.abs(ratio - 1) <= 0.2]
    return {
        "vde": float(np.mean(v_e[scored] != v_r[scored])),
        "false_voiced": float(np.mean(v_e[scored & ~v_r])) if (scored & ~v_r).any() else 0.0,
        "missed_voiced": float(np.mean(~v_e[scored & v_r])) if (scored & v_r).any() else 0.0,
        "gpe": float(np.mean(np.abs(ratio - 1) > 0.2)) if both.any() else float("nan"),
        "fine_cents": float(np.median(fine)) if len(fine) else float("nan"),
    }


def pooled(rows: list[dict], weights: list[int]) -> dict:
    """Frame-weighted mean of each score over signals."""
    return {k: float(np.average([r[k] for r in rows], weights=weights)) for k in rows[0]}


def bad_inputs(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Signals that must come out unvoiced."""
    noise = rng.standard_normal(2 * SR).astype(np.float32)
    return {
        "white_noise": 0.3 * noise,
        "clipped_noise": np.clip(3 * noise, -1, 1),
        "dither": 1e-4 * noise,
        "zeros": np.zeros(2 * SR, np.float32),
    }


def run(quick: bool) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    registers = [90.0, 200.0] if quick else [90.0, 130.0, 200.0, 280.0]
    snrs: list[float | None] = [None, 10.0] if quick else [None, 20.0, 10.0]
    signals = [(f, s, synthetic(f, s, seed)) for seed, (f, s) in enumerate((f, s) for f in registers for s in snrs)]
    demo_files = sorted(DEMO.glob("*/*_03[0-9].flac"))
    demo = [load_audio(p, SR).numpy() for p in (demo_files[::10] if quick else demo_files[::5])[:8]]
    r: dict[str, Any] = {"machine": machine(), "load_average": load_average(), "quick": quick, "trackers": {}}
    demo_ref = [harvest(w, SR) for w in demo]
    for name, fn in TRACKERS.items():
        fn(signals[0][2][0], SR)  # warm-up
        start, start_cpu = time.perf_counter(), time.process_time()
        outs = [fn(x, SR) for _, _, (x, _, _) in signals]
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
        audio_s = sum(len(x) for _, _, (x, _, _) in signals) / SR
        by_snr = {}
        for snr in snrs:
            rows, weights = [], []
            for (f, s, (x, f0, v)), est in zip(signals, outs):
                if s == snr:
                    ref_f, ref_v, scored = truth_frames(f0, v)
                    rows.append(scores(est, (ref_f, ref_v), scored))
                    weights.append(len(ref_f))
            by_snr["clean" if snr is None else f"{snr:g}dB"] = pooled(rows, weights)
        demo_out = [fn(w, SR) for w in demo]
        agree = [scores(e, ref, np.ones(len(ref[0]), bool)) for e, ref in zip(demo_out, demo_ref)]
        r["trackers"][name] = {
            "x_real_time": audio_s / seconds,
            "x_real_time_cpu": audio_s / cpu_seconds,
            "synthetic": by_snr,
            "bad_input_voiced_fraction": {k: float(fn(w, SR)[1].mean()) for k, w in bad_inputs(rng).items()},
            "demo_voiced_fraction": float(np.mean(np.concatenate([v for _, v in demo_out]))),
            "demo_vs_harvest": pooled(agree, [len(a[0]) for a in demo_ref]),
        }
    return r


def table(r: dict[str, Any]) -> str:
    lines = [f"{'tracker':<15}{'xRT':>6}{'xRT/cpu':>8}  {'condition':<10}{'VDE':>7}{'false-v':>9}{'miss-v':>8}{'GPE':>7}{'cents':>7}"]
    for name, t in r["trackers"].items():
        for i, (cond, s) in enumerate(t["synthetic"].items()):
            head = f"{name:<15}{t['x_real_time']:>6.0f}{t['x_real_time_cpu']:>8.0f}" if i == 0 else " " * 29
            lines.append(f"{head}  {cond:<10}{s['vde']:>7.1%}{s['false_voiced']:>9.1%}{s['missed_voiced']:>8.1%}"
                         f"{s['gpe']:>7.1%}{s['fine_cents']:>7.1f}")
    lines.append("")
    lines.append(f"{'tracker':<15}{'noise':>7}{'clipped':>9}{'dither':>8}{'zeros':>7}   demo: voiced  "
                 f"VDE/harvest  GPE/harvest")
    for name, t in r["trackers"].items():
        b, d = t["bad_input_voiced_fraction"], t["demo_vs_harvest"]
        lines.append(f"{name:<15}{b['white_noise']:>7.1%}{b['clipped_noise']:>9.1%}{b['dither']:>8.1%}"
                     f"{b['zeros']:>7.1%}   {t['demo_voiced_fraction']:>12.1%}  {d['vde']:>11.1%}  {d['gpe']:>11.1%}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer signals (smoke run)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: benchmarks/results/...)")
    args = parser.parse_args()
    r = run(args.quick)
    print(table(r))
    suffix = "-quick" if args.quick else ""
    default = HERE / "results" / f"f0-trackers-{cpu_slug(r['machine']['cpu'])}-{r['machine']['date'][:10]}{suffix}.json"
    write_results(r, args.out or default)


if __name__ == "__main__":
    main()
