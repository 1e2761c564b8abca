"""Memory of unit extraction on long files: peak RSS must not grow with the file's length.

Writes speech-like noise as FLAC files of each length (default 10 and 60 minutes) to a temporary directory, then runs
`audio-vqvae-units` with peak normalisation on each file in its own process, as the app runs (retained freed memory)
and with glibc's default allocator, and reports that process's peak RSS (Linux VmHWM) and wall time, as a table and
as JSON in benchmarks/results/.

    python benchmarks/long_files.py                     # 10 and 60 min, `small` model: a few minutes on 2 cores
    python benchmarks/long_files.py --minutes 1 2       # smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from measure import cpu_slug, load_average, machine, own_peak_rss_mb, write_results
from models import SPEAKERS, build, model_config

from audio_vqvae.checkpoint import save_checkpoint

HERE = Path(__file__).resolve().parent
SAMPLE_RATE = 16000
BLOCK_SECONDS = 10
PEAK_NORMALIZE = 0.95
ALLOCATORS = ("retained", "default")  # as the console apps run (device.retain_freed_memory), glibc's defaults
TOLERANCE = 0.10  # target: the longest file's peak RSS within 10 % of the shortest's


def speech_like(seconds: int, seed: int) -> np.ndarray:
    """Noise with a syllable-rate (4 Hz) envelope and pauses, float32 [seconds * SAMPLE_RATE], peak below 0.5."""
    rng = np.random.default_rng(seed)
    t = np.arange(seconds * SAMPLE_RATE) / SAMPLE_RATE
    envelope = np.clip(np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6)), 0, None) * (rng.uniform() > 0.2)
    return (0.1 * envelope * rng.standard_normal(t.size)).clip(-0.45, 0.45).astype(np.float32)


def write_long_flac(path: Path, minutes: float) -> Path:
    """`minutes` of `speech_like` noise written block by block (bounded memory); the loudest sample (0.9) is in the
    last block, so peak normalisation needs the whole file."""
    n_blocks = max(1, round(minutes * 60 / BLOCK_SECONDS))
    with sf.SoundFile(path, "w", SAMPLE_RATE, 1, subtype="PCM_16", format="FLAC") as f:
        for i in range(n_blocks):
            block = speech_like(BLOCK_SECONDS, seed=i)
            if i == n_blocks - 1:
                block[len(block) // 2] = 0.9
            f.write(block)
    return path


def write_checkpoint(path: Path, model: str) -> Path:
    """A randomly initialised `model` whose run config asks for data.peak_normalize (as a trained one would)."""
    net = build(model)
    save_checkpoint(path, net.state_dict(), {"model": model_config(model), "data": {"peak_normalize": PEAK_NORMALIZE}},
                    list(SPEAKERS), step=0)
    return path


def child(ckpt: str, audio: str, out: str, allocator: str) -> dict[str, float]:
    """In this process: `audio-vqvae-units` on one file; its wall time and this process's peak RSS. allocator:
    "retained" as the apps run (`device.retain_freed_memory`), "default" = glibc's defaults."""
    from audio_vqvae import device
    from audio_vqvae.cli.units import main

    if allocator == "default":
        device.retain_freed_memory = lambda: False
    start = time.perf_counter()
    main(["-c", ckpt, "-o", out, "--device", "cpu", audio])
    return {"seconds": time.perf_counter() - start, "peak_rss_mb": own_peak_rss_mb()}


def measure(ckpt: Path, audio: Path, out: Path, allocator: str) -> dict[str, float]:
    """`child` in a fresh process (so each file's peak is its own)."""
    proc = subprocess.run([sys.executable, __file__, "--child", str(ckpt), str(audio), str(out), allocator], check=True,
                          capture_output=True, text=True, env=os.environ | {"TQDM_DISABLE": "1"})
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(minutes: list[float], model: str, workdir: Path) -> dict[str, Any]:
    """Each length: write the file, extract its units in a child process; rows + the target."""
    r: dict[str, Any] = {"machine": machine(), "load_average": load_average(), "model": model,
                         "peak_normalize": PEAK_NORMALIZE, "rows": []}
    ckpt = write_checkpoint(workdir / f"{model}.pt", model)
    for m in minutes:
        audio = write_long_flac(workdir / f"long-{m:g}min.flac", m)
        for allocator in ALLOCATORS:
            row = {"minutes": m, "allocator": allocator, "file_mb": audio.stat().st_size / 2**20}
            row |= measure(ckpt, audio, workdir / f"{m:g}-{allocator}.txt", allocator)
            row["x_real_time"] = m * 60 / row["seconds"]
            r["rows"].append(row)
        audio.unlink()
    r["targets"] = [_target(r["rows"], allocator) for allocator in ALLOCATORS]
    return r


def _target(rows: list[dict[str, Any]], allocator: str) -> dict[str, Any]:
    """Peak RSS growth from the shortest to the longest file, with one allocator."""
    peaks = [row["peak_rss_mb"] for row in rows if row["allocator"] == allocator]
    growth = peaks[-1] / peaks[0] - 1
    return {"name": f"{allocator} allocator: peak RSS of the longest file within {TOLERANCE:.0%} of the shortest's",
            "growth": growth, "met": growth <= TOLERANCE}


def table(r: dict[str, Any]) -> str:
    title = (f"unit extraction of long files ({r['model']} model, peak normalisation {r['peak_normalize']}, "
             f"load average {r['load_average']:.2f})")
    lines = [title, "  minutes  allocator  file MiB  peak RSS MiB  seconds  x real time"]
    lines += [f"  {row['minutes']:7g}  {row['allocator']:9}  {row['file_mb']:8.1f}  {row['peak_rss_mb']:12.1f}  "
              f"{row['seconds']:7.1f}  {row['x_real_time']:11.1f}" for row in r["rows"]]
    lines += [f"{'MET    ' if t['met'] else 'NOT MET'}  {t['name']}: growth {t['growth']:+.1%}" for t in r["targets"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[10, 60], help="file lengths (default 10 60)")
    parser.add_argument("--model", default="small", help="model config to extract with (default small)")
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/long-files-<cpu>-<date>.json)")
    parser.add_argument("--child", nargs=4, metavar=("CKPT", "AUDIO", "OUT", "ALLOCATOR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        r = run(args.minutes, args.model, Path(tmp))
    print(table(r))
    cpu = cpu_slug(r["machine"]["cpu"])
    write_results(r, args.out or HERE / "results" / f"long-files-{cpu}-{r['machine']['date'][:10]}.json")


if __name__ == "__main__":
    main()
