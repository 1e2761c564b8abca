"""Stage two on the demo, against issue 13's targets: training the CPU-sized prior straight from the demo corpus and
the shipped VQ-VAE (`audio-vqvae-train-prior vqvae=pretrained/demo-units data=demo`, its defaults: at most 10 minutes),
and sampling 3 s of speech, prior + WaveNet (faster than real time).

Training runs the app in a fresh process (unit extraction included) and reads the validation perplexity from its
best checkpoint. Sampling is timed in this process with the trained prior: the first call (it compiles the numba
kernel or loads it from numba's cache) and the median of the calls after it, each split into prior and WaveNet time;
then `audio-vqvae-generate --prior` once more in a fresh process, imports and model loading included.

    python benchmarks/stage_two.py              # the default prior run + sampling: about 5 minutes on 2 idle cores
    python benchmarks/stage_two.py --quick      # smoke run (every key, meaningless numbers)
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numba
import torch
from measure import cpu_slug, load_average, machine, write_results

from audio_vqvae.checkpoint import load_checkpoint
from audio_vqvae.model import VQVAE
from audio_vqvae.prior.model import UnitPrior
from audio_vqvae.synthesis import plan_jobs, sample_units, synthesize

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VQVAE_DIR = REPO / "pretrained" / "demo-units"
SPEAKER = "gb_f"
TRAIN_MINUTES_TARGET = 10.0


def train_prior(run_dir: Path, steps: int | None) -> dict[str, Any]:
    """The prior app with its defaults (or `steps` steps) in a fresh process -> wall minutes, steps, best validation."""
    cmd = [sys.executable, "-m", "audio_vqvae.cli.train_prior", f"vqvae={VQVAE_DIR}", "data=demo",
           f"data.root={REPO / 'datasets' / 'demo'}", f"run_dir={run_dir}"]
    if steps is not None:
        cmd += [f"trainer.max_steps={steps}", f"trainer.val_every={steps}", f"trainer.ckpt_every={steps}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    minutes = (time.perf_counter() - start) / 60
    if proc.returncode != 0:
        raise RuntimeError(f"audio-vqvae-train-prior failed:\n{proc.stderr[-3000:]}")
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    return {"minutes": minutes, "steps": best["config"]["trainer"]["max_steps"], "best_step": best["step"],
            "val_perplexity": best["metrics"]["perplexity"], "codebook_size": best["config"]["codebook_size"]}


def sample_once(prior: UnitPrior, model: VQVAE, seconds: float, seed: int) -> dict[str, float]:
    """One sample of `seconds`: prior and WaveNet wall seconds."""
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    units = sample_units(prior, model, SPEAKER, seconds, 1, 1.0, None, generator)
    mid = time.perf_counter()
    jobs = plan_jobs(model, units, dict.fromkeys(units, SPEAKER), [], Path("unused"))
    for _ in synthesize(model, jobs, generator=generator):
        pass
    end = time.perf_counter()
    return {"prior_s": mid - start, "wavenet_s": end - mid, "total_s": end - start}


def sampling(prior_path: Path, seconds: float, repeats: int) -> dict[str, Any]:
    """First call and the median of `repeats` later calls, with x real time = seconds of audio / wall seconds."""
    model, prior = VQVAE.from_pretrained(str(VQVAE_DIR)), UnitPrior.from_checkpoint(str(prior_path))
    first = sample_once(prior, model, seconds, seed=0)
    later = [sample_once(prior, model, seconds, seed=1 + i) for i in range(repeats)]
    median = {k: statistics.median(r[k] for r in later) for k in first}
    return {"seconds": seconds, "first": first | {"x_real_time": seconds / first["total_s"]},
            "median": median | {"x_real_time": seconds / median["total_s"]}}


def generate_cli(prior_path: Path, seconds: float, out_dir: Path) -> dict[str, float]:
    """`audio-vqvae-generate --prior` in a fresh process: wall seconds and x real time."""
    cmd = [sys.executable, "-m", "audio_vqvae.cli.generate", "-c", str(VQVAE_DIR), "-o", str(out_dir),
           "--prior", str(prior_path), "--speaker", SPEAKER, "--seconds", str(seconds)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"audio-vqvae-generate failed:\n{proc.stderr[-3000:]}")
    return {"wall_s": wall, "x_real_time": seconds / wall}


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    t, s = r["training"], r["sampling"]
    return [
        {"target": f"prior training <= {TRAIN_MINUTES_TARGET:g} min on this machine", "value": t["minutes"],
         "met": t["minutes"] <= TRAIN_MINUTES_TARGET},
        {"target": f"{s['seconds']:g} s sampled (prior + WaveNet) faster than real time", "value": s["median"]["x_real_time"],
         "met": s["median"]["x_real_time"] > 1},
    ]


def table(r: dict[str, Any]) -> str:
    t, s, c = r["training"], r["sampling"], r["cli"]
    m = r["machine"]
    header = f"{m['cpu']}, {m['cores']} cores, torch threads {m['torch_threads']}, load average before {r['load_average']:.2f}"
    training = (f"prior training (fresh process, extraction included): {t['minutes']:.2f} min for {t['steps']} steps; "
                f"best validation perplexity {t['val_perplexity']:.1f} of {t['codebook_size']} (step {t['best_step']})")
    lines = [header, "", training, "", f"sampling {s['seconds']:g} s        prior s   WaveNet s   total s   x real time"]
    for name in ("first", "median"):
        row = s[name]
        lines.append(f"  {name:<18}{row['prior_s']:9.2f}{row['wavenet_s']:12.2f}{row['total_s']:10.2f}"
                     f"{row['x_real_time']:14.2f}")
    lines += [f"  audio-vqvae-generate, fresh process: {c['wall_s']:.2f} s wall = {c['x_real_time']:.2f}x real time",
              "", "targets:"]
    lines += [f"  {'MET' if x['met'] else 'NOT MET':<8}{x['target']}: {x['value']:.2f}" for x in r["targets"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 prior steps, 0.2 s samples, 1 repeat")
    parser.add_argument("--threads", type=int, default=2, help="torch and numba threads while sampling (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed sampling calls after the first")
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/stage-two-<cpu>-<cores>c-<date>.json)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    seconds, repeats = (0.2, 1) if args.quick else (3.0, args.repeats)
    r: dict[str, Any] = {"machine": machine(), "load_average": load_average(), "quick": args.quick}
    with tempfile.TemporaryDirectory() as tmp:
        r["training"] = train_prior(Path(tmp) / "prior", 2 if args.quick else None)
        best = Path(tmp) / "prior" / "checkpoints" / "best.pt"
        r["sampling"] = sampling(best, seconds, repeats)
        r["cli"] = generate_cli(best, seconds, Path(tmp) / "wav")
    r["targets"] = targets(r)
    print(table(r))
    suffix = "-quick" if args.quick else ""
    default = HERE / "results" / f"stage-two-{cpu_slug(r['machine']['cpu'])}-{r['machine']['cores']}c-{r['machine']['date'][:10]}{suffix}.json"
    write_results(r, args.out or default)


if __name__ == "__main__":
    main()
